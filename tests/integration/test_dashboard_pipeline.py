"""The dashboard's pipeline pages and its closed read access in Debian's Chromium (Playwright),
against a real `zerodown serve` of a project with a pipeline: a run started by the CLI is followed
live, a job's log opened, the prod deploy approved by the button; with `read_only_public: false`
the dashboard asks for a token before it shows anything. Screenshots go to
tests/artifacts/dashboard-pipeline/."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.dashboard_fixtures import (
    ARTIFACTS,
    ServedProject,
    browser,
    save_screenshot,
    wait_for,
)
from tests.integration.pipeline_fixtures import free_port, git, make_pipeline_repo

from zerodown.config import load_config
from zerodown.config.routes import environment_listen

__all__ = ["browser"]  # the fixture, imported so pytest finds it

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

JOBS = ("test", "scan", "migrations", "build", "publish", "deploy")


class ServedPipeline(ServedProject):
    """make_pipeline_repo's project (prod needs one approval) under `zerodown serve`."""

    def __init__(self, root: Path, *, read_only_public: bool) -> None:
        self.router_port = free_port()
        api_port = free_port()
        repo = make_pipeline_repo(root, self.router_port, approvals=1)
        server = f"server:\n  listen: 127.0.0.1:{api_port}\n"
        if not read_only_public:
            server += "  read_only_public: false\n"
        with (repo / "zerodown.yml").open("a") as config:
            config.write(server)
        git(repo, "commit", "-q", "-am", "serve the dashboard")
        super().__init__(repo, api_port)


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServedPipeline]:
    served = ServedPipeline(tmp_path, read_only_public=request.param)
    yield served
    assert "dashboard and API on" in served.stop()


def shot(page: Any, name: str) -> None:
    save_screenshot(page, ARTIFACTS / "dashboard-pipeline", name)


