"""A real browser for the suite: Debian's headless Chromium driven by Selenium.

The console is a browser product (cookies, SameSite, redirects across sites,
forms), so its tests drive the browser people use rather than an HTTP client
pretending to be one. Chromium and its driver come from Debian (`chromium`,
`chromium-driver`; .ci/run installs them as root); both paths are given to
Selenium explicitly so that Selenium Manager never runs (no download here).
Where they are missing the tests skip, naming the package to install.

Every page the browser shows and every address it visits is written to a
capture file under the leak check's directory, so the session-end scan
(tests/support/leakcheck.py) covers the console's pages and links too.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support import leakcheck
from tests.support.leakcheck import log_file
from tests.support.net import LoopbackHTTPServer, wait_until
from tests.support.proc import env_for

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "Browser",
    "DemoProcess",
    "HandleServer",
    "browser_missing",
]

# Selenium logs every WebDriver command at DEBUG, the keys typed into a password field
# included: the suite captures log lines for the leak check, so a typed token would be a leak.
logging.getLogger("selenium").setLevel(logging.WARNING)

CHROMIUM = os.environ.get("ROTATOR_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ROTATOR_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def browser_missing() -> str:
    """Why the browser tests cannot run here, or ""."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} is missing: apt-get install -y {package} (as root; .ci/run does)"
    return ""


class Browser:
    """One headless Chromium with a fresh profile; every page it shows is captured."""

    def __init__(self, name: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self._profile = tempfile.mkdtemp(prefix="rotator-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={self._profile}"):
            options.add_argument(flag)
        self._capture = log_file(f"browser-{name}")
        # The driver's own log holds the keys typed into the page (a viewer token): it is
        # the test's input, not rotator's output, so it stays out of the leak check's files.
        driver_log = os.path.join(self._profile, "chromedriver.log")
        service = Service(executable_path=CHROMEDRIVER, log_output=driver_log)
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_page_load_timeout(30)

    def record(self) -> None:
        """Append the current address and page to the leak check's capture.

        One address is kept without its query: ``/oauth/callback?code=...``, where the
        vendor's redirect hands the daemon its single-use code. That is the vendor's
        output and the daemon's input, as a token endpoint's answer is; everything the
        daemon writes (its pages, its links, its redirects) is captured whole.
        """
        url = self.driver.current_url
        split = urlsplit(url)
        if split.path.endswith("/oauth/callback"):
            url = split._replace(query="<the vendor's code and state>").geturl()
        with self._capture.open("a", encoding="utf-8") as out:
            out.write(f"--- {url}\n{self.driver.page_source}\n")

    def open(self, url: str) -> str:
        """Navigate to ``url``; the page's visible text."""
        self.driver.get(url)
        self.record()
        return self.text()

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def click(self, selector: str) -> str:
        """Click the element at CSS ``selector`` and wait for the next page; its text."""
        from selenium.webdriver.common.by import By

        old = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.find_element(By.CSS_SELECTOR, selector).click()
        wait_until(lambda: _stale(old), timeout=20, what=f"a new page after clicking {selector}")
        wait_until(
            lambda: self.driver.execute_script("return document.readyState") == "complete",
            timeout=20,
            what="the page to load",
        )
        self.record()
        return self.text()

    def fill(self, selector: str, value: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.CSS_SELECTOR, selector).send_keys(value)

    def wait_text(self, needle: str, *, timeout: float = 30.0, reload: bool = False) -> str:
        """Wait until the page shows ``needle`` (reloading it each round when asked)."""

        def shown() -> bool:
            if reload:
                self.driver.refresh()
            return needle in self.text()

        wait_until(shown, timeout=timeout, what=f"{needle!r} on the page")
        self.record()
        return self.text()

    def cookies(self) -> list[dict[str, Any]]:
        return list(self.driver.get_cookies())

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)


def _stale(element: Any) -> bool:
    from selenium.common.exceptions import WebDriverException

    try:
        element.tag_name  # noqa: B018 - touching it raises once the page is replaced
    except WebDriverException:  # stale, or "does not belong to the document" mid-swap
        return True
    return False


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    """A fresh headless Chromium per test; skipped, with the reason, where it is missing."""
    missing = browser_missing()
    if missing:
        pytest.skip(f"no real browser: {missing}")
    chromium = Browser(request.node.name)
    try:
        yield chromium
    finally:
        chromium.close()


Handle = Callable[[str, str, str, Mapping[str, str], bytes], Any]


class HandleServer(LoopbackHTTPServer):
    """A console-style ``handle(method, path, query, headers, body, peer=)`` on a loopback port.

    Every answer is also written to the leak check's capture. ``peer`` overrides the
    client address the handle sees (a test of the non-loopback rules over real HTTP).
    """

    def __init__(self, handle: Callable[..., Any], *, peer: str | None = None) -> None:
        capture = log_file("console-http")
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                answer = handle(
                    self.command,
                    split.path,
                    split.query,
                    dict(self.headers.items()),
                    body,
                    peer=peer or self.client_address[0],
                )
                status, headers, content = answer or (404, {}, b"not found\n")
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)
                with lock, capture.open("ab") as out:
                    out.write(f"--- {self.command} {self.path} {status} {headers}\n".encode())
                    out.write(content + b"\n")

            do_GET = do_POST = do_HEAD = do_PUT = _any

            def log_message(self, format: str, *args: Any) -> None:
                return None

        super().__init__(Handler, name="console")


class DemoProcess:
    """``rotator demo`` as a child process in ``directory``; output captured for the leak check.

    The demo makes its own secrets; :meth:`register_secrets` hands them (and every token
    its files and state hold) to the leak check once they exist.
    """

    def __init__(self, directory: Path, *, args: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.log_path = log_file("demo")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rotator", "demo", "--directory", str(directory), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env_for(),
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_output(self, pattern: str, *, timeout: float = 60) -> re.Match[str]:
        """The first match of regular expression ``pattern`` in the output, waited for."""

        def found() -> re.Match[str] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"rotator demo exited early:\n{self.output()[-3000:]}")
            return re.search(pattern, self.output())

        match: re.Match[str] = wait_until(found, timeout=timeout, what=f"{pattern!r} from the demo")
        return match

    def register_secrets(self) -> None:
        for name in ("client-secret", "fax-secret"):
            path = self.directory / name
            if path.exists():
                leakcheck.register(path.read_text().strip(), "demo client secret")
        for path in [*self.directory.glob("tokens/*"), *self.directory.glob("state/**/*")]:
            if path.is_file():
                for value in re.findall(r"(?:access|refresh)-[A-Za-z0-9_-]{20,}", path.read_text()):
                    leakcheck.register(value, "demo token")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait (by PID); the exit code."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(timeout=10)
        finally:
            self._log.close()
