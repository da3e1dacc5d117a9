"""The wiring: one place builds the parts; a reload that fails for any reason changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.service import heap
from rotator.service.app import Service, build_service, rewire
from rotator.service.daemon import ReloadRefused
from tests.support import leakcheck
from tests.support.proc import run_rotator

SECRET = leakcheck.register("app-wiring-client-secret-0815", "client secret")


def write_config(tmp: Path) -> Path:
    secret_file = tmp / "client-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    path = tmp / "rotator.yaml"
    path.write_text(
        "\n".join(
            [
                f"server: {{workers: 2, shutdown_grace: 1s, spool_dir: {tmp / 'spool'}}}",
                "stores:",
                f"  files: {{type: file, directory: {tmp / 'out'}}}",
                "accounts:",
                "  alpha:",
                "    provider: oauth2",
                "    token_url: http://127.0.0.1:9/token",
                "    client_id: app",
                f"    client_secret: file:{secret_file}",
                "    sinks: [{store: files, path: alpha.json}]",
            ]
        )
        + "\n"
    )
    return path


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    built = build_service(str(write_config(tmp_path)))
    yield built
    built.daemon.stop("test")


def test_build_service_hooks_the_monitor_into_the_daemon(service: Service) -> None:
    daemon, monitor = service.daemon, service.monitor
    assert monitor in daemon.rotator.observers
    assert daemon.hooks_on_start == [monitor.on_start]
    assert daemon.hooks_before_reload == [monitor.before_reload]
    assert daemon.hooks_after_reload == [monitor.after_reload]
    assert daemon.hooks_on_stop == [monitor.on_stop]
    assert set(daemon.accounts) == {"alpha"}
    assert daemon.reload() is True  # the same file: applied, stores kept


HOSTILE: dict[str, str | bytes] = {
    "infinite timeout": "accounts:\n  alpha:\n    provider: oauth2\n    timeout: .inf\n",
    "huge duration": "server: {shutdown_grace: 99999999999999999999999999d}\n",
    "huge workers": "server: {workers: 1" + "0" * 4000 + "}\n",
    "deep nesting": "server: " + "[" * 5000 + "]" * 5000 + "\n",
    "binary garbage": bytes(range(256)) * 8,
    "unknown store": "accounts:\n  alpha: {provider: oauth2, sinks: [{store: nope, path: x}]}\n",
}


def assert_refused_and_unchanged(service: Service, path: Path, content: str | bytes) -> None:
    daemon = service.daemon
    before = (daemon.config, dict(daemon.stores), dict(daemon.accounts))
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert daemon.reload() is False
    assert (daemon.config, dict(daemon.stores), dict(daemon.accounts)) == before


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_file_is_refused_and_the_running_configuration_stays(
    service: Service, name: str
) -> None:
    path = Path(service.daemon.config_path)
    assert_refused_and_unchanged(service, path, HOSTILE[name])
    with pytest.raises(ReloadRefused) as refused:
        rewire(str(path), service.daemon.config, service.daemon.stores)
    reason = str(refused.value)
    assert reason and len(reason) <= 300 and "\n" not in reason


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.one_of(
        st.binary(max_size=2000),
        st.text(max_size=2000),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=10), inner, max_size=4)
            ),
            max_leaves=30,
        ).map(lambda value: f"server: {value!r}\naccounts: {value!r}\n"),
    )
)
def test_whatever_the_file_holds_a_failed_reload_changes_nothing(
    service: Service, monkeypatch: pytest.MonkeyPatch, content: str | bytes
) -> None:
    # Each example ends with a good reload, and a good reload re-freezes the heap: a full
    # collection of the whole test process (a third of a second at the end of a suite,
    # 20 s over the examples). The collector's bookkeeping is not what this proves
    # (tests/service/test_heap.py does), a refused reload changing nothing is.
    monkeypatch.setattr(heap, "refreeze", lambda: None)
    path = Path(service.daemon.config_path)
    good = path.read_bytes()
    try:
        daemon = service.daemon
        before = (daemon.config, dict(daemon.stores), dict(daemon.accounts))
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogateescape")
        if not daemon.reload():
            assert (daemon.config, dict(daemon.stores), dict(daemon.accounts)) == before
    finally:
        path.write_bytes(good)
        assert service.daemon.reload() is True


def test_a_vanished_file_or_a_directory_is_refused(service: Service) -> None:
    path = Path(service.daemon.config_path)
    good = path.read_bytes()
    path.unlink()
    assert service.daemon.reload() is False
    path.mkdir()
    assert service.daemon.reload() is False
    path.rmdir()
    path.write_bytes(good)
    assert service.daemon.reload() is True


def test_a_refusal_reason_holds_no_known_secret_and_is_bounded(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any exception text that echoes a secret the running configuration knows is scrubbed."""
    from rotator.service import app

    for error in (
        ValueError(f"bad value {SECRET!r} at line 3\nand more"),
        OverflowError(SECRET * 100),
        RuntimeError("x" * 10_000),
    ):

        def failing(_path: str, error: Exception = error) -> object:
            raise error

        monkeypatch.setattr(app, "load_config", failing)
        with pytest.raises(ReloadRefused) as refused:
            rewire(service.daemon.config_path, service.daemon.config, service.daemon.stores)
        reason = str(refused.value)
        assert SECRET not in reason and len(reason) <= 300 and "\n" not in reason
        assert reason.startswith(type(error).__name__)


