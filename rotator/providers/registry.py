"""The provider registry: ``provider:`` names -> Provider classes, imported on first use.

It imports nothing from :mod:`rotator.config` and no vendor module: the
configuration asks it for a provider's settings model while it validates an
account, and the vendor modules (which import the configuration's value types)
load only then. A new provider is one ``register`` line here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rotator.registry import Registry

if TYPE_CHECKING:
    from rotator.providers.base import Provider

__all__ = ["PROVIDERS", "provider_class"]

PROVIDERS: Registry[type[Provider]] = Registry("provider")
PROVIDERS.register("oauth2", "rotator.providers.oauth2:OAuth2Provider")
PROVIDERS.register("faxplus", "rotator.providers.faxplus:FaxPlusProvider")
PROVIDERS.register("faxplus-pat", "rotator.providers.faxplus:FaxPlusPatProvider")
PROVIDERS.register("bifit", "rotator.providers.bifit:BifitProvider")
PROVIDERS.register("faxmax", "rotator.providers.faxmax.provider:FaxmaxProvider")


def provider_class(name: str, *, path: str = "provider") -> type[Provider]:
    """The class of provider ``name``; a ConfigError at ``path`` naming the known ones."""
    return PROVIDERS.get(name, path=path)
