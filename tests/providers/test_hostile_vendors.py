"""Every provider against a hostile vendor: a TokenSet of printable ASCII, or a clean error.

One scripted vendor (tests/fakes/vendorhttp.ScriptedVendor, real HTTP) answers
each request with what hypothesis draws: arbitrary unicode, control characters,
lone surrogates (JSON ``\\ud800`` escapes, how they arrive in practice), tiny,
huge and non-finite ``expires_in``, and error texts that echo the account's own
secrets or the request itself. Whatever the answer, every provider either
returns a TokenSet whose every string is printable ASCII and whose lifetime is
at least ``min_lifetime``, or raises a typed ProviderError whose message holds
no secret and no control character. The error is also logged, so the
suite-wide leak check (tests/support/leakcheck.py) scans it for the secrets.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
import structlog
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.config import parse_config
from rotator.errors import ProviderError
from rotator.providers.bifit import hash_password
from rotator.providers.registry import provider_class
from rotator.secrets import Secret
from rotator.state import AccountState
from rotator.tokens import TokenSet
from tests.fakes.vendorhttp import Reply, Request, ScriptedVendor, running
from tests.support import leakcheck

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
_log = structlog.get_logger("rotator.tests.hostile")


def _secret(kind: str) -> str:
    # reserved characters on purpose: the vendor may echo them URL-encoded
    return leakcheck.register(f"{kind}-{secrets.token_urlsafe(18)}+/:%", f"hostile {kind}")


REFRESH = _secret("rt")
# shaped like an OAuth error code: an "error" holding it must not become the code
ACCESS = leakcheck.register(f"at_{secrets.token_hex(12)}", "hostile at")
CLIENT_SECRET = _secret("cs")
PASSWORD = _secret("pw")
API_CODE = _secret("code")
API_PASSWORD = _secret("apipw")
PAT = _secret("pat")
HASHED = leakcheck.register(hash_password(Secret(PASSWORD)), "hostile hashed password")
SECRETS = (REFRESH, ACCESS, CLIENT_SECRET, PASSWORD, API_CODE, API_PASSWORD, PAT, HASHED)


@dataclass(frozen=True)
class Case:
    """One provider and grant, with the state it starts from."""

    name: str
    account: dict[str, Any]
    state: AccountState
    known: tuple[str, ...]  # the secrets this account knows (and so can scrub)
    rpc: bool = False  # FaxMAX speaks JSON-RPC 2.0


def _current() -> AccountState:
    return AccountState(
        "acct",
        access_token=Secret(ACCESS),
        refresh_token=Secret(REFRESH),
        issued_at=NOW - timedelta(minutes=5),
        expires_at=NOW + timedelta(minutes=30),
    )


def _cases(url: str, secret_dir: Path) -> list[Case]:
    ref = {name: f"file:{secret_dir / name}" for name in _SECRET_FILES}
    faxmax = {"provider": "faxmax", "domain": "fax.example", "endpoint": url, "username": "u1"}
    return [
        Case(
            "oauth2-refresh",
            {"provider": "oauth2", "token_url": url, "client_id": "app"}
            | {"client_secret": ref["cs"]},
            _current(),
            (REFRESH, ACCESS, CLIENT_SECRET),
        ),
        Case(
            "oauth2-password",
            {"provider": "oauth2", "token_url": url, "client_id": "app", "grant": "password"}
            | {"client_secret": ref["cs"], "client_auth": "post"}
            | {"username": "user", "password": ref["pw"]},
            AccountState("acct"),
            (CLIENT_SECRET, PASSWORD),
        ),
        Case(
            "faxplus",
            {"provider": "faxplus", "token_url": url, "client_id": "APIK-x"}
            | {"enhanced_security": False}
            | {"client_secret": ref["cs"]},
            _current(),
            (REFRESH, ACCESS, CLIENT_SECRET),
        ),
        Case(
            "faxplus-pat",
            {"provider": "faxplus-pat", "api_base": url, "token": ref["pat"]}
            | {"expires_at": "2027-06-01"},
            AccountState("acct"),
            (PAT,),
        ),
        Case(
            "bifit-refresh-relogin",
            {"provider": "bifit", "token_url": url, "username": "79990001122"}
            | {"password": ref["pw"], "client_secret": ref["cs"]},
            _current(),
            (REFRESH, ACCESS, CLIENT_SECRET, PASSWORD, HASHED),
        ),
        Case(
            "bifit-password",
            {"provider": "bifit", "token_url": url, "username": "79990001122"}
            | {"password": ref["pw"]},
            AccountState("acct"),
            (PASSWORD, HASHED),
        ),
        Case(
            "faxmax-keepalive",
            faxmax | {"password": ref["pw"]},
            _current(),
            (ACCESS, REFRESH, PASSWORD),
            rpc=True,
        ),
        Case(
            "faxmax-api-code",
            faxmax
            | {"api_code": ref["code"], "api_password": ref["apipw"]}
            | {"remote_ip": "192.0.2.7"},
            AccountState("acct"),
            (API_CODE, API_PASSWORD),
            rpc=True,
        ),
    ]


_SECRET_FILES = {
    "cs": CLIENT_SECRET,
    "pw": PASSWORD,
    "code": API_CODE,
    "apipw": API_PASSWORD,
    "pat": PAT,
}


@dataclass
class World:
    vendor: ScriptedVendor
    client: httpx.Client
    cases: dict[str, tuple[Case, Any]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("hostile-secrets")
    for name, value in _SECRET_FILES.items():
        path = directory / name
        path.write_text(value + "\n")
        os.chmod(path, 0o600)
    with running(ScriptedVendor()) as vendor, httpx.Client() as client:
        built: dict[str, tuple[Case, Any]] = {}
        for case in _cases(vendor.base_url + "/token", directory):
            raw = {
                "stores": {"files": {"type": "file", "directory": str(directory / "store")}},
                "accounts": {"acct": {**case.account, "sinks": [{"store": "files", "path": "a"}]}},
            }
            account = parse_config(yaml.safe_dump(raw)).accounts["acct"]
            built[case.name] = (case, provider_class(account.provider)("acct", account))
        yield World(vendor, client, built)


# -- what a hostile vendor says ------------------------------------------------------------

_NASTY = ["\n", "\r\n", "\x00", "\x1b[2J", "\x1b]0;x\x07", "\x7f", "\x85", "\x9b", "\u2028"]
_chars = st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from(["\ud800", "\udfff", "\ud83d", "é", " ", "\x00", "\x1b", "\x9b"]),
)
_hostile_text = st.lists(
    st.one_of(st.text(_chars, max_size=8), st.sampled_from(_NASTY)), max_size=5
).map("".join)


def _fixed(*values: str) -> st.SearchStrategy[str]:
    """One of *values*, which the strategy's repr (in a failure report) does not show."""
    return st.integers(0, len(values) - 1).map(lambda i: values[i])


