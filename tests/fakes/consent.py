"""The vendors' consent step, as the emulators serve it and a test's browser clicks it.

Both authorization emulators (Fax.Plus ``/login``, the generic ``/authorize``)
answer the authorization request with a plain HTML page: the request's
parameters as hidden fields and two buttons, Allow and Deny. Posting the form
redirects to the ``redirect_uri`` with a code (or ``error=access_denied``) and
the ``state``. :func:`click` is what a browser does with that page, for tests
that drive the flow with httpx (the real-browser tests click the button).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from urllib.parse import urljoin

import httpx

__all__ = ["click", "consent_page"]

_INPUT = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')
_FORM = re.compile(r'<form method="post" action="([^"]*)">')


def consent_page(action: str, fields: Mapping[str, str], app: str = "rotator") -> bytes:
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in fields.items()
    )
    return (
        "<!doctype html><html><head><title>Sign in</title></head><body>"
        f"<h1>Allow {html.escape(app)} to access your account?</h1>"
        f'<form method="post" action="{html.escape(action)}">{hidden}'
        '<button type="submit" name="decision" value="allow" id="allow">Allow</button>'
        '<button type="submit" name="decision" value="deny" id="deny">Deny</button>'
        "</form></body></html>"
    ).encode()


def click(
    browser: httpx.Client, url: str, decision: str = "allow", *, follow: bool = True
) -> httpx.Response:
    """Open ``url`` (following redirects to the consent page), press ``decision``.

    ``follow``: follow the vendor's redirect back (to the callback) as a browser does.
    """
    page = browser.get(url, follow_redirects=True)
    form = _FORM.search(page.text)
    if page.status_code != 200 or form is None:
        where = url.split("?", maxsplit=1)[0]
        raise AssertionError(f"no consent page at {where}: {page.status_code}")
    fields = {html.unescape(k): html.unescape(v) for k, v in _INPUT.findall(page.text)}
    target = urljoin(str(page.url), html.unescape(form.group(1)))
    answer = browser.post(target, data={**fields, "decision": decision}, follow_redirects=False)
    if follow and answer.status_code in (301, 302, 303, 307):
        return browser.get(answer.headers["location"], follow_redirects=True)
    return answer
