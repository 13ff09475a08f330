"""The dashboard in Debian's Chromium (Playwright) against a real `zerodown serve` of the demo
repository: a live deployment to success, a failed one (v3) rolled back with its reason, and a
rollback started by the button. Screenshots go to tests/artifacts/dashboard/."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from zerodown.demo import make_repository

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "dashboard"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)  # another process: nothing to await
    raise AssertionError(f"timed out waiting for {what}")


class Served:
    """The demo repository under a running `zerodown serve`, with an API token."""

    def __init__(self, root: Path) -> None:
        self.router_port = _free_port()
        self.api_port = _free_port()
        self.repo = make_repository(root, self.router_port)
        config = self.repo / "zerodown.yml"
        text = config.read_text().replace(
            "    instances: 2\n", "    instances: 2\n    env: {BOOT_SECONDS: '1'}\n"
        )
        config.write_text(text + f"server:\n  listen: 127.0.0.1:{self.api_port}\n")
        created = self.zerodown("token", "create", "browser")
        assert created.returncode == 0, created.stderr
        self.token = created.stdout.strip().splitlines()[-1]
        self.url = f"http://127.0.0.1:{self.api_port}/"
        self.log = (root / "serve.log").open("w")
        self.serve = subprocess.Popen(
            [sys.executable, "-m", "zerodown", "serve"],
            cwd=self.repo,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
        _wait_for(self.answers, 60, "zerodown serve's API")

    def zerodown(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zerodown", *args],
            cwd=self.repo,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def answers(self) -> bool:
        try:
            return httpx.get(self.url + "api/overview", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def deploy(self, revision: str) -> str:
        answer = httpx.post(
            self.url + "api/deployments",
            json={"service": "web", "environment": "prod", "revision": revision},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    def record(self, deployment_id: str) -> dict[str, object]:
        return dict(httpx.get(f"{self.url}api/deployments/{deployment_id}", timeout=5).json())

    def sha(self, tag: str) -> str:
        return subprocess.run(
            ["git", "rev-parse", tag], cwd=self.repo, capture_output=True, text=True, check=True
        ).stdout.strip()

    def stop(self) -> str:
        self.serve.send_signal(signal.SIGINT)
        self.serve.wait(timeout=60)
        self.log.close()
        self.zerodown("stop")
        return Path(self.log.name).read_text()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path)
    yield served
    output = served.stop()
    assert "dashboard and API on" in output


@pytest.fixture
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's Chromium is not installed")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def traffic(served: Served) -> Iterator[None]:
    """A trickle of requests through the router, so the charts have lines to draw."""
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.wait(0.05):
                # Before the first deploy nothing is routed: errors are expected then.
                with contextlib.suppress(httpx.HTTPError):
                    client.get(f"http://127.0.0.1:{served.router_port}/")

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=10)


def shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("traffic")
def test_live_deploy_failed_deploy_and_rollback_button(served: Served, browser: object) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    expect = playwright_sync.expect
    page.goto(served.url)
    card = page.locator('section.service[data-route="web.prod"]')
    expect(card).to_contain_text("never deployed")

    # 1. Deploy v1 with the button: confirmation dialog asks for the token, then the live page.
    card.locator('input[aria-label="revision"]').fill("v1")
    card.locator("button.deploy").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    dialog.locator("#confirm-token").fill(served.token)
    dialog.locator("#confirm-ok").click()
    expect(page).to_have_url(re.compile(r"#/deployment/[0-9a-f]{32}$"))
    timeline = page.locator("#timeline")
    expect(timeline.locator("li.ev-batch_started").first).to_be_visible(timeout=30_000)
    shot(page, "1-deploy-v1-live")
    state = page.locator("#deployment-state")
    expect(state).to_have_text("succeeded", timeout=90_000)
    expect(timeline.locator("li.ev-instance_healthy")).to_have_count(2)
    expect(timeline.locator("li.ev-traffic_added")).to_have_count(2)
    shot(page, "2-deploy-v1-succeeded")

    # 2. v3 fails its health check and is rolled back; the page says why.
    failed = served.deploy("v3")
    page.goto(f"{served.url}#/deployment/{failed}")
    expect(state).to_have_text("rolled_back", timeout=120_000)
    reason = page.locator("#deployment-reason")
    expect(reason).to_contain_text("rolled back to")
    expect(reason).to_contain_text("health")
    expect(timeline.locator("li.ev-rollback_finished")).to_have_count(1)
    shot(page, "3-deploy-v3-rolled-back")

    # 3. v2 succeeds; the rollback button takes the fleet back to v1.
    second = served.deploy("v2")
    _wait_for(lambda: served.record(second)["state"] == "succeeded", 90, "v2 to succeed")
    page.goto(served.url)
    expect(card.locator(".revision")).to_have_text(served.sha("v2")[:10])
    expect(card.locator(".chart polyline").first).to_be_attached(timeout=30_000)
    shot(page, "4-services-on-v2")
    card.locator("button.rollback").click()
    expect(dialog).to_be_visible()
    expect(dialog.locator("#confirm-token-label")).to_be_hidden()  # the token was kept
    dialog.locator("#confirm-ok").click()
    expect(page).to_have_url(re.compile(r"#/deployment/[0-9a-f]{32}$"))
    expect(state).to_have_text("succeeded", timeout=90_000)
    expect(page.locator("h1")).to_contain_text("rollback web/prod")
    expect(page.locator("h1")).to_contain_text(served.sha("v1")[:10])
    expect(page.locator(".batches .b.ok")).to_have_count(2)  # surge batches overlap
    shot(page, "5-rollback-by-button")
    rollback = page.url.rsplit("/", 1)[1]
    assert served.record(rollback)["actor"] == "browser"
    assert httpx.get(f"http://127.0.0.1:{served.router_port}/").json()["version"] == "v1"

    # 4. KPIs, history and a phone-sized screen.
    page.goto(f"{served.url}#/kpis?days=7")
    expect(page.locator('section.kpi[data-route="web.prod"]')).to_contain_text("success rate")
    shot(page, "6-kpis")
    page.goto(f"{served.url}#/deployments")
    expect(page.locator("tbody tr")).to_have_count(4)
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)  # type: ignore[attr-defined]
    phone.goto(served.url)
    expect(phone.locator('section.service[data-route="web.prod"] .revision')).to_have_text(
        served.sha("v1")[:10]
    )
    expect(phone.locator(".chart").first).to_be_visible()
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    shot(phone, "7-phone-services")
