"""The burst's yardstick: the same token calls and store writes, with no daemon around them.

``python -m bench.baseline --url URL --count N --prefix P --store file|vault ...``
makes, for each of N client ids, one ``client_credentials`` token call and the
writes the daemon makes (``--writes 3``: the lease, the state record, the
consumer view in the sink; ``--writes 2``: without the lease), on a thread
pool of ``--workers`` threads with one pooled HTTP client (the daemon's
concurrency), then exits. It uses rotator's own store classes,
so store cost is the same on both sides; what it leaves out is the daemon:
config, scheduler, reads, logging, bookkeeping.

``--bare`` is the floor of the job, with none of rotator's code: one token call,
one durable state write and one durable sink write per account (a file: temp
file, fsync, rename, fsync of the directory; OpenBao: two KV v2 writes), each
thread with its own HTTP client. Whatever the daemon spends above it is the
design's cost (the lease, locks, ownership markers, reads, the spool) and its
own (config, scheduler, logging).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import httpx

__all__ = ["main"]


def open_store(args: argparse.Namespace, role: str) -> Any:
    if args.store == "file":
        from rotator.backends.file import FileStore

        directory = args.state_dir if role == "state" else args.sink_dir
        return FileStore(role, SimpleNamespace(directory=directory, mode=0o600))
    from rotator.backends.vault.store import VaultStore
    from rotator.config.models import VaultStoreSettings

    settings = VaultStoreSettings.model_validate(
        {
            "type": "vault",
            "url": args.vault_url,
            "prefix": args.vault_prefix,
            "auth": {"method": "token", "token": "env:BENCH_VAULT_TOKEN"},
        }
    )
    return VaultStore(role, settings)


class Bare:
    """The two writes with nothing around them: no lock, no compare, no marker."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.store = args.store
        self.local = threading.local()
        if self.store == "file":
            for directory in (args.state_dir, args.sink_dir):
                os.makedirs(directory, mode=0o700, exist_ok=True)
            self.state_fd = os.open(args.state_dir, os.O_RDONLY | os.O_DIRECTORY)
            self.sink_fd = os.open(args.sink_dir, os.O_RDONLY | os.O_DIRECTORY)
        else:
            self.base = f"{args.vault_url.rstrip('/')}/v1/secret/data/{args.vault_prefix}"
            self.headers = {"X-Vault-Token": os.environ["BENCH_VAULT_TOKEN"]}

    def write(self, role: str, name: str, data: dict[str, str]) -> None:
        body = json.dumps(data, sort_keys=True).encode()
        if self.store == "file":
            dir_fd = self.state_fd if role == "state" else self.sink_fd
            tmp = f".{name}.tmp"
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
            )
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)
            return
        answer = self.client().post(
            f"{self.base}/{role}/{name}", content=b'{"data":' + body + b"}", headers=self.headers
        )
        answer.raise_for_status()

    def client(self) -> httpx.Client:
        """This thread's own client (the daemon gives each worker its own)."""
        client: httpx.Client | None = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = httpx.Client(timeout=30)
        return client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--store", choices=("file", "vault"), required=True)
    parser.add_argument(
        "--writes",
        type=int,
        choices=(2, 3),
        default=3,
        help="3: lease, state, sink (the daemon's writes); 2: state and sink only",
    )
    parser.add_argument(
        "--bare",
        action="store_true",
        help="the floor: raw durable writes of state and sink, no rotator code",
    )
    parser.add_argument("--state-dir")
    parser.add_argument("--sink-dir")
    parser.add_argument("--vault-url")
    parser.add_argument("--vault-prefix", default="")
    args = parser.parse_args(argv)
    secret = os.environ["BENCH_CLIENT_SECRET"]
    bare = Bare(args) if args.bare else None
    state_store = open_store(args, "state") if bare is None else None
    sink_store = state_store if args.store == "vault" or bare else open_store(args, "sink")
    shared = httpx.Client(
        limits=httpx.Limits(
            max_connections=args.workers * 2, max_keepalive_connections=args.workers * 2
        ),
        timeout=30,
    )

    def one(index: int) -> None:
        client_id = f"{args.prefix}{index:05d}"
        client = bare.client() if bare is not None else shared
        expected = None
        if args.writes == 3 and bare is None:
            # the daemon's lease: the state record taken by compare-and-set before the call
            lease = {"lease_owner": "baseline", "lease_until": str(time.time() + 60)}
            expected = state_store.write(f"state/{client_id}", lease, expected_version=None).version
        auth = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        answer = client.post(
            args.url,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {auth}"},
        )
        answer.raise_for_status()
        body = answer.json()
        issued = time.time()
        state = {
            "access_token": body["access_token"],
            "issued_at": str(issued),
            "expires_at": str(issued + float(body["expires_in"])),
        }
        view = {
            "access_token": body["access_token"],
            "token_type": body["token_type"],
            "expires_at": state["expires_at"],
            "account": client_id,
        }
        if bare is not None:
            bare.write("state", client_id, state)
            bare.write("sinks", f"{client_id}.json" if args.store == "file" else client_id, view)
            return
        sink = f"sinks/{client_id}" if args.store == "vault" else f"{client_id}.json"
        state_store.write(f"state/{client_id}", state, expected_version=expected)
        sink_store.write(sink, view, expected_version=None)

    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for future in [pool.submit(one, i) for i in range(args.count)]:
            future.result()
    shared.close()
    print(json.dumps({"done": args.count}), flush=True)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown, as the daemon's measurement ends at its last write


if __name__ == "__main__":
    raise SystemExit(main())
