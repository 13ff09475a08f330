"""What the dashboard's browser tests share: a project under a real `zerodown serve` with an API
token, one Debian Chromium per test module (Playwright), screenshots under tests/artifacts/."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from zerodown.config import load_config
from zerodown.control_plane import ControlPlane
from zerodown.server.auth import TokenStore
from zerodown.store.sql import open_store

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
T = TypeVar("T")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` (another process's state: nothing to await) until true or `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class ServedProject:
    """A project directory (its zerodown.yml already says `server: listen:`) under a running
    `zerodown serve`, with an API token named `browser`."""

    def __init__(self, repo: Path, api_port: int) -> None:
        self.repo = repo
        # In process: each CLI run pays zerodown's import time again (seconds on a busy box).
        self.token = run_in_thread(_create_token(repo, "browser"))
        self.url = f"http://127.0.0.1:{api_port}/"
        self.log = (repo.parent / "serve.log").open("w")
        self.serve = subprocess.Popen(
            [sys.executable, "-m", "zerodown", "serve"],
            cwd=repo,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
        try:
            wait_for(self._answers_while_running, 60, "zerodown serve's API")
        except BaseException:  # no object for the caller to stop: stop what was started here
            self.stop()
            raise

    def zerodown(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the zerodown CLI in the project."""
        return subprocess.run(
            [sys.executable, "-m", "zerodown", *args],
            cwd=self.repo,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def get(self, path: str) -> Any:
        """GET an API path with the token; its JSON."""
        answer = httpx.get(self.url + path, headers=self.auth(), timeout=5)
        answer.raise_for_status()
        return answer.json()

    def auth(self) -> dict[str, str]:
        """The Authorization header of the `browser` token."""
        return {"Authorization": f"Bearer {self.token}"}

    def answers(self) -> bool:
        """True once the API answers (with the token: reads may be closed)."""
        try:
            answer = httpx.get(self.url + "api/overview", headers=self.auth(), timeout=2)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def _answers_while_running(self) -> bool:
        """`answers`, but a serve that exited fails at once, with its output."""
        if self.serve.poll() is not None:
            self.log.flush()
            output = Path(self.log.name).read_text()
            raise AssertionError(f"zerodown serve exited with {self.serve.returncode}: {output}")
        return self.answers()

    def stop(self) -> str:
        """Stop serve (SIGINT; SIGKILL if it is still running a minute later), then every
        instance and the router, whatever happened before; serve's output. Safe to call again."""
        try:
            if self.serve.poll() is None:
                self.serve.send_signal(signal.SIGINT)
            self.serve.wait(timeout=60)
        finally:
            if self.serve.poll() is None:
                self.serve.kill()
                self.serve.wait(timeout=10)
            self.log.close()
            run_in_thread(_stop_everything(self.repo))
        return Path(self.log.name).read_text()


def run_in_thread(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end on a loop of its own: Playwright's sync API holds this thread's."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()


async def _create_token(repo: Path, name: str) -> str:
    """`zerodown token create NAME` in the project, without a CLI process."""
    store = open_store(load_config(repo / "zerodown.yml").store_url)
    try:
        return await TokenStore(store.engine).create(name)
    finally:
        await store.close()


async def _stop_everything(repo: Path) -> None:
    """`zerodown stop` in the project, without a CLI process: every instance and the router."""
    plane = await ControlPlane.open(load_config(repo / "zerodown.yml"), recover=False)
    try:
        await plane.stop_everything()
    finally:
        await plane.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Debian Chromium for the whole test module."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's Chromium is not installed")
    playwright_sync = pytest.importorskip("playwright.sync_api")
    with playwright_sync.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def save_screenshot(page: Any, folder: Path, name: str) -> None:
    """A full-page screenshot to `folder`/`name`.png."""
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
