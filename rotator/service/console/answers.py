"""The console's answers: small server-rendered HTML pages with strict headers.

Every console answer (pages and redirects) carries the same security headers:
nothing is cached (``no-store``: a page may name an account's state), nothing
is loaded or framed (CSP ``default-src 'none'``, ``frame-ancestors 'none'``),
and no Referer leaves with a navigation (the signed link must not reach the
vendor in a header). Pages are plain text in HTML: every value is escaped.
"""

from __future__ import annotations

import html

__all__ = ["SECURITY_HEADERS", "Answer", "page", "redirect"]

#: (status, headers, body): what a console route answers
Answer = tuple[int, dict[str, str], bytes]

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}

_STYLE = "body{font-family:sans-serif;max-width:40em;margin:3em auto;line-height:1.5}"


def page(status: int, title: str, lines: list[str]) -> Answer:
    """A plain page: a title and paragraphs (escaped here)."""
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )
    headers = {"Content-Type": "text/html; charset=utf-8", **SECURITY_HEADERS}
    return status, headers, text.encode("utf-8")


def redirect(location: str) -> Answer:
    """A 302 to ``location`` (the vendor's authorization page)."""
    status, headers, body = page(302, "Redirecting", ["Continue at the vendor's sign-in page."])
    return status, {**headers, "Location": location}, body
