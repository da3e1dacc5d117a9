"""The provider registry (rotator/providers/registry.py): names -> Provider classes.

Every registered class is checked against the Provider protocol member by
member (the protocol is not runtime-checkable: it has a ClassVar and a
property), so a new provider that misses a method fails here, not at its first
rotation.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from pydantic import BaseModel

from rotator.config.models import AccountSettings
from rotator.errors import ConfigError
from rotator.providers.base import Provider
from rotator.providers.registry import PROVIDERS, provider_class

#: what a Provider has, read from the protocol itself
_ANNOTATED = sorted(Provider.__annotations__)
_METHODS = sorted(
    name
    for name, member in vars(Provider).items()
    if (callable(member) or isinstance(member, property))
    and (not name.startswith("_") or name == "__init__")
)
_LOADED = PROVIDERS.load_all()


def test_the_protocol_is_read_whole() -> None:
    # a guard on the reading above: if it found nothing, every check below would pass
    assert _ANNOTATED == ["name", "settings_model"]
    assert _METHODS == ["__init__", "consumer_view", "needs_seed", "refresh"]


def test_every_provider_name_is_registered() -> None:
    assert PROVIDERS.names() == ["bifit", "faxmax", "faxplus", "faxplus-pat", "oauth2"]


@pytest.mark.parametrize("name", sorted(_LOADED))
def test_every_registered_class_satisfies_the_protocol(name: str) -> None:
    cls = _LOADED[name]
    assert cls.name == name  # the name a user writes is the one the class answers to
    assert isinstance(cls.settings_model, type)
    assert issubclass(cls.settings_model, AccountSettings)
    assert issubclass(cls.settings_model, BaseModel)
    for method in _METHODS:
        expected = getattr(Provider, method)
        actual = inspect.getattr_static(cls, method)
        if isinstance(expected, property):
            assert isinstance(actual, property), (name, method)
            continue
        assert callable(actual), (name, method)
        wanted = list(inspect.signature(expected).parameters)
        got = list(inspect.signature(actual).parameters)
        assert got == wanted, (name, method, got)


def test_a_name_given_twice_is_refused_and_the_first_stays() -> None:
    with pytest.raises(ValueError, match="the provider 'oauth2' is already registered"):
        PROVIDERS.register("oauth2", "tests.elsewhere:Other")
    assert provider_class("oauth2") is _LOADED["oauth2"]


@pytest.mark.parametrize(
    ("typo", "closest"), [("oauth", "oauth2"), ("faxplus_pat", "faxplus-pat"), ("bfit", "bifit")]
)
def test_a_typo_names_the_valid_ones_and_the_closest(typo: str, closest: str) -> None:
    with pytest.raises(ConfigError) as caught:
        provider_class(typo, path="accounts.a.provider")
    assert str(caught.value) == (
        f"accounts.a.provider: {typo!r} is not a known provider "
        f"(known: bifit, faxmax, faxplus, faxplus-pat, oauth2); did you mean {closest!r}?"
    )


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(out.stdout.split())


VENDOR_MODULES = {
    "rotator.providers.oauth2",
    "rotator.providers.faxplus",
    "rotator.providers.bifit",
    "rotator.providers.faxmax.provider",
    "httpx",
    "hvac",
    "boto3",
}


def test_the_configuration_imports_no_vendor_module() -> None:
    loaded = _modules_after("import rotator.config.models; import rotator.config")
    assert loaded & VENDOR_MODULES == set()


def test_the_provider_base_and_registry_do_not_import_the_configuration() -> None:
    loaded = _modules_after("import rotator.providers.base, rotator.providers.registry")
    assert not {m for m in loaded if m.startswith("rotator.config")}
    assert loaded & VENDOR_MODULES == set()
