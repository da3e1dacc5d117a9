"""The store registry: names refused twice, typos answered with the valid names,
test overrides, lazy imports, and every registered class held to SecretStore
(here at run time, signature by signature; in rotator/backends/registry.py by mypy)."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from rotator.backends import registry
from rotator.backends.base import (
    Record,
    SecretStore,
    Validation,
    ValidationStatus,
    Version,
    WriteResult,
)
from rotator.backends.registry import STORES, open_store
from rotator.config.models import FileStoreSettings
from rotator.errors import ConfigError
from rotator.registry import Registry

#: the members of the protocol a store class must have (ClassVar / attributes aside)
PROTOCOL_METHODS = ("read", "write", "delete", "validate", "close")


class Settings:
    def __init__(self, type: str) -> None:
        self.type = type


class MemoryStore:
    """A stand-in store for the override test."""

    kind: ClassVar[str] = "memory"

    def __init__(self, name: str, settings: Any) -> None:
        self.name = name
        self.settings = settings

    def read(self, path: str, *, fmt: str = "json") -> Record | None:
        return None

    def write(
        self,
        path: str,
        data: Mapping[str, str],
        *,
        expected_version: Version | None,
        fmt: str = "json",
        adopt: bool = False,
    ) -> WriteResult:
        return WriteResult(1, changed=True)

    def delete(self, path: str) -> None:
        return None

    def validate(self, probe_path: str | None = None) -> Validation:
        return Validation(ValidationStatus.READY, "in memory")

    def close(self) -> None:
        return None


def test_the_three_store_types_are_registered() -> None:
    assert STORES.names() == ["aws", "file", "vault"]


def test_a_type_registered_twice_is_refused() -> None:
    stores: Registry[Any] = Registry("store type")
    stores.register("vault", "rotator.backends.vault.store:VaultStore")
    with pytest.raises(ValueError, match="'vault' is already registered"):
        stores.register("vault", "somewhere.else:OtherVault")
    with pytest.raises(ValueError, match="already registered"):
        STORES.register("file", "rotator.backends.file:FileStore")
    assert STORES.get("file").__name__ == "FileStore"


def test_a_typo_names_the_valid_types_and_the_path() -> None:
    with pytest.raises(ConfigError) as caught:
        open_store("secrets", Settings("vaul"))
    message = str(caught.value)
    assert "stores.secrets.type" in message
    assert "known: aws, file, vault" in message
    assert "did you mean 'vault'" in message


def test_open_store_builds_the_registered_class(tmp_path: Path) -> None:
    settings = FileStoreSettings(type="file", directory=tmp_path / "store")
    store = registry.open_store("files", settings)
    try:
        assert type(store).__name__ == "FileStore" and store.name == "files"
        assert store.write("state/x", {"a": "b"}, expected_version=None).changed
    finally:
        store.close()


def test_an_override_answers_inside_the_block_only() -> None:
    with registry.override("vault", MemoryStore):
        store = open_store("vault", Settings("vault"))
        assert isinstance(store, MemoryStore) and store.name == "vault"
        with registry.override("memory", MemoryStore):  # a new type, for the block
            assert isinstance(open_store("m", Settings("memory")), MemoryStore)
        with pytest.raises(ConfigError, match="'memory' is not a known store type"):
            open_store("m", Settings("memory"))
    assert STORES.get("vault").__name__ == "VaultStore"


def _params(function: Any) -> list[tuple[str, Any, Any, Any]]:
    signature = inspect.signature(function)
    return [
        (p.name, p.kind, p.default, p.annotation)
        for p in signature.parameters.values()
        if p.name != "self"
    ]


@pytest.mark.parametrize("kind", STORES.names())
def test_every_registered_class_satisfies_the_protocol(kind: str) -> None:
    """Structurally: the same methods, parameter names, kinds and defaults as
    SecretStore; a ``kind`` class attribute; a ``(name, settings)`` constructor."""
    store_class = STORES.get(kind)
    assert isinstance(store_class, type)
    assert store_class.kind == kind
    for method in PROTOCOL_METHODS:
        implemented = getattr(store_class, method, None)
        assert callable(implemented), f"{store_class.__name__} lacks {method}"
        assert _params(implemented) == _params(getattr(SecretStore, method)), (
            f"{store_class.__name__}.{method} differs from SecretStore.{method}"
        )
    constructor = list(inspect.signature(store_class).parameters.values())
    assert [p.name for p in constructor[:2]] == ["name", "settings"]
    assert all(p.default is not inspect.Parameter.empty for p in constructor[2:])


def test_mypy_checks_every_registered_class() -> None:
    """Each registered class's module assigns the class to a StoreFactory under
    TYPE_CHECKING, which mypy (strict, run on every commit) verifies against the
    SecretStore protocol: every registered type must have that line."""
    for kind in STORES.names():
        store_class = STORES.get(kind)
        source = Path(inspect.getfile(store_class)).read_text(encoding="utf-8")
        checked = [
            node.value.id
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "_CONFORMS"
            and isinstance(node.annotation, ast.Name)
            and node.annotation.id == "StoreFactory"
            and isinstance(node.value, ast.Name)
        ]
        assert checked == [store_class.__name__], kind


def test_opening_the_registry_imports_no_sdk() -> None:
    """hvac and boto3 load when a store of their type is opened, never before."""
    code = (
        "import sys\n"
        "import rotator.backends.registry, rotator.backends.base, rotator.cli\n"
        "heavy = {'hvac', 'boto3', 'botocore', 'requests'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert answer.stdout.strip() == "[]"
