"""The command line: run | check | status | refresh | import | authorize | probe | demo (and more).

Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.
Everything heavy (pydantic, httpx, APScheduler, store SDKs) is imported inside
the command that needs it, so ``rotator --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rotator.commands.common import UsageError, load, require_account

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "UsageError", "build_parser", "main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


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
    p = sub.add_parser(
        "authorize", help="OAuth2 authorization-code bootstrap (faxplus, oauth2 with authorize_url)"
    )
    _common(p)
    p.add_argument("account")
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--code",
        metavar="CODE",
        help="the code, or the whole redirect address, pasted from the browser; "
        "'-' reads it from standard input (keeps it out of ps and shell history)",
    )
    how.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="catch the redirect here (default: the loopback redirect_uri); a non-loopback "
        "address is reachable from other machines and draws a warning",
    )
    how.add_argument(
        "--link",
        action="store_true",
        help="print a signed one-time console link instead (needs server.console)",
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
        "probe",
        help="what the vendor accepts, spending nothing (FaxMAX: cipher, transport, login)",
    )
    _common(p)
    p.add_argument("account")
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
    # Every command handles secrets: no core file may ever hold them. The core limit is
    # set before anything else; the process is made not dumpable (ctypes, a few ms) once
    # the arguments name a command, not for --help (the daemon checks both and logs it).
    from rotator.coredump import forbid_core_dumps, limit_core_size

    limit_core_size()
    parser = build_parser()
    args = parser.parse_args(argv)
    forbid_core_dumps()
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
        "probe": cmd_probe,
        **_EXTRA_HANDLERS,
    }
    try:
        return handlers[args.command](args)
    except (ConfigError, UsageError) as exc:
        prefix = "rotator: config: " if isinstance(exc, ConfigError) else "rotator: "
        _refuse(prefix + str(exc), several=isinstance(exc, ConfigError))
        return EXIT_USAGE
    except RotatorError as exc:
        _refuse(f"rotator: {exc}")  # may carry a vendor's or a store's text
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def _refuse(message: str, *, several: bool = False) -> None:
    from rotator.commands.terminal import fit, printable

    # a configuration refused for several problems: one line each ("\n  also ..."),
    # the only line break kept; every other control character is shown escaped
    parts = message.split(_ALSO) if several else [message]
    lines = (fit(printable(line), sys.stderr) for line in parts)
    print(_ALSO.join(lines), file=sys.stderr)


_ALSO = "\n  also "


# --- commands: each parses nothing and decides nothing; rotator/commands/ does the work -----


def cmd_run(args: argparse.Namespace) -> int:
    from rotator.config import config_path
    from rotator.service.app import build_daemon

    return build_daemon(config_path(args.config)).run_forever()


def cmd_check(args: argparse.Namespace) -> int:
    from rotator.commands.check import check

    return check(load(args.config), online=args.online)


def cmd_status(args: argparse.Namespace) -> int:
    from rotator.commands.status import status

    return status(load(args.config), as_json=args.json)


def cmd_refresh(args: argparse.Namespace) -> int:
    from rotator.commands.refresh import refresh

    if args.wait is not None and args.wait < 0:
        raise UsageError(f"--wait {args.wait:g} is negative; give SECONDS >= 0 (e.g. --wait 30)")
    config = load(args.config)
    require_account(config, args.account)
    return refresh(config, args.account, wait=args.wait)


def cmd_import(args: argparse.Namespace) -> int:
    from rotator.commands.seed import parse_authorized_at, read_token, seed

    authorized_at = parse_authorized_at(args.authorized_at)
    config = load(args.config)
    require_account(config, args.account)
    return seed(config, args.account, read_token(args.file), authorized_at=authorized_at)


def cmd_authorize(args: argparse.Namespace) -> int:
    from rotator.commands.authorize import authorize
    from rotator.commands.callback import read_code

    if args.timeout <= 0:
        raise UsageError(
            f"--timeout {args.timeout:g} is not positive; give SECONDS > 0 (e.g. --timeout 300)"
        )
    config = load(args.config)
    require_account(config, args.account)
    if args.link:
        from rotator.commands.link import print_link

        return print_link(config, args.account)
    return authorize(
        config,
        args.account,
        code=read_code(args.code) if args.code is not None else None,
        listen=args.listen,
        verify=not args.no_verify,
        timeout=args.timeout,
    )


def cmd_faxmax_login_url(args: argparse.Namespace) -> int:
    from rotator.commands.faxmax import login_url

    config = load(args.config)
    require_account(config, args.account)
    return login_url(config, args.account, user=args.user, remote_ip=args.remote_ip, page=args.page)


def cmd_probe(args: argparse.Namespace) -> int:
    from rotator.commands.probe import probe

    config = load(args.config)
    require_account(config, args.account)
    return probe(config, args.account)


def cmd_demo(args: argparse.Namespace) -> int:
    from rotator.demo.run import run_demo

    if args.lifetime <= 0:
        raise UsageError(
            f"--lifetime {args.lifetime:g} is not positive; give SECONDS > 0 (e.g. --lifetime 20)"
        )
    return run_demo(directory=args.directory, lifetime=args.lifetime)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
