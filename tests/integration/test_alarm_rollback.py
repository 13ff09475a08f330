"""An alarm rolls a bad revision back: a real deployment through the Deployer, real instances
behind the real router, real load; revision `bad` answers 5xx on 20 % of requests and a 10 s
5xx-count alarm, evaluated by the AlarmGuard on the router's live metrics, fails it."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from zerodown.alarms.bake import BakeWindow
from zerodown.alarms.guard import AlarmGuard
from zerodown.alarms.history import alarm_history
from zerodown.config.loader import LoadedConfig, load_config
from zerodown.domain.events import DeploymentState, EventKind
from zerodown.engine.deployer import Deployer, DeployRequest
from zerodown.loadgen import LoadSpec, run_load
from zerodown.routers.builtin.client import BuiltinRouter, ensure_router, stop_router
from zerodown.runtimes.local import LocalRuntime
from zerodown.store.sql import SqlHistoryStore, open_store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WEBAPP = Path(__file__).resolve().parents[2] / "examples" / "webapp"
RUN = (
    'if [ "$ZERODOWN_REVISION" = bad ]; then export ERROR_RATE=0.2; fi; '
    f"exec {sys.executable} app.py"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(root: Path, port: int) -> LoadedConfig:
    data = {
        "state_dir": "state",
        "router": {"listen": [f"127.0.0.1:{port}"]},
        "services": {
            "api": {
                "workdir": str(WEBAPP),
                "run": RUN,
                "instances": 2,
                "drain_timeout": 5,
                "stop_timeout": 5,
                "health": {
                    "path": "/health",
                    "healthy_threshold": 1,
                    "interval": 0.2,
                    "start_interval": 0.1,
                    "timeout": 2,
                    "deadline": 30,
                },
            }
        },
        "environments": {
            "prod": {
                "bake_window": "60s",
                "alarms": [
                    {
                        "name": "api-5xx",
                        "metric": "HTTPCode_5XX_Count",
                        "statistic": "sum",
                        "comparison": ">",
                        "threshold": 5,
                        "period": "10s",
                        "evaluation_periods": 1,
                        "treat_missing_data": "notBreaching",
                    }
                ],
            }
        },
    }
    path = root / "zerodown.yml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, environ={})


@pytest.fixture
async def root() -> AsyncIterator[Path]:
    # A short path: the router's control socket must fit in sun_path (108 bytes).
    path = Path(tempfile.mkdtemp(prefix="zd-a-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_5xx_alarm_rolls_back_a_revision_with_20_percent_errors_under_load(
    root: Path,
) -> None:
    port = _free_port()
    loaded = _config(root, port)
    state = loaded.state_dir
    runtime = LocalRuntime(state)
    store: SqlHistoryStore | None = None
    try:
        await ensure_router(state, [f"127.0.0.1:{port}"])
        store = open_store(f"sqlite:///{state / 'history.db'}")
        deployer = Deployer(
            loaded,
            runtime=runtime,
            router=BuiltinRouter(state),
            store=store,
            guards=[AlarmGuard(store=store)],
            verifiers=[BakeWindow()],
        )
        plain = Deployer(loaded, runtime=runtime, router=BuiltinRouter(state), store=store)
        first = await plain.deploy(DeployRequest("api", "prod", "v1", "test"))  # no bake
        assert first.state is DeploymentState.SUCCEEDED, first.reason

        stop = asyncio.Event()
        spec = LoadSpec(url=f"http://127.0.0.1:{port}", connections=20, max_seconds=120)
        load = asyncio.ensure_future(run_load(spec, stop))
        try:
            record = await deployer.deploy(DeployRequest("api", "prod", "bad", "test"))
        finally:
            stop.set()
            report = await load
        events = [event for _, event in await store.events(record.id)]

        assert record.state is DeploymentState.ROLLED_BACK, record.reason
        assert "api-5xx" in (record.reason or "")
        alarms = [e for e in events if e.kind is EventKind.ALARM]
        assert alarms[-1].data["new_state"] == "ALARM"
        assert alarms[-1].data["value"] > 5 and alarms[-1].data["threshold"] == 5
        assert not any("passed without an alarm" in e.message for e in events)
        assert report.versions["bad"] > 0  # the bad revision did serve before the rollback
        history = await alarm_history(store.engine, environment="prod")
        assert history[0].alarm == "api-5xx" and history[0].new_state == "ALARM"
        infos = await runtime.list("api")
        assert sorted(i.revision for i in infos if i.state == "running") == ["v1", "v1"]
        rollback = next(e for e in events if e.kind is EventKind.ROLLBACK_STARTED)
        bad_traffic = next(e for e in events if e.kind is EventKind.TRAFFIC_ADDED)
        print(f"first bad traffic -> rollback started: {rollback.at - bad_traffic.at:.1f} s")
    finally:
        for info in await runtime.list():
            await runtime.stop(info.instance_id, timeout=2)
            await runtime.remove(info.instance_id)
        await stop_router(state, timeout=10)
        if store is not None:
            await store.close()
