"""``rotator status`` (rotator/commands/status.py): nothing it prints acts on a terminal,
and nothing it prints is a secret.

Vendor text (``last_error``) and whatever the state store holds reach the
operator's terminal through status; any character in them that a terminal
would act on or that cannot be seen must come out escaped.
"""

from __future__ import annotations

import io
import json
import tempfile
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.cli import main
from rotator.commands.status import render_table, status
from rotator.commands.terminal import printable
from rotator.config import Config, load_config
from rotator.secrets import Secret
from rotator.service.app import open_stores
from rotator.state import AccountState, describe
from tests.support import leakcheck
from tests.support.logcapture import keep_test_logging
from tests.support.proc import run_rotator

__all__ = ["keep_test_logging"]  # the autouse fixture, imported so pytest finds it here

pytestmark = pytest.mark.timeout(120)

CLIENT_SECRET = leakcheck.register("status-client-secret-77ad1", "client secret")
#: every character a terminal acts on: C0, DEL, C1
CONTROLS = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))]
NASTY = [
    "\x1b[2J\x1b[H",  # clear the screen
    "\x1b]0;owned\x07",  # set the window title
    "\x1b]52;c;cm0gLXJmIH4=\x07",  # write the clipboard (OSC 52)
    "\x9b31m",  # C1 CSI
    "line\nbreak\rreturn\ttab\bback\x7f",
    "\u202eevil\u202c",  # a bidi override (Trojan Source)
    "\u2028\u2029\u200b\ufeff",  # line/paragraph separators, zero width, BOM
    "\ud800 lone \udfff",  # lone surrogates
    "\U000e0041\U0010ffff\ue000",  # tag, noncharacter, private use
]


def texts(*, surrogates: bool = True) -> st.SearchStrategy[str]:
    """Text as vendors and stores may hold it: any code point, controls, escape sequences.

    ``surrogates=False`` for text that goes through the file store, which cannot
    write a lone surrogate (reported: that is the store's room).
    """
    pieces = NASTY if surrogates else [p for p in NASTY if "\ud800" not in p]
    return st.lists(
        st.one_of(
            st.text(st.characters(exclude_categories=() if surrogates else ("Cs",)), max_size=10),
            st.sampled_from(CONTROLS),
            st.sampled_from(pieces),
        ),
        max_size=8,
    ).map("".join)


ANY_TEXT = texts()
STORABLE_TEXT = texts(surrogates=False)


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATUS_TEST_SECRET", CLIENT_SECRET)


def write_config(directory: Path) -> Path:
    config = {
        "stores": {"files": {"type": "file", "directory": str(directory / "store")}},
        "accounts": {
            "idp-api": {
                "provider": "oauth2",
                "grant": "refresh_token",
                "token_url": "http://127.0.0.1:9/token",
                "client_id": "svc",
                "client_secret": "env:STATUS_TEST_SECRET",
                "sinks": [{"store": "files", "path": "idp.json"}],
            }
        },
    }
    path = directory / "rotator.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def put_state(config: Config, state: AccountState) -> None:
    store = open_stores(config)["files"]
    record = store.read("state/idp-api")
    store.write(
        "state/idp-api", state.to_record(), expected_version=record.version if record else None
    )


def assert_terminal_safe(text: str) -> None:
    for line in text.split("\n"):
        bad = [f"U+{ord(c):04X} {unicodedata.category(c)}" for c in line if not c.isprintable()]
        assert not bad, f"raw unprintable characters reached the terminal: {bad}"


# --- printable ---------------------------------------------------------------------------------


