"""The dashboard's promote and abort buttons in Debian's Chromium (Playwright), against a real
`zerodown serve` of the demo repository with a canary whose one step (20 %) waits for a promote:
a dismissed confirmation sends nothing, a confirmed promote finishes the deploy on the new
revision, a confirmed abort rolls the fleet back and the page says why. Screenshots go to
tests/artifacts/dashboard-canary/."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.dashboard_fixtures import (
    ARTIFACTS,
    ServedProject,
    browser,
    run_in_thread,
    save_screenshot,
    wait_for,
)
from tests.integration.pipeline_fixtures import free_port

from zerodown.config.loader import load_config
from zerodown.demo import make_repository
from zerodown.store.sql import open_store

__all__ = ["browser"]  # the fixture, imported so pytest finds it

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

# No traffic reaches the canary in these tests, so every analysis is inconclusive: `pass` keeps
# the step waiting for the button instead of failing it at the limit.
CANARY = (
    "{type: canary, steps: [{weight: 20}], analysis: "
    "{interval: 1s, min_requests: 30, inconclusive_limit: 1s, on_inconclusive: pass}}"
)


class ServedCanary(ServedProject):
    """The demo repository (prod as a canary waiting for promote) under `zerodown serve`, with
    v1 deployed as the baseline."""

    def __init__(self, root: Path) -> None:
        self.router_port = free_port()
        api_port = free_port()
        repo = make_repository(root, self.router_port)
        config = repo / "zerodown.yml"
        text = config.read_text().replace("{type: rolling, batch: 1, surge: true}", CANARY)
        assert CANARY in text
        config.write_text(text + f"server:\n  listen: 127.0.0.1:{api_port}\n")
        super().__init__(repo, api_port)

    def deploy(self, revision: str) -> str:
        """Start a deploy of web/prod through the API; its id."""
        answer = httpx.post(
            self.url + "api/deployments",
            json={"service": "web", "environment": "prod", "revision": revision},
            headers=self.auth(),
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    def state(self, deployment_id: str) -> str:
        """The deployment's recorded state."""
        return str(self.get(f"api/deployments/{deployment_id}")["state"])

    def waits_for_promote(self, deployment_id: str) -> bool:
        """Whether the canary holds its step (traffic on both revisions) until a promote."""
        progress = self.get(f"api/deployments/{deployment_id}")["progress"] or {}
        return bool(progress.get("waiting_for_promote"))

    def serving(self) -> str:
        """The version the router's answer comes from."""
        answer = httpx.get(f"http://127.0.0.1:{self.router_port}/", timeout=5)
        return str(answer.json()["version"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedCanary]:
    """One served project for the module; v1 serves (a canary with no baseline starts it all)."""
    served = ServedCanary(tmp_path_factory.mktemp("canary"))
    try:
        first = served.deploy("v1")
        wait_for(lambda: served.state(first) == "succeeded", 60, "v1 to be deployed")
        yield served
    finally:
        assert "dashboard and API on" in served.stop()


def shot(page: Any, name: str) -> None:
    save_screenshot(page, ARTIFACTS / "dashboard-canary", name)


def open_waiting_canary(browser: Any, served: ServedCanary) -> tuple[Any, list[str], list[str]]:
    """Deploy the revision that does not serve now, open its page and wait until its step holds
    (20 %, analysed); the page, its JavaScript errors and the action URLs it POSTed."""
    old = served.serving()
    new = "v2" if old == "v1" else "v1"
    deployment = served.deploy(new)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    posted: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    page.goto(f"{served.url}#/deployment/{deployment}")
    timeline = page.locator("#timeline")
    expect(timeline.locator("li.ev-step").first).to_contain_text("20 %", timeout=60_000)
    expect(timeline.locator("li.ev-analysis").first).to_be_visible(timeout=30_000)
    expect(page.locator("#deployment-state")).to_have_text("in_progress")
    expect(page.locator("h1")).to_contain_text("deploy web/prod")
    return page, errors, posted


def confirm(page: Any, button: str, title: str, token: str, *, accept: bool) -> None:
    """Click `button` in the deployment's header and accept or dismiss its confirmation (giving
    `token` when the dialog asks for one: the first action of a tab)."""
    page.locator(f".actions button.{button}").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#confirm-title")).to_have_text(title)
    if dialog.locator("#confirm-token-label").is_visible():
        dialog.locator("#confirm-token").fill(token)
    dialog.locator("#confirm-ok" if accept else "#confirm-cancel").click()
    expect(dialog).to_be_hidden()


def test_promote_button_dismissed_then_confirmed_finishes_the_canary(
    served: ServedCanary, browser: Any
) -> None:
    old = served.serving()
    page, errors, posted = open_waiting_canary(browser, served)
    deployment = page.url.rsplit("/", 1)[1]
    timeline = page.locator("#timeline")
    promote = page.locator(".actions button.promote")
    expect(promote).to_be_visible()
    expect(page.locator(".actions button.abort")).to_be_visible()
    shot(page, "1-canary-waiting-for-promote")

    # Dismissed: nothing is sent; the step keeps being analysed and still waits.
    confirm(page, "promote", "Promote", served.token, accept=False)
    analysed = timeline.locator("li.ev-analysis").count()
    expect(timeline.locator("li.ev-analysis")).to_have_count(analysed + 2, timeout=15_000)
    assert not [url for url in posted if "/api/" in url], posted
    expect(timeline.locator("li.ev-step")).to_have_count(1)
    expect(page.locator("#deployment-state")).to_have_text("in_progress")
    assert served.state(deployment) == "in_progress"

    # Confirmed: the command is recorded on the timeline and the fleet moves to the new revision.
    confirm(page, "promote", "Promote", served.token, accept=True)
    # The canary records the promote before it acts on it; the step events after it (the final
    # 100 %) may be in already when the page is looked at (`.last` failed then under load).
    promoted = timeline.locator("li.ev-step", has_text="promote by browser")
    expect(promoted).to_have_count(1)
    # The POST's answer came before that event showed, so its request event is in by now.
    assert [url for url in posted if "/api/" in url] == [
        f"{served.url}api/deployments/{deployment}/promote"
    ]
    expect(page.locator("#deployment-state")).to_have_text("succeeded", timeout=60_000)
    steps = timeline.locator("li.ev-step").all_inner_texts()
    assert [i for i, text in enumerate(steps) if "promote by browser" in text] == [1], steps
    assert "100 %" in steps[-1], steps
    expect(promote).to_have_count(0)
    expect(page.locator(".live-note")).to_have_count(0)
    shot(page, "2-canary-promoted")
    new = "v2" if old == "v1" else "v1"
    assert {served.serving() for _ in range(10)} == {new}
    assert errors == []


def test_abort_button_rolls_the_canary_back_with_its_reason(
    served: ServedCanary, browser: Any
) -> None:
    old = served.serving()
    page, errors, _ = open_waiting_canary(browser, served)
    shot(page, "3-canary-waiting-before-abort")

    confirm(page, "abort", "Abort deployment", served.token, accept=True)
    expect(page.locator("#deployment-state")).to_have_text("rolled_back", timeout=60_000)
    expect(page.locator("#deployment-reason")).to_contain_text("aborted by browser (API)")
    expect(page.locator("#timeline li.ev-rollback_finished")).to_have_count(1)
    expect(page.locator(".actions button.abort")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"#/deployment/[0-9a-f]{32}$"))
    shot(page, "4-canary-aborted")
    assert {served.serving() for _ in range(10)} == {old}
    assert errors == []


