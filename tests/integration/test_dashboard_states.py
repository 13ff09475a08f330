"""The dashboard says what is true, in Debian's Chromium (Playwright) against a real `zerodown
serve` of the demo repository (prod as a canary whose one step, 20 %, waits for a promote):
a never-deployed environment reads "not deployed yet" (no red "0 healthy") and offers no
rollback; a canary shows its traffic per revision and "waiting for promote"; Pause, Resume and
Promote are enabled only when they apply; repeated analysis lines fold into one with a count;
charts break their lines where datapoints are missing.
Screenshots go to tests/artifacts/dashboard-states/."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration.dashboard_fixtures import (
    ARTIFACTS,
    browser,
    save_screenshot,
    wait_for,
)
from tests.integration.test_dashboard_canary import ServedCanary

__all__ = ["browser"]  # the fixture, imported so pytest finds it

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect


class ServedStates(ServedCanary):
    """The canary project of the promote-button tests (nothing deployed yet), plus tags."""

    def sha(self, tag: str) -> str:
        """The commit a tag of the demo repository names."""
        return subprocess.run(
            ["git", "rev-parse", tag], cwd=self.repo, capture_output=True, text=True, check=True
        ).stdout.strip()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedStates]:
    served = ServedStates(tmp_path_factory.mktemp("states"))
    try:
        yield served
    finally:
        assert "dashboard and API on" in served.stop()


def shot(page: Any, name: str) -> None:
    save_screenshot(page, ARTIFACTS / "dashboard-states", name)


def confirm(page: Any, button: str, token: str) -> None:
    """Click `button` in the deployment's header and confirm (with the token if asked)."""
    page.locator(f".actions button.{button}").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    if dialog.locator("#confirm-token-label").is_visible():
        dialog.locator("#confirm-token").fill(token)
    dialog.locator("#confirm-ok").click()
    expect(dialog).to_be_hidden()


def expect_enabled(page: Any, enabled: set[str], disabled: set[str]) -> None:
    for name in enabled:
        expect(page.locator(f".actions button.{name}")).to_be_enabled()
    for name in disabled:
        expect(page.locator(f".actions button.{name}")).to_be_disabled()


def test_from_never_deployed_through_a_waiting_canary_the_page_says_what_is_true(
    served: ServedStates, browser: Any
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(served.url)
    card = page.locator('section.service[data-route="web.prod"]')

    # 1. Never deployed: a neutral "not deployed yet", no red badge, nothing to roll back to.
    expect(card.locator("header .badge")).to_have_text("not deployed yet")
    expect(card.locator(".badge.unhealthy")).to_have_count(0)
    expect(card.locator("button.rollback")).to_be_disabled()
    expect(card.locator("button.deploy")).to_be_enabled()
    shot(page, "1-not-deployed-yet")

    # 2. v1 serves (no baseline: the whole fleet starts); still no earlier good revision.
    first = served.deploy("v1")
    wait_for(lambda: served.state(first) == "succeeded", 60, "v1 to be deployed")
    [fleet] = served.get("api/services")
    assert fleet["revision_label"].startswith("v1")
    page.reload()
    expect(card.locator(".revision")).to_have_text(fleet["revision_label"])
    expect(card.locator("header .badge")).to_have_text(re.compile(r"^[1-9]\d* healthy$"))
    expect(card.locator("button.rollback")).to_be_disabled()
    assert card.locator("button.rollback").get_attribute("title") == (
        "no earlier good revision to roll back to"
    )

    # 3. The v2 canary holds 20 % and waits: its page says so, with the weights per revision.
    deployment = served.deploy("v2")
    page.goto(f"{served.url}#/deployment/{deployment}")
    status = page.locator("#canary-status")
    expect(status).to_have_text("step 1/1: waiting for promote", timeout=60_000)
    weights = page.locator("#canary .weight")
    expect(weights).to_have_count(2)
    expect(weights.nth(0)).to_contain_text("20 %")
    expect(weights.nth(0)).to_contain_text("v2")
    expect(weights.nth(1)).to_contain_text(served.sha("v1")[:8])
    expect(weights.nth(1)).to_contain_text("80 %")
    expect_enabled(page, {"abort", "promote", "promote_full", "pause"}, {"resume"})
    shot(page, "2-canary-waiting-for-promote")

    # 4. Every analysis says the same: one line with a count, not a flood.
    timeline = page.locator("#timeline")
    wait_for(lambda: timeline.locator("li.ev-analysis").count() >= 6, 30, "6 analyses")
    assert timeline.locator("li.ev-analysis:not(.repeat)").count() <= 2
    expect(timeline.locator(".repeat-count").last).to_have_text(re.compile(r"^×\d+ \(last \+"))
    shot(page, "3-analyses-folded")

    # 5. The services page shows the split and offers neither deploy nor rollback meanwhile.
    page.goto(served.url)
    expect(card.locator(".traffic .weight")).to_have_count(2)
    expect(card.locator(".traffic")).to_contain_text("20 %")
    expect(card.locator(".traffic")).to_contain_text("80 %")
    expect(card.locator("button.deploy")).to_be_disabled()
    expect(card.locator("button.rollback")).to_be_disabled()
    shot(page, "4-services-during-canary")

    # 6. Pause: only Resume (and Promote, Abort) apply; Resume: it waits for promote again.
    page.goto(f"{served.url}#/deployment/{deployment}")
    expect(status).to_have_text("step 1/1: waiting for promote", timeout=30_000)
    confirm(page, "pause", served.token)
    expect(status).to_have_text("step 1/1: paused (resume to go on)", timeout=30_000)
    expect_enabled(page, {"abort", "promote", "resume"}, {"pause"})
    shot(page, "5-canary-paused")
    confirm(page, "resume", served.token)
    expect(status).to_have_text("step 1/1: waiting for promote", timeout=30_000)
    expect_enabled(page, {"pause"}, {"resume"})

    # 7. Promote: the deploy ends on v2 and no button is left; now v1 is there to roll back to.
    confirm(page, "promote", served.token)
    expect(page.locator("#deployment-state")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator(".actions button")).to_have_count(0)
    expect(page.locator("#canary")).to_have_count(0)
    page.goto(served.url)
    expect(card.locator("button.rollback")).to_be_enabled()
    assert "v1" in (card.locator("button.rollback").get_attribute("title") or "")
    expect(card.locator(".traffic")).to_have_count(0)
    shot(page, "6-services-after-promote")
    assert errors == []


def test_charts_break_their_lines_where_datapoints_are_missing(
    served: ServedStates, browser: Any
) -> None:
    """Datapoints at 0-20 s and 60-70 s of one revision: two lines, not one across the gap; a
    lone point between gaps is a dot."""
    page = browser.new_page(viewport={"width": 800, "height": 600})
    page.goto(served.url)
    expect(page.locator("h1")).to_have_text("Services")
    drawn = page.evaluate(
        """() => {
          const at = [1000, 1010, 1020, 1060, 1070, 1200];
          const series = at.map((t) => ({ at: t, revision: "abc", requests: 5 }));
          series.push({ at: 1010, revision: "def", requests: 3 });
          const chart = ZdCharts.lineChart("requests", series, (p) => p.requests, "x",
            { period: 10, labels: { abc: "v2 (abc)" } });
          return {
            lines: [...chart.querySelectorAll("polyline")]
              .map((l) => l.getAttribute("points").split(" ").length),
            dots: chart.querySelectorAll("circle").length,
            legend: chart.querySelector(".legend").textContent,
          };
        }"""
    )
    assert drawn == {"lines": [3, 2], "dots": 2, "legend": "v2 (abc)def"}
