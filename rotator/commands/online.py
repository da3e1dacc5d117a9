"""``rotator check --online``: resolve every secret reference, validate every store, log in.

What a store answers is printed through :func:`~rotator.commands.terminal.printable`:
it is the store's text, not ours, and reaches the operator's terminal.

A FaxMAX account is logged in once as its configuration says (a login spends
nothing: no grant is rotated, the session token is dropped), so a wrong cipher,
transport or login method is found before the daemon starts; ``rotator probe``
then finds the right one. Other providers are not called: their token calls
spend a grant or mint tokens (``rotator probe`` says what can be checked).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from rotator.backends.base import ValidationStatus
from rotator.backends.registry import open_store
from rotator.commands.terminal import printable
from rotator.config.models import Config, state_store
from rotator.errors import RotatorError, SecretRefError, scrub_values
from rotator.secrets import SecretRef, resolve

__all__ = ["check_online", "secret_refs"]


def secret_refs(value: Any, path: str = "") -> list[tuple[str, SecretRef]]:
    """Every secret reference in a validated configuration, with its key path."""
    found: list[tuple[str, SecretRef]] = []
    if isinstance(value, SecretRef):
        found.append((path, value))
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            found += secret_refs(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, dict):
        for key, item in value.items():
            found += secret_refs(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found += secret_refs(item, f"{path}[{index}]")
    return found


def _probe_paths(config: Config) -> dict[str, str]:
    """One path per store to check permissions on: a state or sink path it will hold."""
    probes: dict[str, str] = {}
    for name, account in config.accounts.items():
        probes.setdefault(state_store(config, name), account.state_path(name))
        for sink in account.sinks:
            probes.setdefault(sink.store, sink.path)
    return probes


def check_online(config: Config) -> int:
    """Print one line per secret reference problem and per store; 1 if anything is broken."""
    broken = 0
    refs = secret_refs(config)
    for path, ref in refs:
        try:
            resolve(ref)
        except SecretRefError as exc:
            broken += 1
            print(f"{path}: ERROR {printable(str(exc))}")
    print(f"secret references: {len(refs) - broken} of {len(refs)} resolve")
    probes = _probe_paths(config)
    for name, settings in config.stores.items():
        try:
            store = open_store(name, settings)
            try:
                validation = store.validate(probes.get(name))
            finally:
                store.close()
        except RotatorError as exc:
            print(f"store {name}: ERROR {printable(str(exc))}")
            broken += 1
            continue
        reason = printable(validation.reason)  # the store's own words
        print(f"store {name}: {validation.status.value} {reason}".rstrip())
        if validation.status is ValidationStatus.ERROR:
            broken += 1
    broken += _faxmax_logins(config)
    if config.server.coordination is not None:
        from rotator.service.coordination_backend import check_backend

        ok, said = check_backend(config.server.coordination)
        print(f"coordination: {'OK' if ok else 'ERROR'} {printable(said)}")
        broken += 0 if ok else 1
    return 1 if broken else 0


def _faxmax_logins(config: Config) -> int:
    """Log every FaxMAX account in once, as configured; how many failed."""
    from datetime import UTC, datetime

    from rotator.http import HttpClients
    from rotator.providers.faxmax.clock import RunClock
    from rotator.providers.faxmax.provider import FaxmaxProvider, FaxmaxSettings

    failed = 0
    http = HttpClients()
    try:
        for name, settings in config.accounts.items():
            if not isinstance(settings, FaxmaxSettings):
                continue
            provider = FaxmaxProvider(name, settings)
            how = (
                f"Core.login, {settings.transport}"
                if settings.password is not None
                else f"{settings.login_method}, {settings.transport}, {settings.cipher}"
            )
            known: tuple[str, ...] = ()
            try:
                known = provider.secrets()
                client = http.get(verify=settings.tls_verify, ca_bundle=settings.ca_bundle)
                provider.login(client, RunClock(datetime.now(UTC)), known)
            except SecretRefError:
                print(f"account {name}: faxmax login not tried (a secret reference above fails)")
                failed += 1
            except RotatorError as exc:
                said = printable(scrub_values(str(exc), known))
                print(
                    f"account {name}: faxmax login ERROR ({how}) {said}; "
                    f"`rotator probe {name}` tries every cipher, transport and login method"
                )
                failed += 1
            else:
                print(f"account {name}: faxmax login OK ({how}); the session token is dropped")
    finally:
        http.close()
    return failed
