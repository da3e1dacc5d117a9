"""A hostile configuration file never crashes ``check`` and never kills a running daemon.

Every class of the hardening issue, in-process through ``load_config`` (what the
daemon's SIGHUP reload calls) and through ``rotator check`` in a subprocess:
only :class:`ConfigError` escapes, its message starts with the key path, stays
short, and never quotes a password. Then hypothesis throws the same classes at
random places of a valid file.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.config import Config, load_config, parse_config
from rotator.config.loading import INTERNAL, MAX_FILE_BYTES
from rotator.errors import ConfigError
from tests.support import leakcheck
from tests.support.proc import run_rotator

#: a refusal is a few lines at most, whatever the file holds
MAX_MESSAGE = 4096
PASSWORD = leakcheck.register("Pa55w0rd-hostile-config", "password in a token_url")

# Two stores (a file store keeps the state) and one account; the cases replace
# the @KEY@ placeholders (or append a key to the account) with raw YAML text.
TEMPLATE = """\
server: {workers: @WORKERS@}
stores:
  files: {type: file, directory: /tmp/rotator-hostile-store}
  vault:
    {type: vault, url: @VAULT_URL@, prefix: @PREFIX@, auth: {method: token, token: @VAULT_TOKEN@}}
defaults: {state: {store: files, path: @STATE_PATH@}}
accounts:
  @NAME@:
    provider: oauth2
    token_url: @TOKEN_URL@
    client_id: svc
    client_secret: @CLIENT_SECRET@
    timeout: @TIMEOUT@
    lease_ttl: @LEASE_TTL@
    extra_params: @EXTRA@
    sinks: [{store: files, path: @SINK_FILE@}, {store: vault, path: @SINK_VAULT@}]