def test_run_makes_the_process_not_dumpable() -> None:
    """Checked inside a real ``python -m rotator`` process (as root, /proc hides nothing)."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['rotator', 'check', '-c', '/nonexistent/rotator.yaml']\n"
        "import rotator.coredump as c\n"
        "import atexit\n"
        "atexit.register(lambda: print('forbidden', c.core_dumps_forbidden()))\n"
        "runpy.run_module('rotator', run_name='__main__')\n"
    )
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert "forbidden True" in done.stdout, done.stderr
    assert run_rotator(["--version"]).returncode == 0


def test_a_failing_lifecycle_hook_ends_neither_a_reload_nor_a_stop(service: Service) -> None:
    daemon = service.daemon
    ran: list[str] = []

    def broken() -> None:
        ran.append("broken")
        raise RuntimeError("a hook broke")

    for hooks in (daemon.hooks_before_reload, daemon.hooks_on_reload, daemon.hooks_after_reload):
        hooks.insert(0, broken)
    daemon.hooks_on_stop.insert(0, broken)
    assert daemon.reload() is True
    assert ran == ["broken"] * 3
    assert daemon.stop("test") is True
    assert ran == ["broken"] * 4
    assert daemon.stopping.is_set()


def test_forbidding_core_dumps_changes_a_dumpable_process() -> None:
    """The check is not vacuous: a fresh process is dumpable, and forbidding changes that."""
    import subprocess
    import sys

    code = (
        "import resource\n"
        "import rotator.coredump as c\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_CORE)\n"
        "if hard != 0:\n"
        "    resource.setrlimit(resource.RLIMIT_CORE, (min(hard, 1 << 20), hard))\n"
        "print(c.core_dumps_forbidden())\n"
        "c.forbid_core_dumps()\n"
        "c.forbid_core_dumps()  # idempotent\n"
        "print(c.core_dumps_forbidden(), resource.getrlimit(resource.RLIMIT_CORE))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["False", "True (0, 0)"]


def test_a_reload_keeps_the_accounts_built_and_changes_only_the_changed(
    service: Service,
) -> None:
    """Accounts are built at their first use (rotation/accounts.py): a reload before
    some were built keeps the objects built, and an account not built yet whose
    settings are unchanged is not "changed" (it would be rotated at once)."""
    daemon = service.daemon
    path = Path(daemon.config_path)
    text = path.read_text()
    more = "\n".join(
        f"  {name}: {{provider: oauth2, token_url: 'http://127.0.0.1:9/token', client_id: {name},"
        f" client_auth: none, sinks: [{{store: files, path: {name}.json}}]}}"
        for name in ("beta", "gamma")
    )
    path.write_text(text + more + "\n")
    first = rewire(str(path), daemon.config, daemon.stores, running_accounts=daemon.accounts)
    assert first.changed == () and first.accounts.get("alpha") is not None
    alpha = first.accounts["alpha"]  # built; beta and gamma not yet
    path.write_text(text + more.replace("client_id: gamma", "client_id: other") + "\n")
    second = rewire(str(path), first.config, first.stores, running_accounts=first.accounts)
    assert second.changed == ("gamma",)
    assert second.accounts["alpha"] is alpha
    assert list(second.accounts) == ["alpha", "beta", "gamma"]
    assert second.accounts["gamma"].settings.client_id == "other"
