"""The one decision of what a human runs when an account's grant is dead or dying.

Every fix text that names a command (the alerts' ``action``, the rotation's
``fix`` log field, the re-authorization link in an alert) comes from
:func:`grant_fix`, so it names a command that works for THAT account:

- a provider that takes an authorization code, configured for it (an
  ``authorize_url`` where needed, and a redirect URI of its own or the
  console's): ``rotator authorize ACCOUNT``, and alerts carry a link;
- a refresh-token ``oauth2`` account without ``authorize_url``, or a Fax.Plus
  account without a redirect URI: ``rotator import ACCOUNT`` (a new refresh token);
- the ``password`` and ``client_credentials`` grants, BIFIT (password login) and
  FaxMAX (``rotator probe`` first): the credentials, then ``rotator refresh``;
- a Fax.Plus personal access token: a new token in its reference, and a reload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rotator.config.models import AccountSettings

__all__ = ["Fix", "grant_fix", "replace_pat"]


@dataclass(frozen=True, slots=True)
class Fix:
    #: the command (or steps) on its own, e.g. "rotator authorize acme-fax"
    action: str
    #: True when the fix is a re-authorization (alerts then carry a console link)
    reauthorize: bool = False


def replace_pat(account: str) -> str:
    return (
        f"create a new personal access token, put it where accounts.{account}.token points, "
        f"set accounts.{account}.expires_at and reload rotator"
    )


def grant_fix(account: str, settings: AccountSettings, *, console: bool = False) -> Fix:
    """What brings ``account``'s grant back; ``console``: server.console is on."""
    provider = settings.provider
    refresh = f"rotator refresh {account}"
    if provider == "faxplus-pat":
        return Fix(replace_pat(account))
    if provider == "bifit":
        return Fix(f"check accounts.{account}.username and password, then: {refresh}")
    if provider == "faxmax":
        return Fix(
            f"check what the vendor accepts with `rotator probe {account}`, fix the "
            f"credentials of accounts.{account}, then: {refresh}"
        )
    grant = getattr(settings, "grant", "refresh_token")
    if grant == "password":
        return Fix(f"check accounts.{account}.username and password, then: {refresh}")
    if grant == "client_credentials":
        return Fix(f"check accounts.{account}.client_id and client_secret, then: {refresh}")
    if _authorizable(account, settings, console=console):
        return Fix(f"rotator authorize {account}", reauthorize=True)
    if provider == "faxplus":
        return Fix(
            f"rotator import {account} (a new refresh token; or set "
            f"accounts.{account}.redirect_uri and use rotator authorize {account})"
        )
    if provider == "oauth2":
        return Fix(
            f"rotator import {account} (a new refresh token; or set "
            f"accounts.{account}.authorize_url and use rotator authorize {account})"
        )
    return Fix(f"rotator import {account} (a new refresh token)")


def _authorizable(account: str, settings: AccountSettings, *, console: bool) -> bool:
    from rotator.errors import ConfigError
    from rotator.providers.base import Authorizable
    from rotator.providers.registry import provider_class

    try:
        cls = provider_class(settings.provider)
    except ConfigError:
        return False
    if not isinstance(settings, cls.settings_model):
        return False  # bare AccountSettings (tests, tools): nothing to authorize with
    provider = cls(account, settings)
    if not isinstance(provider, Authorizable) or provider.authorize_problem() is not None:
        return False
    return console or provider.redirect_uri is not None
