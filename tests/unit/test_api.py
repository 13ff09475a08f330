"""The HTTP API over a control plane of fakes (runtime, router, prober) and a real SQLite history:
auth, reads, deploy/rollback/abort in the background, the SSE stream, KPIs."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.unit.fakes import FakeProber, FakeRouter, FakeRuntime, make_loaded

from zerodown.config.loader import LoadedConfig
from zerodown.config.server import ServerConfig
from zerodown.control_plane import ControlPlane
from zerodown.domain.events import DeploymentEvent, DeploymentObserver, DeploymentState, EventKind
from zerodown.engine.deployer import Deployer
from zerodown.server.api import create_app
from zerodown.server.auth import TokenStore, hash_token
from zerodown.store.sql import SqlHistoryStore, open_store

pytestmark = pytest.mark.timeout(60)


class FakePlane(ControlPlane):
    """The real ControlPlane, with the fakes' prober in its deployers."""

    def __init__(self, loaded: LoadedConfig, store: SqlHistoryStore) -> None:
        self.fake_runtime = FakeRuntime()
        self.prober = FakeProber(self.fake_runtime)
        self.extra_observers: list[DeploymentObserver] = []
        super().__init__(loaded, self.fake_runtime, FakeRouter(), store)

    def deployer(self, observers: Sequence[DeploymentObserver] = ()) -> Deployer:
        return Deployer(
            self.loaded,
            runtime=self.runtime,
            router=self.router,
            store=self.store,
            observers=[*observers, *self.extra_observers],
            prober=self.prober,
        )


class Api:
    """An httpx client on the app, the plane behind it and a valid token."""

    def __init__(self, client: httpx.AsyncClient, plane: FakePlane, token: str) -> None:
        self.client = client
        self.plane = plane
        self.token = token
        self.auth = {"Authorization": f"Bearer {token}"}

    async def deploy(self, revision: str) -> httpx.Response:
        body = {"service": "api", "environment": "prod", "revision": revision}
        return await self.client.post("/api/deployments", json=body, headers=self.auth)

    async def follow(self, deployment_id: str) -> list[tuple[str, dict[str, Any]]]:
        """Read the SSE stream to its end: (event name, data) pairs."""
        messages: list[tuple[str, dict[str, Any]]] = []
        url = f"/api/deployments/{deployment_id}/events/stream"
        async with self.client.stream("GET", url) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            name = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    messages.append((name, json.loads(line[6:])))
        return messages


async def make_api(tmp_path: Path, settings: ServerConfig | None = None) -> AsyncIterator[Api]:
    loaded = make_loaded(tmp_path, instances=2)
    store = open_store(f"sqlite:///{tmp_path / 'history.db'}")
    plane = FakePlane(loaded, store)
    token = await TokenStore(store.engine).create("tester")
    app = create_app(plane, settings=settings or ServerConfig())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://zerodown.test") as client:
        yield Api(client, plane, token)
    await store.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for value in make_api(tmp_path):
        yield value


async def test_openapi_lists_reads_and_actions_with_bearer_auth(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    assert {"/api/services", "/api/deployments", "/api/kpis", "/api/rollback"} <= set(
        schema["paths"]
    )
    assert "/api/deployments/{deployment_id}/events/stream" in schema["paths"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_the_dashboard_is_served_from_local_files(api: Api) -> None:
    page = await api.client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "http" not in page.text.split("<body>")[1].replace('href="#', "")  # no CDN
    script = await api.client.get("/static/app.js")
    assert script.status_code == 200 and "EventSource" in script.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/deployments", {"service": "api", "environment": "prod", "revision": "v1"}),
        ("/api/rollback", {"service": "api", "environment": "prod"}),
        ("/api/deployments/abcdef12/abort", None),
    ],
)
async def test_actions_without_a_valid_token_get_401(
    api: Api, path: str, body: dict[str, str] | None
) -> None:
    assert (await api.client.post(path, json=body)).status_code == 401
    wrong = {"Authorization": "Bearer zd_not-a-token"}
    assert (await api.client.post(path, json=body, headers=wrong)).status_code == 401
    assert await api.plane.store.list_deployments() == []


