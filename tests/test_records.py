"""rotator/records.py: the alert, notify and console records carry their format, and
a newer one is refused by name and left byte for byte.

Each record kind is driven through the code that keeps it (the alert dispatcher,
the notification claims, the console's flow book) against a real store: the file
store and a real OpenBao. A record "written by a newer rotator" is any record
whose ``format`` is above this rotator's, with any ``requires`` (a release, or
text that names none) and any other fields (hypothesis draws them): the reader
names the record, its format and the release to upgrade to, the caller carries
on as the format says (alerts from memory, notifications unclaimed, sign-ins
refused), and nothing is written: the file's bytes, or OpenBao's version count
and data, are as they were.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.alerts.dispatch import StoreAlertMemory, alert_record_path
from rotator.backends.base import SecretStore
from rotator.backends.file import FileStore
from rotator.backends.vault.store import VaultStore
from rotator.config.models import FileStoreSettings, VaultStoreSettings
from rotator.errors import NewerFormat, StoreError
from rotator.notify.claims import StoreClaims, notify_record_path
from rotator.notify.events import Event
from rotator.records import ALERT_RECORD, CONSOLE_RECORD, NOTIFY_RECORD, RecordFormat
from rotator.service.console.book import FlowBook, book_path
from rotator.service.console.links import Link, LinkRefused
from rotator.state import requires_release
from tests.support.alertkit import T0, Clock, Recorder, dispatcher, state
from tests.support.alertkit import settings as account_settings
from tests.support.logcapture import captured_logs
from tests.support.servers import OpenBao

#: a store and how to fingerprint one of its records (bytes on disk, versions in KV v2)
Harness = tuple[SecretStore, Callable[[str], object]]


@pytest.fixture(params=["file", "openbao"])
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    if request.param == "file":
        root = tmp_path / "state"
        store = FileStore("files", FileStoreSettings(type="file", directory=root))

        def on_disk(_: str) -> object:
            return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

        yield store, on_disk
        return
    bao: OpenBao = request.getfixturevalue("bao")
    prefix = f"records-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("RECORDS_TEST_VAULT_TOKEN", bao.root_token)
    settings_ = VaultStoreSettings.model_validate(
        {
            "type": "vault",
            "url": bao.url,
            "prefix": prefix,
            "auth": {"method": "token", "token": "env:RECORDS_TEST_VAULT_TOKEN"},
        }
    )
    vault = VaultStore("vault", settings_)

    def in_kv(path: str) -> object:
        record = vault.read(path)
        return bao.kv_versions(f"{prefix}/{path}"), dict(record.data) if record else None

    try:
        yield vault, in_kv
    finally:
        vault.close()


_KEYS = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
    lambda k: k not in ("format", "requires")
)
_VALUES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)
_REQUIRES = st.one_of(
    st.from_regex(r"rotator>=[1-9]\.[0-9]{1,2}\.[0-9]{1,2}", fullmatch=True),
    _VALUES,  # a text that names no release
)


@st.composite
def newer_records(draw: st.DrawFn, kind: RecordFormat) -> dict[str, str]:
    found = draw(st.integers(kind.format + 1, 10**9 - 1))
    extra = draw(st.dictionaries(_KEYS, _VALUES, max_size=4))
    return {**extra, "format": str(found), "requires": draw(_REQUIRES)}


def _account() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


def _refusal_names(message: str, kind: RecordFormat, account: str, data: Mapping[str, str]) -> None:
    """The refusal names the record, its format, and the release to upgrade to (or, when
    ``requires`` names none, where to look); never the text of ``requires`` itself."""
    assert f"the {kind.kind} of {account} is in {kind.kind} format {data['format']}," in message
    release = requires_release(data["requires"])
    if release:
        assert message.endswith(f"upgrade rotator to at least {release}")
    else:
        assert message.endswith(f"reads {kind.kind} format {data['format']} (see the CHANGELOG)")


_EXAMPLES = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _alerts_go_out_from_memory(store: SecretStore, account: str) -> str:
    with pytest.raises(NewerFormat) as refused:
        StoreAlertMemory(lambda a: store).load(account)
    rec = Recorder()
    expiring = state(account=account, refresh_expires_at=T0 + timedelta(days=2))
    with captured_logs() as logs:
        dispatcher(store, Clock(T0), rec).check(expiring, account_settings())
    assert rec.got, "the alert went out"
    assert str(refused.value) in [e.get("error") for e in logs]
    return str(refused.value)


def _events_go_out_unclaimed(store: SecretStore, account: str) -> str:
    event = Event("rotated", account, uuid.uuid4().hex, T0, None, ("files:x.json",))
    with captured_logs() as logs:
        assert StoreClaims(lambda a: store).claim(event)  # delivered, not claimed
    [line] = [e for e in logs if e.get("account") == account]
    return str(line["error"])


def _sign_ins_are_refused(store: SecretStore, account: str) -> str:
    now = datetime.now(UTC).replace(microsecond=0)
    link = Link(account=account, until=now + timedelta(hours=1), nonce=uuid.uuid4().hex)
    book = FlowBook(lambda a: store)
    with pytest.raises(LinkRefused) as refused:
        book.start(link, redirect_uri="https://r.example/cb", pkce=True, now=now)
    assert refused.value.status == 503
    with pytest.raises(LinkRefused):
        book.finish(f"abc.{account}", now, spend=True)
    return refused.value.reason


#: each kind: its format, its record's path, and its keeper driven over a newer record
#: (returns the refusal it said)
KINDS: dict[str, tuple[RecordFormat, Callable[[str], str], Callable[[SecretStore, str], str]]] = {
    "alerts": (ALERT_RECORD, alert_record_path, _alerts_go_out_from_memory),
    "notify": (NOTIFY_RECORD, notify_record_path, _events_go_out_unclaimed),
    "console": (CONSOLE_RECORD, book_path, _sign_ins_are_refused),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@_EXAMPLES
@given(data=st.data())
def test_a_newer_record_is_refused_by_name_its_keeper_carries_on_and_it_stays(
    harness: Harness, kind: str, data: st.DataObject
) -> None:
    store, fingerprint = harness
    record_format, path_of, keeper = KINDS[kind]
    account = _account()
    record = data.draw(newer_records(record_format))
    path = path_of(account)
    store.write(path, record, expected_version=None)
    before = fingerprint(path)
    _refusal_names(keeper(store, account), record_format, account, record)
    assert fingerprint(path) == before


def _marked(data: Mapping[str, Any], kind: RecordFormat) -> None:
    assert data["format"] == str(kind.format) and data["requires"] == kind.requires


def test_every_record_is_written_with_its_format_and_the_release_that_reads_it(
    harness: Harness,
) -> None:
    store, _ = harness
    account = _account()
    d = dispatcher(store, Clock(T0), Recorder())
    d.check(state(account=account, refresh_expires_at=T0 + timedelta(days=2)), account_settings())
    event = Event("rotated", account, "e1", T0, None, ("files:x.json",))
    assert StoreClaims(lambda a: store).claim(event)
    now = datetime.now(UTC).replace(microsecond=0)
    link = Link(account=account, until=now + timedelta(hours=1), nonce="n1")
    FlowBook(lambda a: store).start(link, redirect_uri="https://r.example/cb", pkce=False, now=now)
    for path, kind in (
        (alert_record_path(account), ALERT_RECORD),
        (notify_record_path(account), NOTIFY_RECORD),
        (book_path(account), CONSOLE_RECORD),
    ):
        record = store.read(path)
        assert record is not None, path
        _marked(record.data, kind)
    # the marking is no entry: a second look reads the alert sent, and nothing else
    sent, _ = StoreAlertMemory(lambda a: store).load(account)
    assert sent and not {"format", "requires"} & set(sent)


@pytest.mark.parametrize("mark", [{}, {"format": "1"}, {"format": "1", "requires": "x"}])
def test_this_format_and_the_unmarked_records_of_before_are_read(
    harness: Harness, mark: dict[str, str]
) -> None:
    """Before the marking a record had ``format: "1"`` alone; one by hand may have neither."""
    store, _ = harness
    account = _account()
    event = Event("rotated", account, "e1", T0, None, ("files:x.json",))
    store.write(notify_record_path(account), {**mark, "rotated": "e1"}, expected_version=None)
    assert not StoreClaims(lambda a: store).claim(event)  # claimed already: read, not refused


@pytest.mark.parametrize("raw", ["", "one", "0", "1.0", "-2"])
def test_a_format_that_is_no_number_is_damaged_and_says_so_without_its_value(raw: str) -> None:
    for kind in (ALERT_RECORD, NOTIFY_RECORD, CONSOLE_RECORD):
        with pytest.raises(StoreError) as damaged:
            kind.check("a", {"format": raw})
        assert not isinstance(damaged.value, NewerFormat)
        assert f"the {kind.kind} of a is damaged" in str(damaged.value)
        assert "delete it" in str(damaged.value)