@dataclass(frozen=True)
class Echo:
    """Text echoing one value the request carried, chosen when the request comes."""

    template: str
    pick: int
    encode: Callable[[str], str]

    def render(self, request: Request) -> str:
        carried = [value for _, value in (*request.form, *request.query) if value]
        carried.append(request.headers.get("authorization", ""))
        carried.append(request.body.decode("utf-8", "replace"))
        return self.template.format(self.encode(carried[self.pick % len(carried)]))


_TEMPLATES = st.sampled_from(
    [
        "The refresh token {} is invalid",
        "Token [{}]",
        "grant {}: revoked",
        "with secret {}",
        "{}",
        "LD_PRELOAD=/tmp/x.so\n{}",
    ]
)
_ENCODINGS = st.sampled_from([str, lambda v: quote(v, safe=""), quote_plus])
_seconds = st.one_of(
    st.sampled_from([0, 1e-300, -1, 1, 59, 59.999, 60, 3600, 10**400, "1e-300", "NaN", " 600 "]),
    st.integers(-10, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),  # no expires_in: max_lifetime
)
_ascii = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=30)


def _answers(known: tuple[str, ...], rpc: bool, mode: str) -> st.SearchStrategy[dict[str, Any]]:
    """One answer of a vendor that knows (and echoes) the account's secrets.

    ``mode``: ``tokens`` (success-shaped answers), ``errors`` (error answers
    that echo secrets) or ``any``.
    """
    echo_known = st.builds(
        lambda template, value, encode: template.format(encode(value)),
        _TEMPLATES,
        _fixed(*known),
        _ENCODINGS,
    )
    # a vendor's text: arbitrary, an echo of a secret the account knows, or of the request
    text = st.one_of(
        _hostile_text,
        echo_known,
        st.builds(Echo, _TEMPLATES, st.integers(0, 20), _ENCODINGS),
        _fixed(*(value + "\n" + "LD_PRELOAD=/x" for value in known)),
    )
    token = st.one_of(_ascii, text, _fixed("AT-\ud800x", *known))
    if mode == "errors":
        text = st.one_of(echo_known, st.builds(Echo, _TEMPLATES, st.integers(0, 20), _ENCODINGS))
    if rpc:
        code = st.sampled_from([-32603, -32601, 77, 0])
        error = st.fixed_dictionaries(
            {"error": st.fixed_dictionaries({"code": code, "message": text})}
        )
        result = st.fixed_dictionaries(
            {"result": st.fixed_dictionaries({"token": st.one_of(token, st.none(), st.just(""))})}
        )
        return {"errors": error, "tokens": result}.get(mode, st.one_of(error, result))
    success = st.fixed_dictionaries(
        {"access_token": token, "expires_in": _seconds},
        optional={
            "token_type": st.one_of(text, st.sampled_from(["Bearer", "bearer", "MAC"])),
            "refresh_token": token,
            "refresh_token_expires_in": _seconds,
            "scope": st.one_of(text, _ascii, st.just("read write")),
            "user_id": st.one_of(text, _ascii, st.integers()),
            "error": st.one_of(st.none(), st.just("")),
        },
    )
    failure = st.fixed_dictionaries(
        {
            "error": st.one_of(st.just("invalid_grant"), text, st.integers(), _fixed(*known)),
            "error_description": text,
        },
        optional={"message": text},
    )
    # a well-formed answer with one field drawn hostile: each field's check is
    # needed, or a hostile value reaches the TokenSet and the property fails
    fields = {
        "access_token": token,
        "refresh_token": token,
        "token_type": st.one_of(text, st.sampled_from(["Bearer", "bearer", "MAC"])),
        "expires_in": _seconds,
        "refresh_token_expires_in": _seconds,
        "scope": st.one_of(text, _ascii),
        "user_id": st.one_of(text, _ascii, st.integers()),
    }
    valid = {"access_token": "at-ok", "token_type": "Bearer", "expires_in": 3600}
    valid |= {"refresh_token": "rt-ok", "scope": "a b", "user_id": "42"}
    one_bad = st.sampled_from(sorted(fields)).flatmap(
        lambda field: fields[field].map(lambda value: valid | {field: value})
    )
    tokens = st.one_of(success, one_bad)
    return {"errors": failure, "tokens": tokens}.get(mode, st.one_of(tokens, failure))