async def test_reads_are_open_by_default_and_need_a_token_when_closed(tmp_path: Path) -> None:
    async for api in make_api(tmp_path, ServerConfig(read_only_public=False)):
        assert (await api.client.get("/api/services")).status_code == 401
        assert (await api.client.get("/api/services", headers=api.auth)).status_code == 200
    async for api in make_api(tmp_path / "open"):
        assert (await api.client.get("/api/services")).status_code == 200


async def test_tokens_are_stored_as_sha256_and_revoking_one_locks_it_out(api: Api) -> None:
    tokens = TokenStore(api.plane.store.engine)  # type: ignore[attr-defined]
    with api.plane.store.engine.connect() as conn:  # type: ignore[attr-defined]
        stored = [row[0] for row in conn.exec_driver_sql("SELECT token_hash FROM api_tokens")]
    assert stored == [hash_token(api.token)] and api.token not in stored
    assert await tokens.verify(api.token) == "tester"
    assert await tokens.revoke("tester")
    assert (await api.deploy("v1")).status_code == 401


async def test_deploy_returns_202_and_its_stream_shows_it_to_success(api: Api) -> None:
    answer = await api.deploy("v1")
    assert answer.status_code == 202
    deployment_id = answer.json()["id"]
    messages = await api.follow(deployment_id)
    kinds = [data["kind"] for name, data in messages if name == "deployment_event"]
    assert kinds[0] == "state" and "batch_started" in kinds and "instance_healthy" in kinds
    assert messages[-1][0] == "end" and messages[-1][1]["state"] == "succeeded"
    record = (await api.client.get(f"/api/deployments/{deployment_id}")).json()
    assert (record["state"], record["actor"]) == ("succeeded", "tester")
    services = (await api.client.get("/api/services")).json()
    assert services[0]["revision"] == "v1" and services[0]["healthy"] == 2


async def test_a_stream_resumes_after_last_event_id(api: Api) -> None:
    deployment_id = (await api.deploy("v1")).json()["id"]
    everything = await api.follow(deployment_id)
    events = (await api.client.get(f"/api/deployments/{deployment_id}/events?after=3")).json()
    assert [e["seq"] for e in events] == [
        d["seq"] for n, d in everything if n == "deployment_event" and d["seq"] > 3
    ]
    url = f"/api/deployments/{deployment_id}/events/stream"
    resumed = await api.client.get(url, headers={"Last-Event-ID": "3"})
    assert f"id: {events[0]['seq']}" in resumed.text and "id: 3\n" not in resumed.text


async def test_abort_rolls_a_running_deployment_back_with_the_actor_in_the_reason(
    api: Api,
) -> None:
    await api.follow((await api.deploy("v1")).json()["id"])
    api.plane.prober.gates["v2"] = asyncio.Event()  # v2 waits at its first health probe
    deployment_id = (await api.deploy("v2")).json()["id"]
    await asyncio.wait_for(api.plane.prober.waiting.wait(), 10)
    second = await api.deploy("v3")
    assert second.status_code == 409  # one deployment per service+environment at a time
    aborted = await api.client.post(f"/api/deployments/{deployment_id}/abort", headers=api.auth)
    assert aborted.status_code == 202
    end = (await api.follow(deployment_id))[-1][1]
    assert end["state"] == "rolled_back" and "aborted by tester" in end["reason"]
    again = await api.client.post(f"/api/deployments/{deployment_id}/abort", headers=api.auth)
    assert again.status_code == 409


async def test_rollback_through_the_api_restores_the_previous_revision(api: Api) -> None:
    for revision in ("v1", "v2"):
        await api.follow((await api.deploy(revision)).json()["id"])
    body = {"service": "api", "environment": "prod"}
    answer = await api.client.post("/api/rollback", json=body, headers=api.auth)
    assert answer.status_code == 202
    end = (await api.follow(answer.json()["id"]))[-1][1]
    assert (end["kind"], end["state"], end["revision"]) == ("rollback", "succeeded", "v1")


