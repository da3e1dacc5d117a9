"""docs/troubleshooting.md: every message the page quotes is printed by rotator, for real.

Each entry's quoted output (a ```text block marked ``<!-- test: trouble/NAME -->``)
is provoked here the way a newcomer meets it: a misspelt key, a Vault policy
too narrow in a real OpenBao, a refresh token the OAuth2 emulator does not know,
a FaxMAX emulator whose clock is behind, a sink directory this user cannot
write, ... The rotator command runs as a child process with the log format a
terminal gets (``--log-format console``), and the quoted lines must appear in its
output, in order, each a whole line. So a changed message fails here, and the
page is changed with it.

Placeholders in a quoted block: the page's example values (``idp-api``'s
secret file ``/etc/rotator/idp-secret``, ``https://vault.example.com:8200``, ...)
are swapped for this test's (tests/support/docs.py ``substitute``, which fails
when the page no longer holds one), and a ``<words in angle brackets>`` stands
for any text (a time, a vendor's own wording, a list of keys).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fakes.faxmax import FaxmaxEmulator
from tests.fakes.oauth2 import emulator
from tests.fakes.vendorhttp import running
from tests.support import docs, leakcheck
from tests.support.net import free_port
from tests.support.proc import DaemonProcess, run_rotator
from tests.support.servers import OpenBao

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "troubleshooting.md"
CLIENT_SECRET = leakcheck.register("trouble-s3cret-" + secrets.token_hex(6), "client secret")
#: the page's example values, swapped for the test's own
SECRET_FILE = "/etc/rotator/idp-secret"
VAULT_URL = "https://vault.example.com:8200"
SINK_DIR = "/srv/tokens"
VAULT_TOKEN_ENV = "ROTATOR_TROUBLE_VAULT_TOKEN"
#: a token endpoint for entries that never reach the vendor
IDP_ENDPOINT = "https://idp.example.com/oauth/token"
_PLACEHOLDER = re.compile(r"<[^<>]+>")


def quoted(name: str) -> list[str]:
    """The non-empty lines of the page's block ``trouble/NAME``."""
    text = docs.block(f"trouble/{name}", PAGE).text
    return [line for line in text.splitlines() if line.strip()]


def line_pattern(line: str) -> re.Pattern[str]:
    parts = _PLACEHOLDER.split(line)
    return re.compile(".+?".join(re.escape(part) for part in parts))


#: the page's example values each quote holds (substitute fails when one is gone)
USES: dict[str, tuple[str, ...]] = {
    "secret-file-mode": (SECRET_FILE,),
    "vault-policy": (),
    "store-unreachable": (VAULT_URL,),
    "sink-not-writable": (SINK_DIR,),
}


def assert_printed(name: str, output: str, replacements: Mapping[str, str]) -> None:
    """Every quoted line of ``trouble/NAME`` is a whole line of ``output``, in order."""
    uses = {old: replacements[old] for old in USES.get(name, ())}
    text = "\n".join(quoted(name))
    lines = (docs.substitute(text, uses) if uses else text).splitlines()
    printed = output.splitlines()
    at = 0
    for line in lines:
        pattern = line_pattern(line)
        found = next((i for i in range(at, len(printed)) if pattern.fullmatch(printed[i])), None)
        assert found is not None, (
            f"docs/troubleshooting.md, trouble/{name}: {line!r} is not printed (after line "
            f"{at}); rotator printed:\n{output}"
        )
        at = found + 1


@dataclass
class Scene:
    """A scratch directory with a config, and what the page's example values stand for here."""

    tmp: Path
    replacements: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    #: a command that runs rotator as another user (setpriv ... --), or nothing
    as_user: list[str] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.tmp / "rotator.yaml"

    def write(self, text: str) -> Path:
        self.config.write_text(text)
        self.config.chmod(0o644)
        return self.config

    def secret_file(self, mode: int = 0o600) -> Path:
        path = self.tmp / "idp-secret"
        path.write_text(CLIENT_SECRET + "\n")
        path.chmod(mode)
        self.replacements[SECRET_FILE] = str(path)
        return path

    def rotator(self, *args: str, stdin: str | None = None) -> str:
        """``rotator ARGS -c CONFIG`` as a terminal shows it: stdout and stderr together."""
        command, *rest = args
        argv = [command, "-c", str(self.config), "--log-format", "console", *rest]
        result = run_rotator(
            argv, env={"HOME": str(self.tmp), **self.env}, stdin=stdin, prefix=self.as_user
        )
        return f"{result.stdout}\n{result.stderr}\nexit code {result.returncode}\n"


