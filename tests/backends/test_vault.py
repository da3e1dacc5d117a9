"""The Vault store against a real OpenBao server: auth methods, token lifetime,
the managed-by marker, validation and error mapping."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples

from rotator.backends.base import PATH_RULE, ValidationStatus
from rotator.backends.vault.client import HvacClient
from rotator.backends.vault.store import VaultStore
from rotator.errors import (
    StoreAuthError,
    StoreConflict,
    StoreError,
    StoreNotManaged,
    StorePermissionError,
    StoreUnavailable,
)
from tests.backends.conftest import (
    DAEMON_POLICY,
    EARLIER_DAEMON_POLICY,
    hostile_paths,
    plain_paths,
    token_env,
    unique,
    vault_settings,
)
from tests.fakes.kubernetes import FakeKubernetes
from tests.support import leakcheck
from tests.support.servers import OpenBao, free_port
from tests.support.wrappers import Counting

#: a consumer view as rotator writes it: its account and provider say it is rotator's
VIEW = {
    "access_token": "tok-vault",
    "token_type": "Bearer",
    "expires_at": "2030-01-01T00:00:00Z",
    "account": "acme",
    "provider": "oauth2",
}
VIEW2 = {**VIEW, "access_token": "tok-vault-2"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token_store(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch, token: str, **kwargs: Any
) -> VaultStore:
    settings = vault_settings(bao.url, {"method": "token", "token": token_env(monkeypatch, token)})
    return VaultStore("vault", settings, **kwargs)


def approle_store(
    bao: OpenBao,
    monkeypatch: pytest.MonkeyPatch,
    role_id: str,
    secret_id: str,
    **kwargs: Any,
) -> VaultStore:
    auth = {
        "method": "approle",
        "role_id": token_env(monkeypatch, role_id),
        "secret_id": token_env(monkeypatch, secret_id),
    }
    return VaultStore("vault", vault_settings(bao.url, auth), **kwargs)


def metadata(bao: OpenBao, path: str) -> dict[str, Any]:
    answer: dict[str, Any] = bao.call("GET", f"secret/metadata/rotator/{path}")["data"]
    return answer


# -- auth methods ---------------------------------------------------------------------


def test_approle_login_reads_and_writes(bao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> None:
    role_id, secret_id = bao.approle(unique("role"), ["rotator"])
    store = approle_store(bao, monkeypatch, role_id, secret_id, keepalive=False)
    try:
        path = f"apps/{unique()}"
        result = store.write(path, VIEW, expected_version=None)
        assert result.version == 1 and result.changed
        record = store.read(path)
        assert record is not None and dict(record.data) == VIEW
        expires_in = store.token_expires_in()
        assert expires_in is not None and 3000 < expires_in <= 3600  # the role's 1h token_ttl
    finally:
        store.close()


def test_approle_with_a_wrong_secret_id_is_an_auth_error(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    role_id, _ = bao.approle(unique("role"), ["rotator"])
    wrong = leakcheck.register("0000-wrong-" + unique(), "wrong secret_id")
    store = approle_store(bao, monkeypatch, role_id, wrong)
    try:
        with pytest.raises(StoreAuthError) as caught:
            store.read("apps/x")
        message = str(caught.value)
        assert "approle login" in message
        assert wrong not in message and role_id not in message
    finally:
        store.close()


def test_a_missing_token_reference_is_an_auth_error_naming_it(bao: OpenBao) -> None:
    settings = vault_settings(
        bao.url, {"method": "token", "token": "env:ROTATOR_TEST_NO_SUCH_VARIABLE"}
    )
    store = VaultStore("vault", settings)
    try:
        with pytest.raises(StoreAuthError, match="ROTATOR_TEST_NO_SUCH_VARIABLE"):
            store.read("apps/x")
    finally:
        store.close()


def test_kubernetes_login_sends_the_service_account_jwt(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Real OpenBao Kubernetes auth; the cluster's TokenReview API is the emulator."""
    with FakeKubernetes() as k8s:
        mount = unique("k8s")
        bao.enable_auth("kubernetes", mount)
        bao.call(
            "POST",
            f"auth/{mount}/config",
            {
                "kubernetes_host": k8s.url,
                "kubernetes_ca_cert": k8s.ca_pem,
                "token_reviewer_jwt": k8s.reviewer_jwt,
                "disable_local_ca_jwt": True,
            },
        )
        bao.call(
            "POST",
            f"auth/{mount}/role/rotator",
            {
                "bound_service_account_names": ["rotator"],
                "bound_service_account_namespaces": ["tokens"],
                "token_policies": ["rotator"],
                "token_ttl": "20m",
            },
        )
        jwt_file = tmp_path / "token"
        jwt_file.write_text(k8s.issue("tokens", "rotator") + "\n")
        auth = {"method": "kubernetes", "role": "rotator", "mount": mount, "jwt_path": jwt_file}
        store = VaultStore("vault", vault_settings(bao.url, auth), keepalive=False)
        try:
            path = f"apps/{unique()}"
            store.write(path, VIEW, expected_version=None)
            assert bao.kv_versions(f"rotator/{path}") == 1
            # OpenBao passed exactly our file's JWT (newline stripped) to the cluster
            assert [r["spec"]["token"] for r in k8s.reviews] == [jwt_file.read_text().strip()]
            expires_in = store.token_expires_in()
            assert expires_in is not None and 1100 < expires_in <= 1200
        finally:
            store.close()

        # a service account the role is not bound to is refused: an auth error
        jwt_file.write_text(k8s.issue("tokens", "someone-else"))
        other = VaultStore("vault", vault_settings(bao.url, auth))
        try:
            with pytest.raises(StoreAuthError, match="kubernetes login"):
                other.read("apps/x")
        finally:
            other.close()