def open_page(browser: Any) -> tuple[Any, list[str]]:
    """A new page and the uncaught JavaScript errors it will collect."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page, errors


@pytest.mark.parametrize("served", [True], indirect=True)
def test_run_followed_live_job_log_opened_and_prod_approved_by_button(
    served: ServedPipeline, browser: Any
) -> None:
    out = (served.repo.parent / "pipeline-run.out").open("w")
    started = subprocess.Popen(
        [sys.executable, "-m", "zerodown", "pipeline", "run", "--branch", "main", "--as", "ci"],
        cwd=served.repo,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: bool(served.get("api/pipeline/runs")), 30, "the run to be recorded")
        run_id = served.get("api/pipeline/runs")[0]["id"]
        page, errors = open_page(browser)

        # The list shows the run; its page follows the jobs until the prod approval gate.
        page.goto(served.url + "#/pipelines")
        row = page.locator(f'tr[data-run="{run_id}"]')
        expect(row.locator("td.branch")).to_have_text("main")
        row.locator("a").click()
        expect(page).to_have_url(re.compile(rf"#/pipeline/{run_id}$"))
        state = page.locator("#run-state")
        expect(state).to_have_text("waiting", timeout=30_000)
        jobs = page.locator("table.jobs tbody")
        for name in JOBS[:-1]:
            expect(jobs.locator(f'tr[data-job="{name}"] .badge')).to_have_text("succeeded")
        deploy = jobs.locator('tr[data-job="deploy"] .badge')
        expect(deploy).not_to_have_text("succeeded")
        expect(page.locator("#run-approvers")).to_have_text("none yet")
        shot(page, "1-run-waiting-for-approval")

        # Opening a job narrows the log to its lines; opening it again shows them all.
        log = page.locator("#run-log")
        jobs.locator('tr[data-job="test"] button.job-log').click()
        expect(page.locator("#log-title")).to_contain_text("Log of test")
        expect(log.locator(".ln:visible").first).to_be_visible()
        expect(log).to_contain_text("2 tests ran")
        shown = log.locator(".ln:visible").evaluate_all("ls => ls.map(l => l.dataset.job)")
        assert set(shown) == {"test"}, shown
        assert log.locator(".ln").count() > len(shown), "other jobs' lines should be hidden"
        shot(page, "2-test-job-log")
        page.locator("#log-all").click()
        expect(page.locator("#log-title")).to_have_text("Log")
        assert log.locator(".ln:visible").count() == log.locator(".ln").count()

        # Approve by the button: the dialog asks for the token; the run deploys to prod on the
        # same page (no reload: the marker survives) and ends succeeded.
        page.evaluate("window.stillTheSamePage = true")
        page.locator("button.approve").click()
        dialog = page.locator("dialog#confirm")
        expect(dialog).to_be_visible()
        expect(dialog.locator("#confirm-title")).to_have_text("Approve run")
        dialog.locator("#confirm-token").fill(served.token)
        dialog.locator("#confirm-ok").click()
        expect(dialog).to_be_hidden()
        expect(page.locator("#run-approvers")).to_have_text("browser")
        expect(state).to_have_text("succeeded", timeout=60_000)
        for name in JOBS:
            expect(jobs.locator(f'tr[data-job="{name}"] .badge')).to_have_text("succeeded")
        expect(page.locator("button.approve")).to_have_count(0)
        expect(page.locator(".live-note")).to_have_count(0)
        assert page.evaluate("window.stillTheSamePage") is True
        shot(page, "3-run-succeeded")

        # The deploy job links to its deployment, recorded as the pipeline's doing.
        jobs.locator('tr[data-job="deploy"] a.deployment-link').click()
        expect(page.locator("#deployment-state")).to_have_text("succeeded")
        expect(page.locator("h1")).to_contain_text("deploy web/prod")
        expect(page.locator(".kv")).to_contain_text(f"pipeline:{run_id[:8]}")

        page.goto(served.url + "#/pipelines")
        expect(row.locator(".badge")).to_have_text("succeeded")
        assert errors == []
        assert started.wait(timeout=30) == 0
    finally:
        if started.poll() is None:
            started.kill()
            started.wait()
        out.close()
    sha = git(served.repo, "rev-parse", "main")
    assert served.get("api/pipeline/runs")[0]["sha"] == sha
    prod = environment_listen(load_config(served.repo / "zerodown.yml").config, "prod")[0]
    live = httpx.get(f"http://{prod}/", timeout=5).json()
    assert live["version"] == "v1"


@pytest.mark.parametrize("served", [False], indirect=True)
def test_closed_read_access_asks_for_a_token_then_shows_services(
    served: ServedPipeline, browser: Any
) -> None:
    assert httpx.get(served.url + "api/services", timeout=5).status_code == 401
    page, errors = open_page(browser)
    page.goto(served.url)
    form = page.locator("form#signin")
    expect(form).to_be_visible()
    expect(form).to_contain_text("needs an API token")
    expect(page.locator("section.service")).to_have_count(0)
    shot(page, "4-closed-sign-in")

    # A wrong token is refused with the server's reason; the right one opens the dashboard.
    form.locator("#signin-token").fill("zd_not-a-token")
    form.locator("#signin-ok").click()
    expect(page.locator("#signin-error")).to_contain_text("unknown or revoked token")
    page.locator("#signin-token").fill(served.token)
    page.locator("#signin-ok").click()
    expect(page.locator('section.service[data-route="web.prod"]')).to_contain_text("never deployed")
    expect(page.locator('section.service[data-route="web.dev"]')).to_be_visible()
    expect(page.locator("#project")).to_have_text("shop")
    shot(page, "5-closed-signed-in")

    # A deployment's page follows it with the token too (EventSource cannot send one).
    answer = httpx.post(
        served.url + "api/deployments",
        json={"service": "web", "environment": "dev", "revision": "main"},
        headers=served.auth(),
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    page.goto(f"{served.url}#/deployment/{answer.json()['id']}")
    expect(page.locator("#deployment-state")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#timeline li.ev-instance_healthy")).to_have_count(2)
    shot(page, "6-closed-deployment")
    assert errors == []