"""
GOOD = {
    "VAULT_TOKEN": "env:T",
    "CLIENT_SECRET": "env:IDP_SECRET",
    "WORKERS": "4",
    "VAULT_URL": "https://vault:8200",
    "PREFIX": "rotator",
    "STATE_PATH": "state/idp-api",
    "NAME": "idp-api",
    "TOKEN_URL": "https://idp.example/oauth/token",
    "TIMEOUT": "30s",
    "LEASE_TTL": "2m",
    "EXTRA": "{}",
    "SINK_FILE": "idp-api.json",
    "SINK_VAULT": "apps/idp-api",
}
#: the key path each placeholder sits at
WHERE = {
    "VAULT_TOKEN": "stores.vault.auth.token",
    "CLIENT_SECRET": "accounts.idp-api.client_secret",
    "WORKERS": "server.workers",
    "VAULT_URL": "stores.vault.url",
    "PREFIX": "stores.vault.prefix",
    "STATE_PATH": "accounts.idp-api.state.path",
    "NAME": "accounts.",
    "TOKEN_URL": "accounts.idp-api.token_url",
    "TIMEOUT": "accounts.idp-api.timeout",
    "LEASE_TTL": "accounts.idp-api.lease_ttl",
    "EXTRA": "accounts.idp-api.extra_params",
    "SINK_FILE": "accounts.idp-api.sinks[0].path",
    "SINK_VAULT": "accounts.idp-api.sinks[1].path",
}


def render(**hostile: str) -> str:
    text = TEMPLATE
    for key, value in {**GOOD, **hostile}.items():
        text = text.replace(f"@{key}@", value)
    return text


def q(text: str) -> str:
    """A YAML double-quoted scalar (JSON's escapes are YAML's)."""
    return json.dumps(text)


def laughs(depth: int, width: int = 9) -> str:
    """A flow sequence of anchors, each level ``width`` aliases of the one before."""
    levels = [f"&l0 [{', '.join(['lol'] * width)}]"]
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    return f"[{', '.join(levels)}]"


def nested_maps(depth: int) -> str:
    return "{a: " * depth + "1" + "}" * depth


# case -> (placeholder, hostile YAML text, what the message says after the key path)
CASES: dict[str, tuple[str, str, str]] = {
    "billion laughs 7 deep in a duration": ("TIMEOUT", laughs(7), "aliases expand"),
    "billion laughs 8 deep": ("TIMEOUT", laughs(8), "aliases expand"),
    "an alias inside its own anchor": ("EXTRA", "&c {a: *c}", "inside its own anchor"),
    "timeout .inf": ("TIMEOUT", ".inf", "is not a duration"),
    "timeout -.inf": ("TIMEOUT", "-.inf", "is not a duration"),
    "timeout .nan": ("TIMEOUT", ".nan", "is not a duration"),
    "timeout 1e999": ("TIMEOUT", "1e999", "is not a duration"),
    "lease_ttl 99999999999d": ("LEASE_TTL", "99999999999d", "is too long; at most 3650d"),
    "lease_ttl a 90-digit number": ("LEASE_TTL", "9" * 90, "is too long; at most 3650d"),
    "workers 5000 digits": ("WORKERS", "7" * 5000, "a number of 5000 characters"),
    "workers a 90-digit hex number": ("WORKERS", "0x" + "f" * 90, "less than or equal to 256"),
    "workers .inf": ("WORKERS", ".inf", "finite number"),
    "mappings nested 600 deep": ("EXTRA", nested_maps(600), "nested more than 64 deep"),
    "sequences nested 600 deep": ("EXTRA", "[" * 600 + "]" * 600, "nested more than 64 deep"),
    "an impossible timestamp": ("EXTRA", "{a: 2024-13-45}", "cannot be read as timestamp"),
    "percent-encoded .. in a vault sink": (
        "SINK_VAULT",
        "apps/%2e%2e/%2e%2e/team-b/victim",
        "must not contain '.' or '..' parts",
    ),
    "twice percent-encoded ..": ("SINK_VAULT", "apps/%252E%252E/x", "'.' or '..' parts"),
    "percent-encoded slash and dots": ("SINK_VAULT", "apps%2F..%2Fx", "'.' or '..' parts"),
    ".. in a file sink": ("SINK_FILE", "../../etc/cron.d/x", "'.' or '..' parts"),
    "an absolute sink path": ("SINK_FILE", "/etc/passwd", "must be relative"),
    "a backslash separator": ("SINK_FILE", q("..\\..\\x"), "backslash"),
    "NUL in a sink path": ("SINK_FILE", q("a\x00b"), "control characters"),
    "a tab in a vault path": ("SINK_VAULT", q("apps/\tx"), "control characters"),
    "an empty segment": ("SINK_VAULT", "apps//x", "empty part"),
    "a trailing slash": ("SINK_VAULT", "apps/x/", "empty part"),
    "percent-encoded .. in a state path": ("STATE_PATH", q("%2e%2e/other"), "'.' or '..' parts"),
    ".. in a store prefix": ("PREFIX", "rotator/../team-b", "'.' or '..' parts"),
    "a 256-byte part": ("SINK_FILE", "a/" + "é" * 128, "longer than 255 bytes"),
    "a 1025-character path": ("SINK_VAULT", "/".join(["abcd"] * 205) + "x", "longer than 1024"),
    "bad percent-encoding": ("SINK_VAULT", "apps/%ff%fe", "not valid percent-encoded UTF-8"),
    "a newline in token_url": ("TOKEN_URL", q("https://idp/t\nX-Evil: 1"), "control characters"),
    "a space in token_url": ("TOKEN_URL", q("https://idp/t x"), "is not an http:// or https://"),
    "a U+2028 in vault url": ("VAULT_URL", q("https://vault\u2028:8200"), "control characters"),
    "credentials in token_url": (
        "TOKEN_URL",
        f"http://svc:{PASSWORD}@idp.example/token",
        "must not carry user:password@",
    ),
    "credentials in the vault url": (
        "VAULT_URL",
        f"https://root:{PASSWORD}@vault:8200",
        "must not carry user:password@",
    ),
    "an account name with a trailing newline": ("NAME", q("acct\n"), "control characters"),
    "an account name with a space": ("NAME", q("bad name"), "account names use letters"),
}


def _refusal(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return str(caught.value)


@pytest.mark.parametrize("case", list(CASES))
def test_each_hostile_value_is_a_config_error_at_its_key_path(case: str) -> None:
    key, value, problem = CASES[case]
    started = time.monotonic()
    message = _refusal(render(**{key: value}))
    assert time.monotonic() - started < 5, case
    assert message.startswith(WHERE[key]), message
    assert problem in message, message
    assert len(message) < MAX_MESSAGE
    assert PASSWORD not in message
    assert INTERNAL not in message


def test_the_good_template_is_valid() -> None:
    config = parse_config(render())
    assert config.accounts["idp-api"].sinks[1].path == "apps/idp-api"


def test_load_config_raises_only_config_error_for_every_case(tmp_path: Path) -> None:
    # what the daemon's reload calls on SIGHUP
    for index, (key, value, _problem) in enumerate(CASES.values()):
        path = tmp_path / f"{index}.yaml"
        path.write_text(render(**{key: value}), encoding="utf-8")
        with pytest.raises(ConfigError):
            load_config(str(path))


def test_a_file_too_large_or_not_text_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(ConfigError, match="is larger than 32 MB"):
        load_config(str(big))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"accounts: {caf\xe9: {}}\n")
    with pytest.raises(ConfigError, match=r"is not UTF-8 \(byte 14\); save it as UTF-8"):
        load_config(str(latin))
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(str(tmp_path))


def test_an_unexpected_exception_is_still_a_config_error_that_says_it_is_a_bug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rotator.config import loading

    def broken(raw: object, source: str) -> Config:
        raise KeyError("a check's own bug")

    monkeypatch.setattr(loading, "_validate", broken)
    message = _refusal(render())
    assert message == f"<string>: {INTERNAL} (KeyError)"


def test_a_long_provider_name_is_answered_at_once() -> None:
    started = time.monotonic()
    message = _refusal(render().replace("provider: oauth2", "provider: " + "x" * 200_000))
    assert time.monotonic() - started < 5
    assert message.startswith("accounts.idp-api.provider: ")
    assert len(message) < 400


def test_a_long_url_with_letters_only_is_answered_at_once() -> None:
    # a pattern free to start anywhere rescans from every position: quadratic
    started = time.monotonic()
    message = _refusal(render(TOKEN_URL="https://" + "a" * 200_000 + " x"))
    assert time.monotonic() - started < 5
    assert len(message) < 400


def test_many_problems_make_one_short_message() -> None:
    extra = "".join(f"    bad_key_{i}: {'v' * 500}\n" for i in range(200))
    message = _refusal(render() + extra)
    assert len(message) < MAX_MESSAGE
    assert message.startswith("accounts.idp-api.bad_key_")


def test_merging_a_defaults_anchor_into_many_accounts_is_within_the_alias_budget() -> None:
    accounts = "".join(
        f"  a{i}: {{<<: *common, client_id: a{i}, sinks: [{{store: files, path: a{i}.json}}]}}\n"
        for i in range(3000)
    )
    text = (
        "stores: {files: {type: file, directory: /tmp/rotator-hostile-store}}\n"
        "defaults: &common {provider: oauth2, token_url: 'https://idp/t', "
        "client_secret: env:S, refresh_share: 0.5, jitter: 0.2, max_lifetime: 1h}\n"
        "accounts:\n" + accounts
    )
    assert len(parse_config(text).accounts) == 3000


# -- the same through `rotator check` ----------------------------------------------------

CLI_CASES = [
    "billion laughs 7 deep in a duration",
    "timeout .inf",
    "lease_ttl 99999999999d",
    "workers 5000 digits",
    "mappings nested 600 deep",
    "percent-encoded .. in a vault sink",
    ".. in a file sink",
    "an absolute sink path",
    "NUL in a sink path",
    "a backslash separator",
    "a newline in token_url",
    "credentials in token_url",
    "an account name with a trailing newline",
]


def test_check_exits_2_with_the_key_path_for_each_class(tmp_path: Path) -> None:
    jobs: list[tuple[str, Path]] = []
    for index, case in enumerate(CLI_CASES):
        key, value, _problem = CASES[case]
        path = tmp_path / f"case-{index}.yaml"
        path.write_text(render(**{key: value}), encoding="utf-8")
        jobs.append((case, path))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: run_rotator(["check", "-c", str(job[1])]), jobs))
    for (case, _path), proc in zip(jobs, results, strict=True):
        key, _value, problem = CASES[case]
        assert proc.returncode == 2, (case, proc.stderr[:2000])
        assert proc.stderr.startswith(f"rotator: config: {WHERE[key]}"), (case, proc.stderr)
        assert problem in proc.stderr, (case, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr) < MAX_MESSAGE
        assert PASSWORD not in proc.stderr + proc.stdout


# -- fuzz: the same classes anywhere ------------------------------------------------------

_passwords = st.text(
    alphabet="abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=12, max_size=24
).map(lambda s: "Pw" + s)
_path_parts = st.sampled_from(
    ["..", ".", "", "a", "%2e", "%2E%2e", "%252e", "%2f", "%5c", "\\", "\x00", "\n", "\x85", "%"]
)
_hostile_strings = st.one_of(
    st.lists(_path_parts, min_size=1, max_size=6).map("/".join),
    st.lists(_path_parts, min_size=1, max_size=6).map("".join),
    st.text(max_size=40),
    st.just("acct\n"),
    _passwords.map(lambda pw: f"http://svc:{pw}@idp.example/token"),
    _passwords.map(lambda pw: f"https://u:{pw}@h/\n"),
    st.sampled_from(["https://idp/t\n", "https://idp/t\r\nX: y", " https://idp/t", "http://"]),
)
_numbers = st.one_of(
    st.sampled_from([".inf", "-.inf", ".nan", "1e999", "-1e999", "0x" + "f" * 98, "1:" * 49 + "1"]),
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.integers(1, 30).map(lambda n: "9" * n + "d"),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
_structures = st.one_of(
    st.integers(1, 700).map(nested_maps),
    st.integers(1, 700).map(lambda d: "[" * d + "]" * d),
    st.tuples(st.integers(1, 9), st.integers(2, 12)).map(lambda dw: laughs(*dw)),
)
_fragments = st.one_of(_hostile_strings.map(q), _numbers, _structures)


#: a credential pasted where a secret reference belongs
_literal_secrets = st.text(
    alphabet="abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789_-+/=.", min_size=10
).map(lambda s: "Sk" + s)
_SECRET_KEYS = ("CLIENT_SECRET", "VAULT_TOKEN")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    places=st.dictionaries(st.sampled_from(sorted(GOOD)), _fragments, min_size=1, max_size=3),
    literals=st.dictionaries(st.sampled_from(_SECRET_KEYS), _literal_secrets, max_size=2),
)
def test_only_bounded_config_errors_escape(
    places: dict[str, str], literals: dict[str, str]
) -> None:
    text = render(**{**places, **{key: q(value) for key, value in literals.items()}})
    secrets = {
        pw
        for fragment in places.values()
        for pw in _passwords_in(fragment)  # what a URL with userinfo carried
    } | set(literals.values())
    try:
        config = parse_config(text)
    except ConfigError as exc:
        message = str(exc)
        assert message
        assert INTERNAL not in message, message  # an exception the checks did not expect
        assert len(message) < MAX_MESSAGE
        assert not any(pw in message for pw in secrets), message
        return
    assert isinstance(config, Config)
    # accepted: then nothing hostile got in
    assert not secrets, places
    for sink in config.accounts[next(iter(config.accounts))].sinks:
        assert ".." not in sink.path.split("/")


def _passwords_in(fragment: str) -> list[str]:
    if not fragment.startswith('"'):
        return []
    try:
        text = yaml.safe_load(fragment)
    except (yaml.YAMLError, ValueError, RecursionError):
        return []
    if not isinstance(text, str) or "://" not in text or "@" not in text:
        return []
    userinfo = text.split("://", 1)[1].split("@", 1)[0]
    return [userinfo.partition(":")[2]] if ":" in userinfo else []


@pytest.mark.parametrize(
    "text",
    [
        f'accounts:\n  "http://u:{PASSWORD}@h/": {{}}\n',  # an account name
        f'accounts:\n  "http://u:{PASSWORD}@h/": 1\n  "http://u:{PASSWORD}@h/": 2\n',  # twice
        f'accounts:\n  a:\n    "http://u:{PASSWORD}@h/": 1\n',  # an unknown key
        f'"http://u:{PASSWORD}@h/": 1\n',  # an unknown section
        f'accounts:\n  "http://u:{PASSWORD}@h/\\n": 1\n',  # a key with a newline
    ],
)
def test_a_key_that_carries_a_password_is_never_quoted(text: str) -> None:
    message = _refusal(text)
    assert PASSWORD not in message
    assert len(message) < 400
