"""The command line: run | check | status | refresh | import | authorize | demo (and more).

Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.
Everything heavy (pydantic, httpx, APScheduler, store SDKs) is imported inside
the command that needs it, so ``rotator --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rotator.config.models import Config
    from rotator.rotation.rotator import Rotator

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage that argparse could not catch (exit 2)."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="configuration file (default: $ROTATOR_CONFIG, else /etc/rotator/rotator.yaml)",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="log lines as JSON or for people (default: JSON unless a terminal)",
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info"
    )


def build_parser() -> argparse.ArgumentParser:
    from rotator import __version__

    parser = argparse.ArgumentParser(
        prog="rotator",
        description="Keeps API access tokens fresh and publishes them to Vault, "
        "AWS Secrets Manager or files.",
    )
    parser.add_argument("--version", action="version", version=f"rotator {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run the daemon")
    _common(p)
    p = sub.add_parser("check", help="validate the configuration")
    _common(p)
    p.add_argument(
        "--online",
        action="store_true",
        help="also resolve every secret reference and validate every store",
    )
    p = sub.add_parser("status", help="every account's expiries, last success and last error")
    _common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("refresh", help="rotate one account now")
    _common(p)
    p.add_argument("account")
    p.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long to wait for another worker's lease (default: the lease TTL)",
    )
    p = sub.add_parser("import", help="seed a refresh token into an account's state")
    _common(p)
    p.add_argument("account")
    p.add_argument("--file", metavar="F", help="read the refresh token from F (default: stdin)")
    p.add_argument(
        "--authorized-at",
        metavar="TIME",
        help="when the grant was authorized (ISO 8601, UTC); starts the 30-day clock of "
        "Fax.Plus enhanced-security tokens",
    )
    p = sub.add_parser("authorize", help="OAuth2 authorization-code bootstrap (Fax.Plus)")
    _common(p)
    p.add_argument("account")
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--code",
        metavar="CODE",
        help="the code, or the whole redirect address, pasted from the browser",
    )
    how.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="catch the redirect here (default: the loopback redirect_uri)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the GET /accounts/self check of the new token",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long to wait for the redirect (default: 300)",
    )
    p = sub.add_parser(
        "faxmax-login-url", help="print a FaxMAX passwordless web login URL (valid for 3 seconds)"
    )
    _common(p)
    p.add_argument("account")
    p.add_argument("--user", required=True, help="the FaxMAX user to sign in")
    p.add_argument(
        "--remote-ip",
        required=True,
        metavar="IP",
        help="the IP address the user's browser comes from",
    )
    p.add_argument("--page", default="inboxes", help="the web app page (default: inboxes)")
    p = sub.add_parser("demo", help="run the daemon on an embedded local sandbox")
    p.add_argument(
        "--directory",
        default="rotator-demo",
        help="where the demo writes its config and token files (default: ./rotator-demo)",
    )
    p.add_argument(
        "--lifetime",
        type=float,
        default=20.0,
        help="access token lifetime in seconds (default: 20)",
    )
    p.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    for extra in _EXTRA_PARSERS:
        extra(sub)
    return parser


# Vendor modules add their commands here: (add_parser, handler) pairs.
_EXTRA_PARSERS: list[Callable[[Any], None]] = []
_EXTRA_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from rotator.errors import ConfigError, RotatorError
    from rotator.service.logs import configure_logging

    configure_logging(fmt=args.log_format, level=args.log_level)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": cmd_run,
        "check": cmd_check,
        "status": cmd_status,
        "refresh": cmd_refresh,
        "import": cmd_import,
        "demo": cmd_demo,
        "authorize": cmd_authorize,
        "faxmax-login-url": cmd_faxmax_login_url,
        **_EXTRA_HANDLERS,
    }
    try:
        return handlers[args.command](args)
    except (ConfigError, UsageError) as exc:
        print(
            f"rotator: config: {exc}" if isinstance(exc, ConfigError) else f"rotator: {exc}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except RotatorError as exc:
        print(f"rotator: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def _load(args: argparse.Namespace) -> Config:
    from rotator.config.models import config_path, load_config

    return load_config(config_path(args.config))


def _rotator(config: Config, *, spool: bool = True) -> Rotator:
    from rotator.http import HttpClients
    from rotator.rotation.accounts import build_accounts
    from rotator.rotation.rotator import Rotator
    from rotator.service.app import open_spool, open_stores

    stores = open_stores(config)
    return Rotator(
        accounts=build_accounts(config, stores),
        http=HttpClients(max_connections=4),
        spool=open_spool(config) if spool else None,
    )


def _account(config: Config, name: str) -> None:
    if name not in config.accounts:
        known = ", ".join(sorted(config.accounts)) or "none"
        raise UsageError(f"no account {name!r} in {config.source} (accounts: {known})")


# --- commands ---------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from rotator.config.models import config_path
    from rotator.service.daemon import Daemon

    return Daemon(config_path(args.config)).run_forever()


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    print(
        f"{config.source}: configuration OK: {len(config.accounts)} accounts, "
        f"{len(config.stores)} stores"
    )
    if not args.online:
        return EXIT_OK
    from rotator.commands.online import check_online

    return check_online(config)


def cmd_status(args: argparse.Namespace) -> int:
    from rotator.errors import StoreError
    from rotator.state import describe

    config = _load(args)
    rotator = _rotator(config, spool=False)  # status only reads
    states = []
    problems: list[str] = []
    for name, account in rotator.accounts.items():
        try:
            state, _ = rotator.read_state(account)
        except StoreError as exc:
            problems.append(f"{name}: {exc}")
            continue
        states.append(state)
    rows = describe(states)
    if args.json:
        print(json.dumps({"accounts": rows, "errors": problems}, indent=2))
    else:
        _print_table(rows)
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
    return EXIT_FAILURE if problems else EXIT_OK


def _print_table(rows: list[dict[str, Any]]) -> None:
    headers = (
        "ACCOUNT",
        "PROVIDER",
        "STATE",
        "ACCESS EXPIRES",
        "REFRESH EXPIRES",
        "LAST SUCCESS",
        "NEXT REFRESH",
        "LAST ERROR",
    )
    table = []
    for row in rows:
        if row["failed"]:
            health = "FAILED"
        elif row["consecutive_failures"]:
            health = f"RETRYING({row['consecutive_failures']})"
        elif row["access_token_expires_at"]:
            health = "OK"
        else:
            health = "NO TOKEN"
        table.append(
            (
                row["account"],
                row["provider"] or "-",
                health,
                row["access_token_expires_at"] or "-",
                row["refresh_token_expires_at"] or ("never" if row["has_refresh_token"] else "-"),
                row["last_success_at"] or "-",
                row["next_refresh_at"] or "-",
                (row["last_error"] or "")[:80],
            )
        )
    widths = [max(len(str(r[i])) for r in [headers, *table]) for i in range(len(headers))]
    for line in [headers, *table]:
        print(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)
            ).rstrip()
        )


def cmd_refresh(args: argparse.Namespace) -> int:
    import time

    from rotator.rotation.rotator import Outcome

    config = _load(args)
    _account(config, args.account)
    rotator = _rotator(config)
    wait = (
        args.wait
        if args.wait is not None
        else config.accounts[args.account].lease_ttl.total_seconds()
    )
    deadline = time.monotonic() + wait
    while True:
        result = rotator.rotate(args.account, force=True)
        if result.result != Outcome.BUSY or time.monotonic() >= deadline:
            break
        rotator.waiter.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
    rotator.http.close()
    state = result.state
    if result.result == Outcome.SUCCESS and state is not None and state.expires_at:
        from rotator.tokens import format_time

        print(
            f"{args.account}: rotated; access token expires {format_time(state.expires_at)}; "
            f"sinks written {result.sinks_written}, unchanged {result.sinks_unchanged}, "
            f"failed {result.sinks_failed}"
        )
        return EXIT_FAILURE if result.sinks_failed else EXIT_OK
    if result.result == Outcome.ADOPTED:
        print(f"{args.account}: another worker had just rotated; its token is current")
        return EXIT_OK
    if result.result == Outcome.BUSY:
        print(f"{args.account}: another worker holds the lease; try again later", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{args.account}: {result.result}: {result.error}", file=sys.stderr)
    return EXIT_FAILURE


def cmd_import(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rotator.errors import StoreConflict
    from rotator.rotation.rotator import utc_now
    from rotator.secrets import Secret

    config = _load(args)
    _account(config, args.account)
    if args.file:
        try:
            with open(args.file, encoding="utf-8") as handle:
                raw = handle.read()
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    else:
        if sys.stdin.isatty():
            print("paste the refresh token, then press Enter and Ctrl-D:", file=sys.stderr)
        raw = sys.stdin.read()
    token = raw.strip()
    if not token or any(c.isspace() for c in token):
        raise UsageError("the refresh token must be one non-empty line without spaces")
    authorized_at = None
    if args.authorized_at:
        from rotator.tokens import parse_time

        try:
            authorized_at = parse_time(args.authorized_at)
        except ValueError:
            raise UsageError(
                f"--authorized-at {args.authorized_at!r} is not an ISO 8601 time "
                "(e.g. 2026-11-20T10:00:00Z)"
            ) from None
    rotator = _rotator(config)
    account = rotator.accounts[args.account]
    for _ in range(5):
        state, version = rotator.read_state(account)
        if state.lease_held_by_other("import", utc_now()):
            print(
                f"{args.account}: a worker is rotating it right now; try again in a moment",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        seeded = replace(
            state,
            provider=account.settings.provider,
            authorized_at=authorized_at,
            refresh_token=Secret(token),
            refresh_expires_at=None,
            access_token=None,
            issued_at=None,
            expires_at=None,
            next_refresh_at=None,
            failed=False,
            consecutive_failures=0,
            last_error="",
            last_error_code="",
        )
        try:
            account.state_store.write(
                account.state_path, seeded.to_record(), expected_version=version
            )
        except StoreConflict:
            continue
        from rotator.config.models import state_store

        where = f"{state_store(config, args.account)}:{account.state_path}"
        print(
            f"{args.account}: refresh token imported into {where}; the daemon refreshes it "
            f"at its next look (or now: rotator refresh {args.account})"
        )
        return EXIT_OK
    print(f"{args.account}: the state kept changing; try again", file=sys.stderr)
    return EXIT_FAILURE


def cmd_authorize(args: argparse.Namespace) -> int:
    from rotator.commands.authorize import authorize

    config = _load(args)
    _account(config, args.account)
    return authorize(
        config,
        args.account,
        code=args.code,
        listen=args.listen,
        verify=not args.no_verify,
        timeout=args.timeout,
    )


def cmd_faxmax_login_url(args: argparse.Namespace) -> int:
    from rotator.providers.faxmax.provider import faxmax_login_url

    config = _load(args)
    _account(config, args.account)
    print(
        faxmax_login_url(
            config, args.account, user=args.user, remote_ip=args.remote_ip, page=args.page
        ),
        flush=True,
    )
    print("valid for 3 seconds: open it now", file=sys.stderr)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from rotator.demo.run import run_demo

    return run_demo(directory=args.directory, lifetime=args.lifetime)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
