"""The authorization-code half shared by the providers that can be authorized.

:class:`CodeFlow` is mixed into ``faxplus`` and ``oauth2`` so that both build the
authorization URL the same way (RFC 6749 4.1.1, with RFC 7636 S256 where the
provider supports it) and say alike what their settings lack; each provider
keeps its own code exchange, because the vendors differ there (Fax.Plus wants
the parameters in the query string with HTTP Basic, and its 30-day rule).

Why not Authlib's client: the URL is one ``urlencode`` and S256 is three lines
(:func:`rotator.providers.base.pkce_challenge`); Authlib's token call cannot put
the parameters in a POST's query string as Fax.Plus documents, so the exchange
would stay ours anyway, and a dependency for the URL alone is not worth it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

__all__ = ["CodeFlow"]


class CodeFlow:
    """Mixin: ``supports_pkce``, ``redirect_uri``, ``authorize_problem``, ``authorization_url``.

    The settings must have ``client_id``, ``authorize_url`` and ``redirect_uri``.
    """

    account: str
    settings: Any

    def _pkce(self) -> bool:
        return False

    def _authorize_params(self) -> dict[str, str]:
        return {}

    @property
    def supports_pkce(self) -> bool:
        return self._pkce()

    @property
    def redirect_uri(self) -> str | None:
        uri = getattr(self.settings, "redirect_uri", None)
        return str(uri) if uri else None

    def authorize_problem(self) -> str | None:
        if not getattr(self.settings, "authorize_url", None):
            return f"accounts.{self.account}.authorize_url is not set"
        if not getattr(self.settings, "client_id", None):
            return f"accounts.{self.account}.client_id is not set"
        return None

    def authorization_url(self, state: str, redirect_uri: str, code_challenge: str | None) -> str:
        params = {
            "response_type": "code",
            "client_id": str(self.settings.client_id),
            "redirect_uri": redirect_uri,
            **self._authorize_params(),
            "state": state,
        }
        if code_challenge is not None:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        url = str(self.settings.authorize_url)
        return url + ("&" if "?" in url else "?") + urlencode(params)