class SlowAtTheEnd:
    """An observer that takes a while over a deployment's end (a slow notifier, say)."""

    async def on_event(self, event: DeploymentEvent) -> None:
        if event.kind is EventKind.STATE and DeploymentState(event.data["to"]).terminal:
            await asyncio.sleep(1.0)  # the work being simulated, not a wait for something


async def test_a_deploy_right_after_one_ended_is_accepted_while_it_winds_down(api: Api) -> None:
    """The stream said v1 ended; its task still tells a slow observer: v2 is accepted, no 409."""
    api.plane.extra_observers.append(SlowAtTheEnd())
    await api.follow((await api.deploy("v1")).json()["id"])
    second = await api.deploy("v2")
    assert second.status_code == 202, second.text
    end = (await api.follow(second.json()["id"]))[-1][1]
    assert (end["state"], end["revision"]) == ("succeeded", "v2")


async def test_unknown_names_get_404_and_bad_input_422(api: Api) -> None:
    body = {"service": "nope", "environment": "prod", "revision": "v1"}
    assert (
        await api.client.post("/api/deployments", json=body, headers=api.auth)
    ).status_code == 404
    assert (await api.client.get("/api/deployments/ffffffff")).status_code == 404
    bad = {"service": "api", "environment": "prod", "revision": "$(rm -rf /)"}
    assert (
        await api.client.post("/api/deployments", json=bad, headers=api.auth)
    ).status_code == 422


async def test_kpis_endpoint_reports_configured_services_against_targets(api: Api) -> None:
    await api.follow((await api.deploy("v1")).json()["id"])
    [kpis] = (await api.client.get("/api/kpis?days=7")).json()
    assert (kpis["service"], kpis["environment"], kpis["deployments"]) == ("api", "prod", 1)
    assert kpis["success_rate"] == 1.0
    assert {c["name"] for c in kpis["checks"]} >= {"success rate", "deploy frequency", "downtime"}


async def test_alarms_and_metrics_answer_without_measurements(api: Api) -> None:
    assert (await api.client.get("/api/alarms")).json() == []
    metrics = (await api.client.get("/api/metrics?service=api&environment=prod")).json()
    assert metrics["route"] == "api.prod" and metrics["series"] == []


async def test_serving_on_a_busy_port_is_a_config_error_naming_server_listen(api: Api) -> None:
    from zerodown.errors import ConfigError
    from zerodown.server.http import HttpServer

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        server = HttpServer(api.plane, ServerConfig(listen=f"127.0.0.1:{port}"))
        with pytest.raises(ConfigError, match=r"server\.listen"):
            await server.start()


async def test_prometheus_endpoint_exposes_the_router_metrics_of_the_current_period(
    api: Api,
) -> None:
    """GET /metrics renders the router's counters, including the period still running."""
    from prometheus_client.parser import text_string_to_metric_families

    from zerodown.routers.base import RouteSpec, TargetSpec
    from zerodown.routers.builtin.recorder import MetricsRecorder
    from zerodown.routers.builtin.table import RoutingTable

    recorder = MetricsRecorder(RoutingTable(), now=lambda: 1000.0)
    recorder.table.apply_route(RouteSpec("api.prod"))
    target = recorder.table.add_target(
        TargetSpec("api.prod", "i1", "127.0.0.1", 1, revision="r1"), healthy=True
    )
    route = recorder.table.routes()[0]
    for status in (200, 200, 503):
        recorder.on_response(route, target, status, 0.01, False)

    async def metrics(since: float | None = None) -> dict[str, object]:
        return recorder.snapshot(since)

    api.plane.router.metrics = metrics  # type: ignore[attr-defined]  # as the builtin router
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["zerodown_requests"].samples[0].value == 3


async def test_services_say_what_a_rollback_would_deploy_and_none_without_an_earlier_good_one(
    api: Api,
) -> None:
    """The dashboard enables "Roll back" only when `rollback_to` names a revision."""
    await api.follow((await api.deploy("v1")).json()["id"])
    [fleet] = (await api.client.get("/api/services")).json()
    assert fleet["rollback_to"] is None
    await api.follow((await api.deploy("v2")).json()["id"])
    [fleet] = (await api.client.get("/api/services")).json()
    assert fleet["rollback_to"]["revision"] == "v1"