def test_kubernetes_without_a_mounted_token_says_so(bao: OpenBao, tmp_path: Path) -> None:
    missing = tmp_path / "no-token-here"
    auth = {"method": "kubernetes", "role": "rotator", "jwt_path": missing}
    store = VaultStore("vault", vault_settings(bao.url, auth))
    try:
        with pytest.raises(StoreAuthError, match="service account token") as caught:
            store.read("apps/x")
        assert str(missing) in str(caught.value)
    finally:
        store.close()


# -- keeping the daemon's token alive --------------------------------------------------


def test_the_token_is_renewed_before_its_ttl_runs_out(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = bao.create_token(["rotator"], ttl="10m")
    clock = Clock()
    store = token_store(bao, monkeypatch, token, clock=clock, keepalive=False)
    try:
        store.read("apps/x")  # logs in: lookup-self
        assert bao.lookup_token(token).get("last_renewal_time") in (0, None)
        clock.now += 300  # half the TTL: not yet
        store.renew_if_due()
        assert bao.lookup_token(token).get("last_renewal_time") in (0, None)
        clock.now += 150  # 3/4 of the TTL: renew
        store.renew_if_due()
        assert bao.lookup_token(token).get("last_renewal_time") not in (0, None)
        expires_in = store.token_expires_in()
        assert expires_in is not None and 550 < expires_in <= 600
    finally:
        store.close()


def test_the_keepalive_thread_renews_on_its_own(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = bao.create_token(["rotator"], ttl="3s")
    store = token_store(bao, monkeypatch, token)
    try:
        store.read("apps/x")  # log in; the thread renews at 2s
        wait = threading.Event()
        deadline = 15.0
        while deadline > 0 and bao.lookup_token(token).get("last_renewal_time") in (0, None):
            wait.wait(0.1)
            deadline -= 0.1
        assert bao.lookup_token(token).get("last_renewal_time") not in (0, None)
    finally:
        store.close()


def test_a_token_that_cannot_be_renewed_is_replaced_by_a_new_login(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    role = unique("batch")
    role_id, secret_id = bao.approle(role, ["rotator"])
    # batch tokens are never renewable: the store must log in again instead
    bao.call("POST", f"auth/approle/role/{role}", {"token_type": "batch", "token_ttl": "10m"})
    clock = Clock()
    store = approle_store(bao, monkeypatch, role_id, secret_id, clock=clock, keepalive=False)
    try:
        store.read("apps/x")
        first = store.auth.token
        assert first is not None and not first.renewable
        clock.now += 500
        store.renew_if_due()
        second = store.auth.token
        assert second is not None and second.generation == first.generation + 1
        assert second.secret != first.secret
        store.write(f"apps/{unique()}", VIEW, expected_version=None)  # the new one works
    finally:
        store.close()


def test_a_revoked_token_triggers_one_relogin(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    role_id, secret_id = bao.approle(unique("role"), ["rotator"])
    store = approle_store(bao, monkeypatch, role_id, secret_id, keepalive=False)
    try:
        path = f"apps/{unique()}"
        store.write(path, VIEW, expected_version=None)
        current = store.auth.token
        assert current is not None
        bao.call("POST", "auth/token/revoke", {"token": current.secret.reveal()})
        record = store.read(path)  # 403, log in again, retry once
        assert record is not None and dict(record.data) == VIEW
        assert (
            store.auth.token is not None and store.auth.token.generation == current.generation + 1
        )
    finally:
        store.close()


def test_one_login_is_shared_by_all_threads(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    role_id, secret_id = bao.approle(unique("role"), ["rotator"])
    store = approle_store(bao, monkeypatch, role_id, secret_id, keepalive=False)
    errors: list[BaseException] = []
    paths = [f"apps/{unique()}" for _ in range(24)]  # more than requests' default pool

    def work(path: str) -> None:
        try:
            version = None
            for n in range(4):
                result = store.write(path, {**VIEW, "n": str(n)}, expected_version=version)
                version = result.version
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in paths]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert store.auth.token is not None and store.auth.token.generation == 1
        assert "Connection pool is full" not in caplog.text
        for path in paths:
            record = store.read(path)
            assert record is not None and record.version == 4 and record.data["n"] == "3"
    finally:
        store.close()


# -- whose a path is: the marker, or the record ----------------------------------------------------


def test_written_paths_carry_no_marker_and_another_process_knows_them_by_their_record(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = token_store(bao, monkeypatch, bao.create_token(["rotator"]))
    later = token_store(bao, monkeypatch, bao.create_token(["rotator"]))
    try:
        path = f"apps/{unique()}"
        store.write(path, VIEW, expected_version=None)
        assert metadata(bao, path)["custom_metadata"] in (None, {})
        # a new process (a restart) reads the view and writes the next one over it
        record = later.read(path)
        assert record is not None
        assert later.write(path, VIEW2, expected_version=record.version).version == 2
        # ... but not a view of another account or provider (a sink pointing at a
        # path another account publishes to): refused, untouched
        for other in ({**VIEW2, "account": "globex"}, {**VIEW2, "provider": "faxplus"}):
            with pytest.raises(StoreNotManaged, match="adopt: true"):
                later.write(path, other, expected_version=2)  # known at 2: still checked
        assert bao.kv_versions(f"rotator/{path}") == 2
    finally:
        store.close()
        later.close()


def test_a_foreign_secret_is_refused_unless_adopted(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = f"apps/{unique()}"
    bao.call("POST", f"secret/data/rotator/{path}", {"data": {"access_token": "hand-made"}})
    bao.call("POST", f"secret/metadata/rotator/{path}", {"custom_metadata": {"owner": "team-a"}})
    store = token_store(bao, monkeypatch, bao.create_token(["rotator"]))
    try:
        record = store.read(path)
        assert record is not None and record.version == 1
        with pytest.raises(StoreNotManaged, match="adopt: true"):
            store.write(path, VIEW, expected_version=record.version)
        with pytest.raises(StoreNotManaged):
            store.write(path, VIEW, expected_version=None)
        assert bao.kv_versions(f"rotator/{path}") == 1

        adopted = store.write(path, VIEW, expected_version=record.version, adopt=True)
        assert adopted.changed and adopted.version == 2
        # no marker is needed after: the view says it is rotator's (their metadata stays)
        assert metadata(bao, path)["custom_metadata"] == {"owner": "team-a"}
        assert store.write(path, {**VIEW, "access_token": "t2"}, expected_version=2).version == 3
        fresh = token_store(bao, monkeypatch, bao.create_token(["rotator"]))
        try:
            assert fresh.write(path, VIEW, expected_version=3).version == 4
        finally:
            fresh.close()
    finally:
        store.close()


def test_a_path_marked_by_an_earlier_release_stays_rotators_whatever_it_holds(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = f"apps/{unique()}"
    bao.call("POST", f"secret/data/rotator/{path}", {"data": {"x": "written by hand"}})
    bao.call(
        "POST", f"secret/metadata/rotator/{path}", {"custom_metadata": {"managed-by": "rotator"}}
    )
    store = token_store(bao, monkeypatch, bao.create_token(["rotator"]))
    try:
        assert store.write(path, VIEW, expected_version=1).version == 2
        assert store.write(path, VIEW2, expected_version=2).version == 3
    finally:
        store.close()


def test_a_soft_deleted_latest_version_reads_as_missing_and_is_written_only_when_marked(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deleted latest version shows no data: an unmarked one cannot prove it is
    rotator's, so the refusal says how to free it; a marked one is written."""
    store = token_store(bao, monkeypatch, bao.create_token(["rotator"]))
    try:
        path = f"apps/{unique()}"
        store.write(path, VIEW, expected_version=None)
        bao.call("DELETE", f"secret/data/rotator/{path}")  # soft delete of version 1
        assert store.read(path) is None
        with pytest.raises(StoreNotManaged, match="bao kv metadata delete secret/rotator/apps/"):
            store.write(path, VIEW, expected_version=None)
        bao.call(
            "POST",
            f"secret/metadata/rotator/{path}",
            {"custom_metadata": {"managed-by": "rotator"}},
        )
        result = store.write(path, VIEW, expected_version=None)
        assert result.changed and result.version == 2
        # removed for good: the path is free, and a create makes it again
        bao.call("DELETE", f"secret/metadata/rotator/{path}")
        assert store.write(path, VIEW, expected_version=None).version == 1
    finally:
        store.close()


def test_cas_rejects_a_version_the_server_moved_past(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = token_store(bao, monkeypatch, bao.create_token(["rotator"]))
    try:
        path = f"apps/{unique()}"
        store.write(path, VIEW, expected_version=None)
        other = {**VIEW, "access_token": "another-process"}
        bao.call("POST", f"secret/data/rotator/{path}", {"options": {"cas": 1}, "data": other})
        with pytest.raises(StoreConflict):
            store.write(path, VIEW, expected_version=1)
        with pytest.raises(StoreConflict):
            store.write(path, VIEW, expected_version="not-a-version")
    finally:
        store.close()


# -- errors and validation -----------------------------------------------------------


def test_permission_denied_names_the_path(bao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> None:
    store = token_store(bao, monkeypatch, bao.create_token(["consumer"]))
    try:
        with pytest.raises(StorePermissionError) as caught:
            store.write("state/acme", VIEW, expected_version=None)
        assert "secret/data/rotator/state/acme" in str(caught.value)
    finally:
        store.close()


def test_a_policy_without_metadata_is_enough_and_one_with_it_still_works(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's policy needs the data path only (docs/stores.md); a policy written
    for an earlier release, with the metadata grant, keeps working."""
    bao.write_policy("earlier-release", EARLIER_DAEMON_POLICY)
    for policy in ("rotator", "earlier-release"):
        store = token_store(bao, monkeypatch, bao.create_token([policy]))
        try:
            path = f"apps/{unique()}"
            assert store.write(path, VIEW, expected_version=None).version == 1
            assert store.write(path, VIEW2, expected_version=1).version == 2
            validation = store.validate("apps/x")
            assert validation.status is ValidationStatus.READY, validation.reason
        finally:
            store.close()


def test_a_missing_mount_says_so(bao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = vault_settings(
        bao.url,
        {"method": "token", "token": token_env(monkeypatch, bao.root_token)},
        mount="no-such-mount",
    )
    store = VaultStore("vault", settings)
    try:
        with pytest.raises(StoreError, match="no secrets engine mounted at no-such-mount/"):
            store.read("apps/x")
        validation = store.validate("apps/x")
        assert validation.status is ValidationStatus.ERROR
        assert "no-such-mount" in validation.reason
    finally:
        store.close()


def test_a_sealed_server_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenBao() as server:
        store = token_store(server, monkeypatch, server.root_token)
        try:
            store.read("apps/x")
            server.call("PUT", "sys/seal")
            with pytest.raises(StoreUnavailable, match="sealed"):
                store.read("apps/x")
        finally:
            store.close()


def test_validate_ready(bao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> None:
    store = token_store(bao, monkeypatch, bao.create_token(["rotator"]))
    try:
        validation = store.validate("apps/fax/acme")
        assert validation.status is ValidationStatus.READY, validation.reason
        assert "secret/data/rotator/apps/fax/acme" in validation.reason
        assert store.validate().status is ValidationStatus.READY
    finally:
        store.close()


def test_validate_reports_what_the_policy_lacks(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = token_store(bao, monkeypatch, bao.create_token(["consumer"]))
    try:
        validation = store.validate("apps/fax/acme")
        assert validation.status is ValidationStatus.ERROR
        assert validation.reason == (
            "permission denied writing secret/data/rotator/apps/fax/acme "
            "(the policy lacks create/update)"
        )
    finally:
        store.close()


def test_validate_is_unknown_when_capabilities_cannot_be_asked(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the daemon's policy plus its own token upkeep, but not the default policy
    # (which is where sys/capabilities-self comes from)
    bao.write_policy(
        "rotator-bare",
        'path "auth/token/lookup-self" { capabilities = ["read"] }\n'
        'path "auth/token/renew-self" { capabilities = ["update"] }\n',
    )
    answer = bao.call(
        "POST",
        "auth/token/create",
        {"policies": ["rotator", "rotator-bare"], "no_default_policy": True, "ttl": "1h"},
    )
    token = leakcheck.register(answer["auth"]["client_token"], "openbao token")
    store = token_store(bao, monkeypatch, token)
    try:
        validation = store.validate("apps/fax/acme")
        assert validation.status is ValidationStatus.UNKNOWN, validation.reason
        assert "capabilities-self" in validation.reason
        store.write(f"apps/{unique()}", VIEW, expected_version=None)  # and it does work
    finally:
        store.close()


def test_validate_errors_name_the_cause(bao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = leakcheck.register("s.bogus-" + unique(), "bogus vault token")
    bad = token_store(bao, monkeypatch, bogus)
    down = VaultStore(
        "vault",
        vault_settings(
            f"http://127.0.0.1:{free_port()}",
            {"method": "token", "token": token_env(monkeypatch, bao.root_token)},
        ),
    )
    try:
        refused = bad.validate("apps/x")
        assert refused.status is ValidationStatus.ERROR
        assert "token login refused" in refused.reason and bogus not in refused.reason
        unreachable = down.validate("apps/x")
        assert unreachable.status is ValidationStatus.ERROR
        assert "cannot reach" in unreachable.reason
    finally:
        bad.close()
        down.close()


def test_only_the_json_format_applies(bao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> None:
    store = token_store(bao, monkeypatch, bao.create_token(["rotator"]))
    try:
        with pytest.raises(StoreError, match="file store only"):
            store.write("apps/x", VIEW, expected_version=None, fmt="token")
    finally:
        store.close()


def test_paths_cannot_climb_out_of_the_prefix(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = token_store(bao, monkeypatch, bao.create_token(["rotator"]))
    try:
        with pytest.raises(StoreError, match=r"'\.\.' segment"):
            store.read("../outside")
    finally:
        store.close()


def test_the_percent_encoded_escape_of_issue_11_is_refused(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``apps/%2e%2e/%2e%2e/team-b/victim`` once reached secret/team-b/victim: with a
    root token (no policy to stop it) the store itself refuses, and nothing lands."""
    settings = vault_settings(
        bao.url, {"method": "token", "token": token_env(monkeypatch, bao.root_token)}
    )
    client = Counting(HvacClient(settings))
    store = VaultStore("vault", settings, client=client, keepalive=False)
    victim = f"team-b/{unique('victim')}"
    try:
        for write in (
            lambda p: store.write(p, VIEW, expected_version=None),
            lambda p: store.write(p, VIEW, expected_version=1, adopt=True),
            store.read,
            store.delete,
        ):
            with pytest.raises(StoreError, match=re.escape(PATH_RULE)) as caught:
                write(f"apps/%2e%2e/%2e%2e/{victim}")
            assert "percent-decoded" in str(caught.value)
        refused = store.validate(f"apps/%2e%2e/%2e%2e/{victim}")
        assert refused.status is ValidationStatus.ERROR and PATH_RULE in refused.reason
        assert client.calls == []  # refused before any request
        assert bao.kv_versions(victim) == 0
    finally:
        store.close()


@pytest.fixture(scope="module")
def root_store(bao: OpenBao) -> Iterator[tuple[VaultStore, Counting]]:
    reference = f"ROTATOR_TEST_ROOT_{unique().upper().replace('-', '_')}"
    os.environ[reference] = bao.root_token
    settings = vault_settings(bao.url, {"method": "token", "token": f"env:{reference}"})
    client = Counting(HvacClient(settings))
    store = VaultStore("vault", settings, client=client, keepalive=False)
    yield store, client
    store.close()
    del os.environ[reference]


@examples(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=hostile_paths())
def test_every_hostile_path_is_refused_before_any_request(
    root_store: tuple[VaultStore, Counting], path: str
) -> None:
    store, client = root_store
    client.calls.clear()
    with pytest.raises(StoreError, match=re.escape(PATH_RULE)):
        store.write(path, VIEW, expected_version=None, adopt=True)
    with pytest.raises(StoreError, match=re.escape(PATH_RULE)):
        store.read(path)
    assert client.calls == []


@examples(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=plain_paths("a..b", "a b"))
def test_plain_paths_land_under_the_prefix(
    bao: OpenBao, root_store: tuple[VaultStore, Counting], path: str
) -> None:
    store, _ = root_store
    full = f"{unique()}/{path}"
    store.write(full, VIEW, expected_version=None)
    assert bao.kv_versions(f"rotator/{full}") == 1


def test_the_store_never_reads_vault_token_from_the_environment(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hvac picks up $VAULT_TOKEN and ~/.vault-token by itself; the store must not."""
    monkeypatch.setenv("VAULT_TOKEN", bao.root_token)
    store = token_store(bao, monkeypatch, bao.create_token(["consumer"]))
    try:
        with pytest.raises(StorePermissionError):
            store.write("state/x", VIEW, expected_version=None)
    finally:
        store.close()
    assert httpx.get(f"{bao.url}/v1/sys/health").status_code == 200


def test_a_restarted_persistent_server_keeps_data_and_the_store_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with OpenBao(persistent=True) as server:
        server.write_policy("rotator", DAEMON_POLICY)
        store = token_store(server, monkeypatch, server.create_token(["rotator"]))
        try:
            written = store.write("state/acme", VIEW, expected_version=None)
            server.kill()  # a crash, mid-operation as far as the store knows
            with pytest.raises(StoreUnavailable, match="cannot reach"):
                store.read("state/acme")
            server.start()  # same port, same data, unsealed again
            record = store.read("state/acme")
            assert record is not None
            assert dict(record.data) == VIEW and record.version == written.version
            assert store.write("state/acme", VIEW2, expected_version=record.version).changed
        finally:
            store.close()


def test_a_failed_relogin_keeps_the_still_valid_token(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenBao() as server:
        server.write_policy("rotator", DAEMON_POLICY)
        role = unique("batch")
        role_id, secret_id = server.approle(role, ["rotator"])
        server.call(
            "POST", f"auth/approle/role/{role}", {"token_type": "batch", "token_ttl": "10m"}
        )
        clock = Clock()
        store = approle_store(server, monkeypatch, role_id, secret_id, clock=clock, keepalive=False)
        try:
            store.write("apps/x", VIEW, expected_version=None)
            first = store.auth.token
            assert first is not None
            # the AppRole secret_id is gone: a new login fails, the batch token still works
            server.call(
                "POST", f"auth/approle/role/{role}/secret-id/destroy", {"secret_id": secret_id}
            )
            clock.now += 500
            store.renew_if_due()
            assert store.auth.token is first
            record = store.read("apps/x")
            assert record is not None and dict(record.data) == VIEW
            clock.now += 200  # past its expiry: now the failure is reported
            with pytest.raises(StoreAuthError):
                store.renew_if_due()
        finally:
            store.close()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_with_ca_cert_and_a_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenBao(tls=True) as server:
        server.call("POST", "sys/namespaces/team-a")
        with server.api() as client:  # a KV v2 mount inside the namespace
            client.headers["X-Vault-Namespace"] = "team-a"
            client.post(
                "sys/mounts/secret", json={"type": "kv", "options": {"version": "2"}}
            ).raise_for_status()
        auth = {"method": "token", "token": token_env(monkeypatch, server.root_token)}
        store = VaultStore(
            "vault",
            vault_settings(server.url, auth, namespace="team-a", ca_cert=server.ca_cert),
        )
        try:
            store.write("apps/x", VIEW, expected_version=None)
            with server.api() as client:
                client.headers["X-Vault-Namespace"] = "team-a"
                answer = client.get("secret/data/rotator/apps/x").json()
            assert answer["data"]["data"] == VIEW
            assert server.kv_versions("rotator/apps/x") == 0  # not in the root namespace
        finally:
            store.close()

        untrusted = VaultStore("vault", vault_settings(server.url, auth, namespace="team-a"))
        try:
            with pytest.raises(StoreError, match="set ca_cert") as caught:
                untrusted.read("apps/x")
            assert not caught.value.transient
        finally:
            untrusted.close()

        unverified = VaultStore(
            "vault", vault_settings(server.url, auth, namespace="team-a", verify=False)
        )
        try:
            record = unverified.read("apps/x")  # verify: false is honoured (not advised)
            assert record is not None and dict(record.data) == VIEW
        finally:
            unverified.close()


def test_a_write_at_a_version_we_saw_skips_the_read_and_still_loses_a_moved_cas(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store skips its GET when it last saw the path at the expected version;
    the server's check-and-set still refuses a version someone moved past."""
    settings = vault_settings(
        bao.url, {"method": "token", "token": token_env(monkeypatch, bao.create_token(["rotator"]))}
    )
    client = Counting(HvacClient(settings))
    store = VaultStore("vault", settings, client=client)
    requests = client.calls
    try:
        path = f"apps/{unique()}"
        first = store.write(path, VIEW, expected_version=None)
        requests.clear()
        second = store.write(path, VIEW2, expected_version=first.version)
        assert second.changed and second.version == 2
        assert requests == ["write_data"]  # no read: the version we wrote is the one expected
        assert store.write(path, VIEW2, expected_version=2).changed is False  # a no-op
        other = {**VIEW, "access_token": "another-process"}
        bao.call("POST", f"secret/data/rotator/{path}", {"options": {"cas": 2}, "data": other})
        with pytest.raises(StoreConflict):
            store.write(path, VIEW, expected_version=2)
        record = store.read(path)
        assert record is not None and record.version == 3 and record.data == other
        assert store.write(path, VIEW, expected_version=3).version == 4
        assert bao.kv_versions(f"rotator/{path}") == 4
    finally:
        store.close()


def test_a_create_after_reading_nothing_is_one_call_and_leaves_a_path_made_since_alone(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = token_store(bao, monkeypatch, bao.create_token(["rotator"]))
    try:
        path = f"apps/{unique()}"
        assert store.read(path) is None
        assert store.write(path, VIEW, expected_version=None).version == 1
        assert metadata(bao, path)["custom_metadata"] in (None, {})
        # someone else creates a path between our read and our create: cas=0 loses,
        # and their path is refused and left as it was (tests/backends/test_vault_create.py)
        other = f"apps/{unique()}"
        assert store.read(other) is None
        bao.call("POST", f"secret/data/rotator/{other}", {"data": {"x": "theirs"}})
        with pytest.raises(StoreNotManaged):
            store.write(other, VIEW, expected_version=None)
        assert bao.kv_versions(f"rotator/{other}") == 1
        assert metadata(bao, other)["custom_metadata"] in (None, {})
    finally:
        store.close()


def test_a_listing_names_what_is_there_or_is_none_when_the_policy_refuses_it(
    bao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``present_under`` (the start's one LIST of the state directory): the names of the
    paths there, sub-directories left out; nothing yet is empty; a policy without
    ``list`` answers None, with no new login (a refusal, not a stale token)."""
    bao.write_policy(
        "lister",
        DAEMON_POLICY + 'path "secret/metadata/rotator/*" { capabilities = ["list"] }\n',
    )
    lister = token_store(bao, monkeypatch, bao.create_token(["lister"]))
    plain = token_store(bao, monkeypatch, bao.create_token(["rotator"]))
    try:
        directory = f"state-{unique()}"
        assert lister.present_under(directory) == frozenset()
        for name in ("a", "b", "deeper/c"):
            lister.write(f"{directory}/{name}", {**VIEW, "account": name}, expected_version=None)
        assert lister.present_under(directory) == frozenset({"a", "b"})
        generation = plain.auth.current().generation
        assert plain.present_under(directory) is None
        assert plain.auth.current().generation == generation
    finally:
        lister.close()
        plain.close()