@pytest.fixture
def scene() -> Iterator[Scene]:
    # Not tmp_path: pytest's base directory is 0700, and one entry runs rotator as
    # another user, who must reach the scratch directory.
    tmp = Path(tempfile.mkdtemp(prefix="trouble-"))
    tmp.chmod(0o755)
    try:
        yield Scene(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def oauth2_config(
    scene: Scene,
    token_url: str,
    *,
    stores: str,
    state: str,
    sink: str,
    extra: str = "",
) -> Path:
    secret = scene.secret_file()
    return scene.write(
        f"""\
server: {{spool_dir: {scene.tmp / "spool"}}}
stores:
{stores}
defaults:
  state: {{store: {state}}}
accounts:
  idp-api:
    provider: oauth2
    token_url: {token_url}
    client_id: app
    client_secret: file:{secret}
{extra}    sinks: [{sink}]
"""
    )


def files_config(scene: Scene, token_url: str = IDP_ENDPOINT) -> Path:
    return oauth2_config(
        scene,
        token_url,
        stores=f"  files: {{type: file, directory: {scene.tmp / 'tokens'}}}",
        state="files",
        sink="{store: files, path: idp-api.token, format: token}",
    )


def vault_config(scene: Scene, url: str, token_url: str) -> Path:
    scene.replacements[VAULT_URL] = url
    return oauth2_config(
        scene,
        token_url,
        stores=(
            f"  vault: {{type: vault, url: '{url}', prefix: rotator,\n"
            f'          auth: {{method: token, token: "env:{VAULT_TOKEN_ENV}"}}}}'
        ),
        state="vault",
        sink="{store: vault, path: apps/idp/api}",
    )


# --- the entries -----------------------------------------------------------------------


def misspelt_key(scene: Scene) -> str:
    config = files_config(scene)
    config.write_text(
        config.read_text().replace("client_id: app", "client_id: app\n    refresh_shar: 0.5")
    )
    return scene.rotator("check")


def undefined_store(scene: Scene) -> str:
    config = files_config(scene)
    config.write_text(config.read_text().replace("{store: files, path", "{store: vault, path"))
    return scene.rotator("check")


def secret_file_mode(scene: Scene) -> str:
    files_config(scene)
    scene.secret_file(0o644)
    return scene.rotator("check", "--online")


def redirect_uri(scene: Scene) -> str:
    scene.write(
        f"""\
server:
  listen: 127.0.0.1:9464
  console: {{public_url: https://rotator.example.com}}
stores:
  files: {{type: file, directory: {scene.tmp / "tokens"}}}
defaults:
  state: {{store: files}}
accounts:
  idp-api:
    provider: oauth2
    token_url: https://idp.example.com/oauth/token
    authorize_url: https://idp.example.com/oauth/authorize
    redirect_uri: https://app.example.com/callback
    client_id: app
    client_auth: none
    sinks: [{{store: files, path: idp-api.json}}]
"""
    )
    return scene.rotator("check")


def vault_policy(scene: Scene, bao: OpenBao) -> str:
    name = "trouble-" + secrets.token_hex(4)
    # read and update on the data, without create: a new path cannot be written
    bao.write_policy(name, 'path "secret/data/rotator/*" { capabilities = ["read", "update"] }\n')
    scene.env[VAULT_TOKEN_ENV] = bao.create_token([name])
    with emulator(clients={"app": CLIENT_SECRET}) as vendor:
        vault_config(scene, bao.url, vendor.url)
        return scene.rotator("check", "--online") + scene.rotator(
            "import", "idp-api", stdin=vendor.issue_grant("app") + "\n"
        )


def store_unreachable(scene: Scene) -> str:
    scene.env[VAULT_TOKEN_ENV] = leakcheck.register("not-a-token-" + secrets.token_hex(4))
    port = free_port()  # nothing listens there
    vault_config(scene, f"http://127.0.0.1:{port}", IDP_ENDPOINT)
    checked = scene.rotator("check", "--online")
    with DaemonProcess(scene.config, env=scene.env, args=["--log-format", "console"]) as daemon:
        daemon.wait_log("state store failed")
        daemon.stop()
        return checked + daemon.output()


def revoked_refresh_token(scene: Scene) -> str:
    with emulator(clients={"app": CLIENT_SECRET}) as vendor:
        files_config(scene, vendor.url)
        stale = leakcheck.register("rt-revoked-" + secrets.token_hex(8), "refresh token")
        imported = scene.rotator("import", "idp-api", stdin=stale + "\n")
        return imported + scene.rotator("refresh", "idp-api") + scene.rotator("status")


def invalid_client(scene: Scene) -> str:
    with emulator(clients={"app": CLIENT_SECRET}) as vendor:
        files_config(scene, vendor.url)
        scene.rotator("import", "idp-api", stdin=vendor.issue_grant("app") + "\n")
        old = leakcheck.register("an-old-secret-" + secrets.token_hex(4), "client secret")
        (scene.tmp / "idp-secret").write_text(old + "\n")
        return scene.rotator("refresh", "idp-api")


def faxmax_clock_skew(scene: Scene) -> str:
    behind = FaxmaxEmulator(clock=lambda: time.time() - 7.2)  # the vendor's clock is behind
    with running(behind) as vendor:
        scene.env.update(FAXMAX_API_CODE=vendor.api_code, FAXMAX_API_PASSWORD=vendor.api_password)
        scene.write(
            f"""\
server: {{spool_dir: {scene.tmp / "spool"}}}
stores:
  files: {{type: file, directory: {scene.tmp / "tokens"}}}
defaults:
  state: {{store: files}}
accounts:
  acme-fax:
    provider: faxmax
    domain: fax.example.com
    endpoint: {vendor.endpoint}
    username: {vendor.username}
    api_code: env:FAXMAX_API_CODE
    api_password: env:FAXMAX_API_PASSWORD
    remote_ip: 10.1.2.3
    sinks: [{{store: files, path: acme-fax.json}}]
"""
        )
        return scene.rotator("refresh", "acme-fax")


def sink_not_writable(scene: Scene) -> str:
    """The sink directory belongs to root; rotator runs as nobody (or, not root, a 0555 one)."""
    sink = scene.tmp / "sink"
    sink.mkdir(mode=0o755)
    scene.replacements[SINK_DIR] = str(sink)
    with emulator(clients={"app": CLIENT_SECRET}) as vendor:
        oauth2_config(
            scene,
            vendor.url,
            stores=(
                f"  state: {{type: file, directory: {scene.tmp / 'state'}}}\n"
                f"  files: {{type: file, directory: {sink}}}"
            ),
            state="state",
            sink="{store: files, path: idp-api.token, format: token}",
        )
        if os.geteuid() == 0:
            for own in ("state", "spool"):
                (scene.tmp / own).mkdir()
                os.chown(scene.tmp / own, 65534, 65534)
            os.chown(scene.tmp / "idp-secret", 65534, 65534)
            scene.as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        else:
            sink.chmod(0o555)
        scene.rotator("import", "idp-api", stdin=vendor.issue_grant("app") + "\n")
        return scene.rotator("check", "--online") + scene.rotator("refresh", "idp-api")


SIMPLE: dict[str, Callable[[Scene], str]] = {
    "misspelt-key": misspelt_key,
    "undefined-store": undefined_store,
    "secret-file-mode": secret_file_mode,
    "redirect-uri": redirect_uri,
    "store-unreachable": store_unreachable,
    "revoked-refresh-token": revoked_refresh_token,
    "invalid-client": invalid_client,
    "faxmax-clock-skew": faxmax_clock_skew,
    "sink-not-writable": sink_not_writable,
}
WITH_VAULT: dict[str, Callable[[Scene, OpenBao], str]] = {"vault-policy": vault_policy}


def test_every_entry_has_a_quoted_message_and_is_provoked() -> None:
    blocks = docs.blocks(PAGE)
    marked = {name.removeprefix("trouble/") for name, b in blocks.items() if b.lang == "text"}
    assert marked == set(SIMPLE) | set(WITH_VAULT)
    assert {name for name, b in blocks.items() if b.lang != "text"} == {"trouble/vault-policy-fix"}
    headings = re.findall(r"^## ", PAGE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert len(headings) == len(marked) == 10


@pytest.mark.parametrize("name", sorted(SIMPLE))
def test_the_quoted_message_is_what_rotator_prints(scene: Scene, name: str) -> None:
    assert_printed(name, SIMPLE[name](scene), scene.replacements)


def test_the_quoted_vault_policy_message_is_what_rotator_prints_and_the_fix_works(
    scene: Scene, bao: OpenBao
) -> None:
    assert_printed("vault-policy", vault_policy(scene, bao), scene.replacements)
    # the page's policy, exactly as printed: the same account now imports and rotates
    name = "trouble-fix-" + secrets.token_hex(4)
    bao.write_policy(name, docs.block("trouble/vault-policy-fix", PAGE).text)
    scene.env[VAULT_TOKEN_ENV] = bao.create_token([name])
    with emulator(clients={"app": CLIENT_SECRET}) as vendor:
        config = scene.config.read_text()
        scene.config.write_text(re.sub(r"token_url: \S+", f"token_url: {vendor.url}", config))
        assert "store vault: READY" in scene.rotator("check", "--online")
        imported = scene.rotator("import", "idp-api", stdin=vendor.issue_grant("app") + "\n")
        assert imported.endswith("exit code 0\n"), imported
        rotated = scene.rotator("refresh", "idp-api")
        assert "sinks written 1" in rotated and rotated.endswith("exit code 0\n"), rotated
    with bao.api() as client:
        answer = client.get("secret/data/rotator/apps/idp/api")
    assert answer.json()["data"]["data"]["account"] == "idp-api"


def test_a_changed_message_fails() -> None:
    """The matching is not vacuous: a word changed in a quoted line no longer matches."""
    line = "rotator: config: accounts.idp-api.sinks[0].store: 'vault' is not a defined store"
    printed = f"{line} (defined: files)"
    assert line_pattern(line + " (defined: <stores>)").fullmatch(printed)
    assert not line_pattern(line.replace("defined", "known") + " <x>").fullmatch(printed)
