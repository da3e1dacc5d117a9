"""The documentation site builds with ``mkdocs build --strict``.

Strict mode with mkdocs.yml's ``validation`` turns every warning into a failure:
a link to a page or an anchor that does not exist, a page in ``docs/`` that the
navigation leaves out, a navigation entry without its page. So a heading renamed
in one page, or a page added without a place in the site, fails the suite (and
CI, which runs the suite).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support.proc import ROOT


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # every page in docs/ became a page of the site
    pages = sorted(p.relative_to(ROOT / "docs") for p in (ROOT / "docs").rglob("*.md"))
    for page in pages:
        built = (
            site / page.with_suffix("") / "index.html"
            if page.stem != "index"
            else site / "index.html"
        )
        assert built.is_file(), f"docs/{page} was not built"


def test_the_readmes_links_reach_files_that_exist() -> None:
    # README.md is not part of the site, so mkdocs does not check it: its links into
    # docs/ (and to CHANGELOG.md) are checked here
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local, "README.md links nothing"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert missing == []
    # every page of the site is on the front door's map
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")}
    assert pages - {"docs/index.md"} <= set(local)
