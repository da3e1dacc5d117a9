"""The vendor examples in docs/vendors.md are valid configuration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from rotator.config import parse_config

VENDORS = Path(__file__).resolve().parents[2] / "docs" / "vendors.md"


def vendor_examples() -> list[str]:
    section = VENDORS.read_text(encoding="utf-8")
    return re.findall(r"```yaml\n(.*?)```", section, flags=re.S)


def test_there_is_an_example_per_vendor() -> None:
    providers = {
        account["provider"]
        for example in vendor_examples()
        for account in yaml.safe_load(example)["accounts"].values()
    }
    assert providers == {"faxplus", "faxplus-pat", "bifit", "faxmax"}


@pytest.mark.parametrize("example", vendor_examples())
def test_example_is_valid(example: str, tmp_path: Path) -> None:
    stores = {
        "stores": {
            "files": {"type": "file", "directory": str(tmp_path / "files")},
            "vault": {"type": "file", "directory": str(tmp_path / "vault")},
        },
        "defaults": {"state": {"store": "files"}},
    }
    config = parse_config(yaml.safe_dump(stores) + example)
    assert len(config.accounts) == 1
