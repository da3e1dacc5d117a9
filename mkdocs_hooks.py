"""MkDocs hooks of the docs site (mkdocs.yml ``hooks:``).

``CHANGELOG.md`` stays at the root of the repository, where release archives and
package indexes show it; the site serves the same file as ``changelog.md``, so
the docs link it like any page and ``--strict`` checks those links.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files


def on_files(files: Files, config: Any) -> Files:
    root = Path(config.config_file_path).parent
    text = (root / "CHANGELOG.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "changelog.md", content=text))
    return files