@given(ANY_TEXT)
def test_printable_leaves_nothing_a_terminal_acts_on(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable()
    shown.encode("utf-8")  # no lone surrogate left to fail the write


@given(st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"))))
def test_printable_text_is_shown_as_it_is(text: str) -> None:
    assert printable(text) == text


def test_printable_escapes_as_python_writes_them() -> None:
    assert printable("a\x1b[31mb") == "a\\x1b[31mb"
    assert printable("\x9b\x7f\n") == "\\x9b\\x7f\\x0a"
    assert printable("\u202e\ud800") == "\\u202e\\ud800"
    assert printable("\U000e0041") == "\\U000e0041"
    assert printable("naïve café 東京 ok") == "naïve café 東京 ok"


@given(
    account=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
    provider=ANY_TEXT,
    last_error=ANY_TEXT,
    failures=st.integers(0, 5),
    failed=st.booleans(),
)
def test_the_table_has_no_raw_control_character(
    account: str, provider: str, last_error: str, failures: int, failed: bool
) -> None:
    state = AccountState(
        account,
        provider=provider,
        last_error=last_error,
        consecutive_failures=failures,
        failed=failed,
        expires_at=datetime(2026, 11, 27, tzinfo=UTC),
    )
    lines = render_table(describe([state]))
    assert len(lines) == 2  # a newline in vendor text cannot forge a row
    assert_terminal_safe("\n".join(lines))


# --- status, end to end over a real file store --------------------------------------------------


def test_any_state_text_reaches_stdout_escaped_and_json_gives_it_back() -> None:
    """Hypothesis writes any text into the stored state; status prints it escaped, and
    --json (ASCII only) parses back to exactly what was stored."""
    with tempfile.TemporaryDirectory() as directory:
        config = load_config(str(write_config(Path(directory))))

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(provider=STORABLE_TEXT, last_error=STORABLE_TEXT)
        def check(provider: str, last_error: str) -> None:
            put_state(config, AccountState("idp-api", provider=provider, last_error=last_error))
            table, err = io.StringIO(), io.StringIO()
            assert status(config, out=table, err=err) == 0
            assert_terminal_safe(table.getvalue() + err.getvalue())
            as_json = io.StringIO()
            assert status(config, as_json=True, out=as_json) == 0
            assert as_json.getvalue().isascii()
            (row,) = json.loads(as_json.getvalue())["accounts"]
            assert (row["provider"], row["last_error"]) == (provider, last_error)

        check()


def test_status_through_main_escapes_every_nasty_sequence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path)
    put_state(
        load_config(str(config_path)),
        AccountState(
            "idp-api",
            provider="oauth2\x1b[8m",
            last_error="".join(p for p in NASTY if "\ud800" not in p),
        ),
    )
    assert main(["status", "-c", str(config_path)]) == 0
    out = capsys.readouterr().out
    assert_terminal_safe(out)
    assert "oauth2\\x1b[8m" in out and "\\x1b[2J\\x1b[H" in out and "\\u202eevil" in out
    assert len(out.splitlines()) == 2


def test_status_on_an_ascii_terminal_escapes_what_it_cannot_encode(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    put_state(
        load_config(str(config_path)),
        AccountState("idp-api", last_error="東京 \x1b[31m café"),
    )
    proc = run_rotator(["status", "-c", str(config_path)], env={"PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0, proc.stderr
    assert "\\u6771\\u4eac \\x1b[31m caf\\xe9" in proc.stdout


# --- no secret in status --------------------------------------------------------------------------


def test_status_never_prints_a_secret(tmp_path: Path) -> None:
    """The state holds the tokens; a vendor that echoed them (or the client secret) into
    its error text must not get them printed: they are scrubbed by value."""
    refresh = leakcheck.register("status-refresh-token-5c9e0a", "refresh token")
    access = leakcheck.register("status-access-token-1b7f33", "access token")
    config_path = write_config(tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    put_state(
        load_config(str(config_path)),
        AccountState(
            "idp-api",
            provider="oauth2",
            access_token=Secret(access),
            issued_at=now,
            expires_at=now + timedelta(hours=1),
            refresh_token=Secret(refresh),
            consecutive_failures=1,
            last_error=f"invalid_request: got {refresh} with {CLIENT_SECRET}; had {access}",
        ),
    )
    env = {"STATUS_TEST_SECRET": CLIENT_SECRET}
    table = run_rotator(["status", "-c", str(config_path)], env=env)
    as_json = run_rotator(["status", "--json", "-c", str(config_path)], env=env)
    for proc in (table, as_json):
        assert proc.returncode == 0, proc.stderr
        for secret in (refresh, access, CLIENT_SECRET):
            assert secret not in proc.stdout + proc.stderr
    (row,) = json.loads(as_json.stdout)["accounts"]
    assert row["last_error"] == "invalid_request: got *** with ***; had ***"
    assert row["has_refresh_token"] is True
    assert "RETRYING(1)" in table.stdout and "invalid_request: got ***" in table.stdout


def test_a_secret_that_is_a_word_of_the_fix_leaves_the_fix_usable(tmp_path: Path) -> None:
    """A client secret `rotator` (weak, but real) once printed `*** import idp-api`.

    The vendor's echo of it is scrubbed; the fix's command, ours, is shown whole.
    (Not registered with the leak check: the word is in every log line.)
    """
    config_path = write_config(tmp_path)
    put_state(
        load_config(str(config_path)),
        AccountState(
            "idp-api",
            provider="oauth2",
            consecutive_failures=1,
            last_error=(
                "invalid_client: secret rotator refused; seed one with: rotator import idp-api"
            ),
        ),
    )
    shown = run_rotator(
        ["status", "--json", "-c", str(config_path)], env={"STATUS_TEST_SECRET": "rotator"}
    )
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)["accounts"]
    assert row["last_error"] == (
        "invalid_client: secret *** refused; seed one with: rotator import idp-api"
    )


def test_a_store_error_is_printed_escaped_and_exits_1(tmp_path: Path) -> None:
    # (a control character in the directory's name is refused by the configuration now; what
    # a store says is escaped all the same, as the vendor text tests above prove)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    config = {
        "stores": {"files": {"type": "file", "directory": str(blocker / "sub")}},
        "accounts": {
            "idp-api": {
                "provider": "oauth2",
                "token_url": "http://127.0.0.1:9/token",
                "client_id": "svc",
                "client_secret": "env:STATUS_TEST_SECRET",
                "sinks": [{"store": "files", "path": "idp.json"}],
            }
        },
    }
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(config))
    out, err = io.StringIO(), io.StringIO()
    assert status(load_config(str(path)), out=out, err=err) == 1
    assert "error: idp-api: files: cannot" in err.getvalue()
    assert_terminal_safe(err.getvalue())
