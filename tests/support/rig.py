"""The fault-injection rig of the guarantee proofs (tests/test_*_proof.py).

A :class:`Rig` writes a daemon configuration under a test's ``tmp_path``
(state in files or in OpenBao, sinks in files, the spool under ``tmp_path``),
seeds grants issued by the OAuth2 emulator, and reads back what the state store,
the spool and the sinks hold, so every proof can check the one invariant that
matters: the grant is alive, and what rotator keeps is its current refresh token.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rotator.backends.base import SecretStore
from rotator.config import Config, load_config
from rotator.rotation.accounts import build_accounts
from rotator.secrets import Secret
from rotator.service.app import open_spool, open_stores
from rotator.state import AccountState
from tests.fakes.oauth2 import OAuth2Emulator
from tests.support import leakcheck
from tests.support.servers import OpenBao

__all__ = ["CLIENT_ID", "PROOF_COUNTS", "SECRET", "Rig", "report"]

CLIENT_ID = "app"
SECRET = leakcheck.register("s3cr3t-p+ss:w/rd%-proofs", "client secret")
VAULT_TOKEN_ENV = "ROTATOR_PROOF_VAULT_TOKEN"

#: what each proof reached; printed under "proof counts" at the end of the run
PROOF_COUNTS: list[str] = []


def report(line: str) -> None:
    PROOF_COUNTS.append(line.strip())
    print(line)


@dataclass
class Rig:
    tmp: Path
    server: OAuth2Emulator
    accounts: tuple[str, ...] = ("a0",)
    #: where the state lives: "file", or an OpenBao server
    bao: OpenBao | None = None
    #: extra account keys (YAML lines, indented under each account)
    account_extra: tuple[str, ...] = ()
    #: extra `server:` keys, e.g. "shutdown_grace: 5s"
    server_extra: str = ""
    #: extra stores (YAML lines under `stores:`) and sinks (YAML flow mappings)
    stores_extra: tuple[str, ...] = ()
    sinks_extra: tuple[str, ...] = ()
    defaults: Mapping[str, str] = field(
        default_factory=lambda: {
            "refresh_share": "0.5",
            "jitter": "0.1",
            "retry_initial": "1s",
            "retry_max": "2s",
            "timeout": "5s",
            "lease_ttl": "10s",
        }
    )
    token_url: str = ""

    def __post_init__(self) -> None:
        self.config_path = self.tmp / "rotator.yaml"
        self.out = self.tmp / "out"
        self.write()

    # -- configuration -----------------------------------------------------------------

    @property
    def state_kind(self) -> str:
        return "vault" if self.bao is not None else "file"

    @property
    def env(self) -> dict[str, str]:
        return {VAULT_TOKEN_ENV: self.bao.root_token} if self.bao is not None else {}

    def write(self) -> Path:
        secret_file = self.tmp / "client-secret"
        secret_file.write_text(SECRET + "\n")
        secret_file.chmod(0o600)
        server = f"workers: 4, shutdown_grace: 5s, spool_dir: {self.tmp / 'spool'}"
        if self.server_extra:
            server += ", " + self.server_extra
        lines = [
            f"server: {{{server}}}",
            "stores:",
            f"  files: {{type: file, directory: {self.out}}}",
        ]
        if self.bao is not None:
            lines.append(
                f"  state: {{type: vault, url: {self.bao.url}, prefix: rotator, "
                f"auth: {{method: token, token: 'env:{VAULT_TOKEN_ENV}'}}}}"
            )
        else:
            lines.append(f"  state: {{type: file, directory: {self.tmp / 'state'}}}")
        lines += [f"  {line}" for line in self.stores_extra]
        # the emulator's tokens live seconds: below the production floor
        lines += ["defaults:", "  state: {store: state}", "  min_lifetime: 1s"]
        lines += [f"  {key}: {value}" for key, value in self.defaults.items()]
        lines.append("accounts:")
        for name in self.accounts:
            lines += [
                f"  {name}:",
                "    provider: oauth2",
                f"    token_url: {self.token_url or self.server.url}",
                f"    client_id: {CLIENT_ID}",
                f"    client_secret: file:{secret_file}",
                *(f"    {line}" for line in self.account_extra),
                "    sinks:",
                # extra sinks first: a broken one must not keep the token file stale
                *(f"      - {sink.format(name=name)}" for sink in self.sinks_extra),
                f"      - {{store: files, path: {name}.token, format: token}}",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")
        return self.config_path

    @contextmanager
    def opened(self) -> Iterator[tuple[Config, dict[str, SecretStore]]]:
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        config = load_config(str(self.config_path))
        stores = open_stores(config)
        try:
            yield config, stores
        finally:
            for store in stores.values():
                store.close()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    # -- grants, state, spool, sinks -----------------------------------------------------

    def seed_all(self) -> None:
        """A fresh grant per account, written into the state as `rotator import` does."""
        with self.opened() as (config, stores):
            for name, account in build_accounts(config, stores).items():
                refresh = self.server.issue_grant(CLIENT_ID)
                record = account.state_store.read(account.state_path)
                state = AccountState(account=name, provider="oauth2", refresh_token=Secret(refresh))
                account.state_store.write(
                    account.state_path,
                    state.to_record(),
                    expected_version=record.version if record else None,
                )

    def states(self) -> dict[str, AccountState]:
        with self.opened() as (config, stores):
            out = {}
            for name, account in build_accounts(config, stores).items():
                record = account.state_store.read(account.state_path)
                assert record is not None, f"{name}: no state"
                out[name] = AccountState.from_record(name, record.data)
            return out

    def spooled(self) -> dict[str, AccountState]:
        """What the local spool holds, by account (crash leftovers)."""
        with self.opened() as (config, stores):
            spool = open_spool(config)
            by_key = {a.spool_key: n for n, a in build_accounts(config, stores).items()}
            return {
                by_key[entry.key]: AccountState.from_record(by_key[entry.key], entry.record)
                for entry in spool.entries()
                if entry.key in by_key
            }

    def sink_token(self, name: str) -> str | None:
        path = self.out / f"{name}.token"
        return path.read_text().strip() if path.exists() else None

    def rotations(self) -> int:
        return sum(grant.refreshes for grant in self.server.grants.values())

    def grants_landed(self) -> bool:
        """Every state holds its grant's current refresh token: the daemon's last
        rotations are written (a test that kills it must wait for this first, or find
        a new grant still on its way from the vendor's answer to the state)."""
        for state in self.states().values():
            token = state.refresh_token
            grant = self.server.grant_for(token.reveal()) if token is not None else None
            if grant is None or grant.current_refresh != token.reveal():  # type: ignore[union-attr]
                return False
        return True

    def assert_grants_alive(self) -> None:
        """Every grant alive and the state holding its current refresh token."""
        states = self.states()
        for name, state in states.items():
            assert state.refresh_token is not None, f"{name}: no refresh token in the state"
            grant = self.server.grant_for(state.refresh_token.reveal())
            assert grant is not None, f"{name}: the state's refresh token is unknown"
            assert not grant.revoked, f"{name}: grant revoked"
            assert grant.current_refresh == state.refresh_token.reveal(), (
                f"{name}: the state holds a spent refresh token"
            )