@pytest.fixture
def served_alone(tmp_path: Path) -> Iterator[ServedCanary]:
    """A served project of the test's own (it stops serve itself); everything it started is
    stopped at the end, whether the test passed or not."""
    served = ServedCanary(tmp_path)
    try:
        yield served
    finally:
        served.stop()


def test_stopping_serve_rolls_back_a_canary_it_runs_and_exits(served_alone: ServedCanary) -> None:
    """Ctrl-C of `zerodown serve` with a canary waiting for promote: the canary rolls back, serve
    exits 0, and the router keeps serving the old revision (it hung before, waiting forever)."""
    served = served_alone
    first = served.deploy("v1")
    wait_for(lambda: served.state(first) == "succeeded", 60, "v1 to be deployed")
    second = served.deploy("v2")
    # Waiting for `in_progress` was not enough: Ctrl-C while v2 still built ended it `failed;
    # nothing was changed`, rightly (one run in two under load), and it proved nothing here.
    wait_for(lambda: served.waits_for_promote(second), 60, "the v2 canary to wait for promote")
    served.serve.send_signal(signal.SIGINT)
    assert served.serve.wait(timeout=90) == 0
    output = Path(served.log.name).read_text()
    assert "aborted 1 running deployment(s)" in output
    state, reason = run_in_thread(_recorded(served.repo, second))
    assert state == "rolled_back", reason
    assert reason.startswith("aborted: zerodown serve stopped"), reason
    assert {served.serving() for _ in range(10)} == {"v1"}


async def _recorded(repo: Path, deployment_id: str) -> tuple[str, str]:
    """A deployment's state and reason, read from the history (serve and its API are gone)."""
    store = open_store(load_config(repo / "zerodown.yml").store_url)
    try:
        record = await store.get_deployment(deployment_id)
        return record.state.value, record.reason or ""
    finally:
        await store.close()
