"""docs/first-account.md, run as printed and in order, against a real OpenBao.

A newcomer follows the page from an empty OpenBao to a token a consumer reads:
the shell blocks run in bash (each in a fresh shell that keeps the ``export``
lines of the blocks before it, as one terminal would), the policies and the
configuration are written where the page says, and the OAuth2 server is the
strict emulator. Placeholders are swapped by tests/support/docs.py's
``substitute`` only: the OpenBao and vendor addresses, ``/etc/rotator``, and
the two loopback ports (another test may hold 9464 or 8765).

The daemon logs in with a token made by the page's own commands under exactly
the page's policy, and the consumer reads with the page's read-only policy and
is refused the state. Two steps are not run: the install blocks would build
rotator from this checkout into /opt (pip) and need a container runtime
(docker); the shell's ``rotator`` is this checkout's (a stand-in on PATH), and
``sudo`` is a stand-in that runs its command (the suite runs as a user that may
create the directory). Each test gets its own OpenBao: the page's paths and
policy names are fixed.

Path A (import a refresh token, run, refresh, status, read) and path B (sign in
through ``rotator authorize``) are the page's two ways to the first grant; each
runs the page from the top to its own end.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from rotator import __version__
from rotator.cli import build_parser
from tests.fakes.consent import click
from tests.fakes.oauth2 import OAuth2Emulator, emulator
from tests.support import docs, leakcheck
from tests.support.net import free_port, wait_until
from tests.support.proc import ROOT, env_for
from tests.support.servers import OpenBao, bao_binary

PAGE = docs.README.parent / "docs" / "first-account.md"
CLIENT_ID = "rotator-idp-api"
CLIENT_SECRET = leakcheck.register("first-acc0unt-s3cret-" + secrets.token_hex(6), "client secret")

ROTATOR_STAND_IN = f"""\
#!/bin/sh
# this checkout's rotator, as /opt/rotator/bin/rotator would be after the install step
exec {sys.executable} -m rotator "$@"
"""
SUDO_STAND_IN = """\
#!/bin/sh
# stands in for sudo: the suite's user may already do what the page asks root for
exec "$@"
"""


ETC, BAO, PORT, CALLBACK = (
    "/etc/rotator",
    "https://openbao.example.com:8200",
    "127.0.0.1:9464",
    "127.0.0.1:8765",
)
TOKEN_URL, AUTHORIZE_URL = (
    "https://idp.example.com/oauth/token",
    "https://idp.example.com/oauth/authorize",
)
#: the placeholders each block holds: a block that loses one fails (the page changed)
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "home": (ETC,),
    "client-secret": (ETC,),
    "daemon-policy": (),
    "consumer-policy": (),
    "vault-setup": (BAO, ETC),
    "config": (PORT, BAO, ETC, TOKEN_URL, AUTHORIZE_URL, CALLBACK),
    "check": (ETC,),
    "check-output": (ETC, CALLBACK),
    "import": (ETC,),
    "authorize": (ETC,),
    "run": (ETC,),
    "status": (PORT, ETC),
    "status-output": (),
    "consume": (BAO,),
    "consume-state": (),
}


def block(name: str) -> docs.Block:
    return docs.block(f"first-account/{name}", PAGE)


@dataclass
class Reader:
    """Someone following the page: their terminal's environment and working directory."""

    tmp: Path
    bao: OpenBao
    idp: OAuth2Emulator
    places: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    exports: list[str] = field(default_factory=list)

    @property
    def etc(self) -> Path:
        return Path(self.places["/etc/rotator"])

    @property
    def cwd(self) -> Path:
        return self.tmp / "work"

    def text(self, name: str) -> str:
        found = block(name).text
        wanted = PLACEHOLDERS[name]
        return docs.substitute(found, {k: self.places[k] for k in wanted}) if wanted else found

    def shell(self, name: str, *, stdin: str | None = None, check: bool = True) -> str:
        """Run the block in bash; returns stdout (stderr goes to the leak-checked log)."""
        text = self.text(name)
        script = "\n".join([*self.exports, text])
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env=self.env,
            timeout=60,
            check=False,
        )
        leakcheck.log_file(f"first-account-{name}").write_text(
            f"$ {text}\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
        if check:
            assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
        self.exports += [line for line in text.splitlines() if line.startswith("export ")]
        self.last = proc
        return proc.stdout

    def save(self, name: str, where: Path) -> None:
        where.write_text(self.text(name))

    def secret_file(self, name: str) -> str:
        return leakcheck.register((self.etc / name).read_text(), name)


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("rotator", ROTATOR_STAND_IN), ("sudo", SUDO_STAND_IN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "bao").symlink_to(bao_binary())
    (tmp_path / "work").mkdir()
    (tmp_path / "home").mkdir()
    with OpenBao() as bao, emulator(clients={CLIENT_ID: CLIENT_SECRET}) as idp:
        bao.start()
        places = {
            BAO: bao.url,
            TOKEN_URL: idp.token_url,
            AUTHORIZE_URL: idp.authorize_url,
            ETC: str(tmp_path / "etc-rotator"),
            PORT: f"127.0.0.1:{free_port()}",
            CALLBACK: f"127.0.0.1:{free_port()}",
        }
        env = env_for(
            {
                "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                "HOME": str(tmp_path / "home"),
                "XDG_STATE_HOME": str(tmp_path / "state"),  # the spool's default home
                "BAO_TOKEN": bao.root_token,  # the administrator, logged in
            }
        )
        for key in ("BAO_ADDR", "VAULT_ADDR", "VAULT_TOKEN", "ROTATOR_CONFIG"):
            env.pop(key, None)
        yield Reader(tmp_path, bao, idp, places, env)


def installs_what_the_repository_builds() -> None:
    """The install blocks are not run (module docstring); what they name must exist: the
    wheel pip builds from pyproject.toml, the Dockerfile's image, rotator's options."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert (project["name"], project["version"]) == ("rotator", __version__)
    wheel = f"dist/rotator-{__version__}-py3-none-any.whl"
    pip = block("install-pip").text
    assert pip.count(wheel) == 2 and "--wheel-dir dist ." in pip
    image = block("install-image").text
    assert f"docker build -t rotator:{__version__} ." in image
    assert 'ENTRYPOINT ["rotator"]' in (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for line in (pip + image).splitlines():
        words = shlex.split(line, comments=True)
        at = next((i for i, w in enumerate(words) if w.endswith("/bin/rotator")), None)
        if words[:2] == ["docker", "run"]:
            at = words.index(f"rotator:{__version__}")
        if at is not None:
            said = io.StringIO()
            with contextlib.redirect_stdout(said), pytest.raises(SystemExit) as done:
                build_parser().parse_args(words[at + 1 :])  # --version prints and exits 0
            assert (done.value.code, said.getvalue()) == (0, f"rotator {__version__}\n")


def up_to_the_first_grant(reader: Reader) -> None:
    """Steps 2 to 5: home, client secret, policies, tokens, configuration, check."""
    installs_what_the_repository_builds()
    reader.shell("home")
    assert oct(reader.etc.stat().st_mode & 0o777) == "0o700"
    reader.shell("client-secret", stdin=CLIENT_SECRET + "\n")
    assert (reader.etc / "idp-client-secret").read_text() == CLIENT_SECRET
    assert oct((reader.etc / "idp-client-secret").stat().st_mode & 0o777) == "0o600"

    reader.save("daemon-policy", reader.cwd / "rotator-policy.hcl")
    reader.save("consumer-policy", reader.cwd / "consumer-policy.hcl")
    reader.shell("vault-setup")
    daemon_token = reader.secret_file("vault-token")
    assert oct((reader.etc / "vault-token").stat().st_mode & 0o777) == "0o600"
    assert sorted(reader.bao.lookup_token(daemon_token)["policies"]) == ["default", "rotator"]

    config = reader.etc / "rotator.yaml"
    reader.save("config", config)
    docs.matches_output(reader.text("check-output"), reader.shell("check"))


def test_path_a_import_run_refresh_status_and_read(reader: Reader) -> None:
    up_to_the_first_grant(reader)
    (reader.cwd / "refresh-token.txt").write_text(reader.idp.issue_grant(CLIENT_ID) + "\n")
    reader.shell("import")
    assert not (reader.cwd / "refresh-token.txt").exists()

    [argv] = [shlex.split(line) for line in reader.text("run").splitlines() if line.strip()]
    log = leakcheck.log_file("first-account-daemon")
    with open(log, "wb") as out:
        daemon = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=reader.env)
    try:
        # at start the daemon refreshes the imported grant (no access token yet)
        wait_until(lambda: sink(reader.bao), timeout=30, what="the daemon's first token")
        wait_until(lambda: ready(reader), timeout=30, what="/readyz answering 200")
        first = sink(reader.bao)
        printed = reader.shell("status")
        lines = printed.strip().splitlines()
        assert lines[0] == "ok: 1 accounts, stores validated"  # readyz, as the page says
        table = "\n".join(line for line in lines if not line.startswith("idp-api: "))
        docs.matches_output(reader.text("status-output"), table.split("\n", 1)[1])
        assert sink(reader.bao) != first  # `rotator refresh` rotated once more
        assert reader.idp.token_calls == 2 and reader.idp.reuse_detected == 0

        expires_at, token_type = reader.shell("consume").split()
        assert (expires_at, token_type) == (sink(reader.bao)["expires_at"], "Bearer")
        leakcheck.register((reader.cwd / "myapp-token").read_text(), "consumer token")
        reader.shell("consume-state", check=False)
        assert reader.last.returncode == 2
        assert "permission denied" in reader.last.stderr
    finally:
        daemon.send_signal(signal.SIGINT)  # Ctrl-C
        assert daemon.wait(timeout=30) == 0
    # the daemon's own token was enough for all it did: nothing was refused
    assert "permission denied" not in log.read_text()


def test_path_b_authorize_through_the_browser(reader: Reader) -> None:
    up_to_the_first_grant(reader)
    text = reader.text("authorize")
    with subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", text],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=reader.cwd,
        env=reader.env,
    ) as proc:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            url = next((w for w in line.split() if w.startswith(reader.idp.authorize_url)), "")
            if url:
                break
        assert "code_challenge_method=S256" in url
        with httpx.Client() as browser:
            landed = click(browser, url)  # Allow; the browser follows to the listener
        assert landed.status_code == 200
        rest, errors = proc.communicate(timeout=30)
        leakcheck.log_file("first-account-authorize").write_text(rest + "\n---\n" + errors)
    assert proc.returncode == 0, errors[-2000:]
    assert "idp-api: authorized at" in rest
    assert sink(reader.bao)["token_type"] == "Bearer"  # published at once

    # "A policy that is too narrow shows here": the consumer's token in the daemon's place
    narrow = reader.bao.create_token(["idp-api-reader"])
    (reader.etc / "vault-token").write_text(narrow)
    printed = reader.shell("check", check=False)
    assert reader.last.returncode == 1
    denied = r"^store vault: ERROR permission denied \S+ secret/data/rotator/.*\(the policy lacks"
    assert re.search(denied, printed, re.MULTILINE), printed


def sink(bao: OpenBao) -> Mapping[str, str]:
    """The sink as the administrator sees it ({} until it exists); never printed."""
    with bao.api() as client:
        answer = client.get("secret/data/rotator/apps/idp/api")
    if answer.status_code == 404:
        return {}
    answer.raise_for_status()
    data: dict[str, str] = answer.json()["data"]["data"]
    return data


def ready(reader: Reader) -> bool:
    try:
        return httpx.get(f"http://{reader.places[PORT]}/readyz").status_code == 200
    except httpx.HTTPError:
        return False
