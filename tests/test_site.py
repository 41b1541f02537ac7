"""The built site works offline, opened as files: a reader double-clicks site/index.html, follows the nav and
searches. Headless Chromium driven through its DevTools protocol over a pipe (`--remote-debugging-pipe`: no
network port, no client library), on a site built into a temporary folder from another working folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MKDOCS = Path(sys.executable).with_name("mkdocs")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="needs a headless Chromium (Debian package chromium)"),
              pytest.mark.skipif(not MKDOCS.exists(), reason="needs mkdocs (the dev extra)")]


class Navigated(Exception):
    """The tab navigated while a command ran in the page it left."""


class Browser:
    """One headless Chromium tab, driven by DevTools messages (NUL-terminated JSON on fds 3 and 4)."""

    def __init__(self, profile: Path):
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                   f"--user-data-dir={profile}", "about:blank"]
        # the pipe's ends become the browser's fds 3 (commands in) and 4 (replies out)
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "chromium", *command],
            pass_fds=(to_browser_r, from_browser_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.next_id, self.buffer, self.session = 0, b"", None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                chunk = os.read(self.from_browser, 1 << 16)
                assert chunk, "Chromium closed the pipe"
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "navigated or closed" in reply.get("error", {}).get("message", ""):
                    raise Navigated(reply["error"]["message"])
                assert "error" not in reply, reply["error"]
                return reply["result"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.js(expression)
            except Navigated:  # the page changed while the expression ran (a click's navigation): ask the new one
                value = None
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expression}")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built as `make docs` builds it, from a folder other than the checkout (the snippets' base path
    must not depend on where the build runs)."""
    out = tmp_path_factory.mktemp("site")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    subprocess.run([str(MKDOCS), "build", "--strict", "-q", "-f", str(REPO / "mkdocs.yml"), "--site-dir", str(out)],
                   cwd=elsewhere, check=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)
    return out


@pytest.fixture
def browser(tmp_path):
    chrome = Browser(tmp_path / "profile")
    yield chrome
    chrome.close()


def test_the_nav_opens_pages_from_the_file_system(site, browser):
    browser.open((site / "index.html").as_uri())
    href = browser.wait_for("[...document.querySelectorAll('nav a')]"
                            ".find(a => a.textContent.trim() === 'Fine-tune on your data')?.href")
    assert href == (site / "quickstart" / "finetune.html").as_uri()  # a file, not a folder's index
    browser.js("[...document.querySelectorAll('nav a')].find(a => a.textContent.trim() === 'Fine-tune on your data')"
               ".click()")
    heading = browser.wait_for(f"location.href === {json.dumps(href)} && document.readyState === 'complete' && "
                               "document.querySelector('h1')?.textContent")
    assert "Fine-tune" in heading


def test_search_finds_a_page_on_the_file_system(site, browser):
    browser.open((site / "index.html").as_uri())
    browser.wait_for("!!document.querySelector('input.md-search__input')")
    browser.js("(() => { const box = document.querySelector('input.md-search__input'); box.focus();"
               " box.value = 'reliability'; box.dispatchEvent(new Event('input', {bubbles: true})); })()")
    href = browser.wait_for("document.querySelector('.md-search-result__link')?.href")
    assert href.startswith(site.as_uri()) and ".html" in href
    browser.js("document.querySelector('.md-search-result__link').click()")
    heading = browser.wait_for(f"location.href.startsWith({json.dumps(href.split('#')[0])}) && "
                               "document.readyState === 'complete' && document.querySelector('h1')?.textContent")
    assert heading.strip()  # a page of the site, not the browser's folder index