def _render(value: Any, request: Request) -> Any:
    if isinstance(value, Echo):
        return value.render(request)
    if isinstance(value, dict):
        return {key: _render(item, request) for key, item in value.items()}
    return value


_STATUSES = {
    "any": [200, 200, 200, 400, 401, 403, 429, 500],
    "tokens": [200],
    "errors": [200, 400, 401, 403],
}


def _script(data: st.DataObject, case: Case, mode: str) -> Callable[[Request], Reply]:
    """A vendor answering each request with the next hostile answer drawn here.

    Everything is drawn before the first request, in the test's thread; an
    answer's echoes are filled in from the request it answers.
    """
    rpc = case.rpc
    status = data.draw(st.sampled_from(_STATUSES[mode]), "status")
    answers = data.draw(st.lists(_answers(case.known, rpc, mode), min_size=3, max_size=3))
    served = iter(answers)

    def script(request: Request) -> Reply:
        body = _render(next(served, answers[-1]), request)
        if rpc:
            try:
                rpc_id = json.loads(request.form_dict.get("data") or request.body)["id"]
            except (ValueError, KeyError, TypeError):
                rpc_id = None
            body = {"jsonrpc": "2.0", **body, "id": rpc_id}
        raw = json.dumps(body, allow_nan=True).encode()  # ensure_ascii: "\ud800" escapes
        return Reply(status, raw, "application/json")

    return script


# -- the property ------------------------------------------------------------------------

_CONTROL = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))} | {"\u2028", "\u2029"}


def _assert_clean_error(error: ProviderError, known: tuple[str, ...]) -> None:
    message = str(error)
    message.encode("utf-8")  # no lone surrogate: the state write would fail on it
    for value in known:
        assert value not in message
        assert quote(value, safe="") not in message
    assert not _CONTROL & set(message), "a control character in an error message"
    assert error.code.isascii() and error.code.isprintable()
    assert all(value not in error.code for value in known)
    # as rotation logs it: the suite-wide leak check reads this output too
    _log.warning("rotation failed", error=message, error_code=error.code)


def _assert_clean_tokens(tokens: TokenSet, floor: timedelta) -> None:
    strings = [tokens.access_token.reveal(), tokens.token_type, *tokens.extra.values()]
    if tokens.refresh_token is not None:
        strings.append(tokens.refresh_token.reveal())
    if tokens.scope is not None:
        strings.append(tokens.scope)
    for text in strings:
        assert text.isascii() and text.isprintable(), "a token field that is not printable ASCII"
    assert tokens.expires_at - tokens.issued_at >= floor


_NAMES = [
    "oauth2-refresh",
    "oauth2-password",
    "faxplus",
    "faxplus-pat",
    "bifit-refresh-relogin",
    "bifit-password",
    "faxmax-keepalive",
    "faxmax-api-code",
]
_SETTINGS = {"deadline": None, "suppress_health_check": list(HealthCheck)}


def _check(world: World, name: str, mode: str, data: st.DataObject) -> None:
    case, provider = world.cases[name]
    world.vendor.script = _script(data, case, mode)
    try:
        tokens = provider.refresh(case.state, world.client, NOW)
    except ProviderError as error:
        _assert_clean_error(error, case.known)
        return
    _assert_clean_tokens(tokens, provider.settings.min_lifetime)


@pytest.mark.parametrize("name", _NAMES)
@settings(max_examples=60, **_SETTINGS)
@given(data=st.data())
def test_any_answer_gives_a_clean_tokenset_or_a_clean_error(
    world: World, name: str, data: st.DataObject
) -> None:
    _check(world, name, "any", data)


@pytest.mark.parametrize("name", _NAMES)
@settings(max_examples=150, **_SETTINGS)
@given(data=st.data())
def test_no_hostile_field_reaches_a_tokenset(world: World, name: str, data: st.DataObject) -> None:
    _check(world, name, "tokens", data)


@pytest.mark.parametrize("name", _NAMES)
@settings(max_examples=80, **_SETTINGS)
@given(data=st.data())
def test_no_echoed_secret_reaches_an_error(world: World, name: str, data: st.DataObject) -> None:
    _check(world, name, "errors", data)
