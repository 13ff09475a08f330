"""The dashboard in Debian's Chromium (Playwright) against a real `zerodown serve` of the demo
repository: a live deployment to success, a failed one (v3) rolled back with its reason, and a
rollback started by the button. Screenshots go to tests/artifacts/dashboard/."""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.integration.dashboard_fixtures import (
    ARTIFACTS,
    ServedProject,
    browser,
    save_screenshot,
    wait_for,
)
from tests.integration.pipeline_fixtures import free_port

from zerodown.demo import make_repository

__all__ = ["browser"]  # the fixture, imported so pytest finds it

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
playwright_sync = pytest.importorskip("playwright.sync_api")


class Served(ServedProject):
    """The demo repository under a running `zerodown serve`, with an API token."""

    def __init__(self, root: Path) -> None:
        self.router_port = free_port()
        api_port = free_port()
        repo = make_repository(root, self.router_port)
        config = repo / "zerodown.yml"
        text = config.read_text().replace(
            "    instances: 2\n", "    instances: 2\n    env: {BOOT_SECONDS: '1'}\n"
        )
        config.write_text(text + f"server:\n  listen: 127.0.0.1:{api_port}\n")
        super().__init__(repo, api_port)

    def deploy(self, revision: str) -> str:
        answer = httpx.post(
            self.url + "api/deployments",
            json={"service": "web", "environment": "prod", "revision": revision},
            headers=self.auth(),
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


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path)
    yield served
    output = served.stop()
    assert "dashboard and API on" in output


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
    save_screenshot(page, ARTIFACTS / "dashboard", name)


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
    wait_for(lambda: served.record(second)["state"] == "succeeded", 90, "v2 to succeed")
    page.goto(served.url)
    # The revision as the user named it: `v2 (1f03ba05)` (revision_label), not a bare sha.
    [fleet] = served.get("api/services")
    assert fleet["revision_label"].startswith("v2")
    expect(card.locator(".revision")).to_have_text(fleet["revision_label"])
    expect(card.locator(".chart polyline").first).to_be_attached(timeout=30_000)
    shot(page, "4-services-on-v2")
    card.locator("button.rollback").click()
    expect(dialog).to_be_visible()
    expect(dialog.locator("#confirm-token-label")).to_be_hidden()  # the token was kept
    dialog.locator("#confirm-ok").click()
    expect(page).to_have_url(re.compile(r"#/deployment/[0-9a-f]{32}$"))
    expect(state).to_have_text("succeeded", timeout=90_000)
    expect(page.locator("h1")).to_contain_text("rollback web/prod")
    expect(page.locator("h1")).to_contain_text(served.sha("v1")[:8])
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
    expect(phone.locator('section.service[data-route="web.prod"] .revision')).to_contain_text(
        served.sha("v1")[:8]
    )
    expect(phone.locator(".chart").first).to_be_visible()
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    shot(phone, "7-phone-services")