async def test_a_deployment_carries_its_canary_progress_and_the_actions_that_apply(
    api: Api,
) -> None:
    """A canary holding its first step (10 % for 60 s, the default steps) offers Promote and
    Pause; paused, it offers Resume instead; a finished rolling deploy offers nothing."""
    from zerodown.domain.records import DeploymentRecord

    first = (await api.deploy("v1")).json()["id"]
    await api.follow(first)
    store = api.plane.store
    canary = DeploymentRecord(
        "c" * 32,
        "api",
        "prod",
        "v2",
        "canary",
        DeploymentState.IN_PROGRESS,
        "me",
        1000.0,
        previous_revision="v1",
    )
    await store.create_deployment(canary)
    data = {"step": 1, "weight": 10, "canary": 1, "baseline": 2}
    await store.record_event(DeploymentEvent(canary.id, EventKind.STEP, "step 1", data, 1001.0))
    shown = (await api.client.get(f"/api/deployments/{canary.id}")).json()
    progress = shown["progress"]
    assert (progress["status"], progress["hold_ends_at"]) == ("step 1/2: holding 60 s", 1061.0)
    assert [(w["revision"], w["percent"]) for w in progress["weights"]] == [("v2", 10), ("v1", 90)]
    expected = {"abort": True, "promote": True, "promote_full": True, "pause": True}
    assert shown["actions"] == {**expected, "resume": False}

    paused = {"step": 1, "command": "pause", "actor": "me"}
    await store.record_event(DeploymentEvent(canary.id, EventKind.STEP, "pause", paused, 1002.0))
    shown = (await api.client.get(f"/api/deployments/{canary.id}")).json()
    assert shown["progress"]["paused"]
    assert shown["actions"] == {**expected, "pause": False, "resume": True}

    finished = (await api.client.get(f"/api/deployments/{first}")).json()
    assert finished["progress"] is None and not any(finished["actions"].values())


async def test_an_environment_removed_from_zerodown_yml_leaves_the_kpis_and_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve runs for days: after `staging` is removed from the file, reads list only `prod`
    (staging's history stays in the store)."""
    import yaml
    from tests.unit.fakes import FAST_HEALTH

    from zerodown import control_plane
    from zerodown.config.loader import load_config
    from zerodown.domain.records import DeploymentRecord

    def write(environments: list[str]) -> Path:
        service = {"workdir": ".", "run": "python app.py", "health": FAST_HEALTH}
        data = {
            "state_dir": str(tmp_path / "state"),
            "services": {"api": service},
            "environments": {name: {} for name in environments},
        }
        path = tmp_path / "zerodown.yml"
        path.write_text(yaml.safe_dump(data))
        return path

    loaded = load_config(write(["prod", "staging"]))
    store = open_store(f"sqlite:///{tmp_path / 'history.db'}")
    plane = FakePlane(loaded, store)

    async def same_router(_: object) -> object:
        return plane.router  # the fake stays: a changed config would open a real router

    monkeypatch.setattr(control_plane, "open_router", same_router)
    staged = DeploymentRecord(
        "s" * 32, "api", "staging", "v1", "rolling", DeploymentState.SUCCEEDED, "me", 1e9
    )
    await store.create_deployment(staged)
    transport = httpx.ASGITransport(app=create_app(plane, settings=ServerConfig()))
    async with httpx.AsyncClient(transport=transport, base_url="http://zerodown.test") as client:

        async def listed(path: str) -> list[str]:
            return sorted(item["environment"] for item in (await client.get(path)).json())

        assert await listed("/api/kpis?days=3660") == ["prod", "staging"]
        write(["prod"])
        assert await listed("/api/kpis?days=3660") == ["prod"]
        assert await listed("/api/services") == ["prod"]
        assert (await client.get("/api/overview")).json()["environments"] == ["prod"]
    assert [r.environment for r in await store.list_deployments()] == ["staging"]
    await store.close()
