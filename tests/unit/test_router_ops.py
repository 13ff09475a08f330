"""`RouterOps`, the built-in router's control ops, on a real table, event log and state file with
a fake router process: reads are answered during a handoff, changes wait for it (RetryLater),
an answered change is in state.json, and the process's own ops go to the process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from zerodown.routers.base import RouteSpec
from zerodown.routers.builtin.control import ControlChannel, FdReply, RetryLater
from zerodown.routers.builtin.ops import RouterOps
from zerodown.routers.builtin.recorder import MetricsRecorder
from zerodown.routers.builtin.state import EventLog, StateFile
from zerodown.routers.builtin.table import RoutingTable


class FakeProcess:
    """A `RouterProcess` that records what the ops asked of it."""

    def __init__(self) -> None:
        self.listen = ["127.0.0.1:8080"]
        self.handing_off = False
        self.asked: list[str] = []

    async def add_listeners(self, addresses: list[str]) -> dict[str, Any]:
        self.asked.append("listen")
        self.listen.extend(addresses)
        return {"listen": self.listen, "added": addresses}

    async def handoff(self, channel: ControlChannel) -> FdReply:
        self.asked.append("handoff")
        self.handing_off = True
        return FdReply({"pid": 1}, [])

    def retire(self, channel: ControlChannel) -> dict[str, Any]:
        self.asked.append("retire")
        return {"pid": 1}


def _ops(tmp_path: Path) -> tuple[RouterOps, FakeProcess, RoutingTable, StateFile, Path]:
    table = RoutingTable()
    state_path = tmp_path / "state.json"
    state = StateFile(state_path, table.snapshot)
    state.enabled = True
    process = FakeProcess()
    ops = RouterOps(
        process,
        table=table,
        events=EventLog(tmp_path / "events.jsonl"),
        metrics=MetricsRecorder(table),
        state=state,
    )
    return ops, process, table, state, state_path


async def test_an_answered_change_is_in_the_table_the_events_and_state_json(
    tmp_path: Path,
) -> None:
    ops, _, table, state, path = _ops(tmp_path)
    channel = ControlChannel(1)
    state.mark_dirty()  # what the daemon's table observer does on every change
    await ops.call("apply_route", {"route": RouteSpec("api.prod").to_dict()}, channel)
    assert [r.spec.service for r in table.routes()] == ["api.prod"]
    assert "api.prod" in json.dumps(json.loads(path.read_text())["table"])
    events = await ops.call("events", {}, channel)
    assert [e["kind"] for e in events][-1] == "route"


async def test_during_a_handoff_reads_are_answered_and_changes_must_wait(tmp_path: Path) -> None:
    ops, process, table, _, _ = _ops(tmp_path)
    channel = ControlChannel(1)
    await ops.call("handoff", {}, channel)
    assert process.asked == ["handoff"]
    ping = await ops.call("ping", {}, channel)
    assert ping["handing_off"] is True and ping["listen"] == ["127.0.0.1:8080"]
    assert await ops.call("status", {}, channel) == []
    assert "datapoints" in await ops.call("metrics", {"since": 0}, channel)
    with pytest.raises(RetryLater):
        await ops.call("apply_route", {"route": RouteSpec("api.prod").to_dict()}, channel)
    with pytest.raises(RetryLater):
        await ops.call("listen", {"addresses": ["127.0.0.1:8081"]}, channel)
    assert table.routes() == [] and process.asked == ["handoff"]
    assert await ops.call("retire", {}, channel) == {"pid": 1}
    assert process.asked == ["handoff", "retire"]


async def test_listen_goes_to_the_process(tmp_path: Path) -> None:
    ops, process, _, _, _ = _ops(tmp_path)
    answer = await ops.call("listen", {"addresses": ["127.0.0.1:8081"]}, ControlChannel(1))
    assert answer["added"] == ["127.0.0.1:8081"] and process.asked == ["listen"]
