"""The router's control protocol (framing, refusals, serialisation, fd passing) and its files."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from zerodown.errors import RouterError
from zerodown.health.spec import HealthCheckSpec
from zerodown.routers.base import (
    DrainResult,
    RouteSpec,
    RouteStatus,
    TargetHealth,
    TargetSpec,
    TargetStatus,
)
from zerodown.routers.builtin.control import (
    ControlChannel,
    ControlServer,
    FdReply,
    ProtocolError,
    RetryLater,
    decode_request,
    drain_result_from_dict,
    drain_result_to_dict,
    encode_message,
    route_status_from_dict,
    route_status_to_dict,
)
from zerodown.routers.builtin.handoff import request_handoff
from zerodown.routers.builtin.state import (
    EventLog,
    StateFile,
    process_start_time,
    read_pid_file,
    write_pid_file,
)


class ScriptedOps:
    """A ControlOps stand-in: echoes args, refuses, breaks, waits, or hands off a socket."""

    def __init__(self, fd: int | None = None) -> None:
        self.release = asyncio.Event()
        self.fd = fd
        self.calls: list[str] = []

    async def call(self, op: str, args: dict[str, Any], channel: ControlChannel) -> Any:
        self.calls.append(op)
        if op == "ping":
            return {"echo": args}
        if op == "remove_route":
            raise RouterError("no route for service 'x'")
        if op == "set_pool_weights":
            raise RetryLater("restarting")
        if op == "add_target":
            return TargetSpec.from_dict(args["target"]).to_dict()
        if op == "status":
            raise ZeroDivisionError("a bug")
        if op == "drain_target":
            await self.release.wait()
            return "drained"
        if op == "handoff":
            assert self.fd is not None
            return FdReply({"table": {"big": "x" * 300_000}}, [self.fd])
        return None


@pytest.fixture
async def control(tmp_path: Path):  # type: ignore[no-untyped-def]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    ops = ScriptedOps(fd=listener.fileno())
    server = ControlServer(ops)
    path = tmp_path / "control.sock"
    await server.start(path)
    yield server, ops, path
    await server.close(grace=0.5)
    listener.close()


async def _exchange(path: Path, payload: bytes, answers: int = 1) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(payload)
    await writer.drain()
    lines = [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in range(answers)]
    writer.close()
    return lines


def test_encode_then_decode_round_trips_a_request() -> None:
    line = encode_message({"id": 7, "op": "status", "args": {"service": "api"}})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    request = decode_request(line)
    assert (request.id, request.op, request.args) == (7, "status", {"service": "api"})


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"id": 1}', "unknown op"),
        (b'{"id": 1, "op": "explode"}', "unknown op"),
        (b'{"id": 1, "op": "ping", "args": [1]}', "args must be"),
        (b'{"id": [1], "op": "ping"}', "id must be"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_decode_refuses_malformed_requests_with_a_reason(line: bytes, says: str) -> None:
    with pytest.raises(ProtocolError, match=says):
        decode_request(line)


async def test_two_requests_in_one_write_get_two_answers_in_order(control: Any) -> None:
    _, _, path = control
    payload = encode_message({"id": 1, "op": "ping", "args": {"a": 1}}) + encode_message(
        {"id": 2, "op": "ping", "args": {"b": 2}}
    )
    answers = await _exchange(path, payload, answers=2)
    assert answers == [
        {"id": 1, "ok": True, "result": {"echo": {"a": 1}}},
        {"id": 2, "ok": True, "result": {"echo": {"b": 2}}},
    ]


async def test_a_request_split_across_writes_is_reassembled(control: Any) -> None:
    _, _, path = control
    reader, writer = await asyncio.open_unix_connection(str(path))
    line = encode_message({"id": "abc", "op": "ping", "args": {}})
    for i in range(0, len(line), 5):
        writer.write(line[i : i + 5])
        await writer.drain()
    answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
    writer.close()
    assert answer == {"id": "abc", "ok": True, "result": {"echo": {}}}


async def test_bad_requests_get_ok_false_and_the_connection_keeps_working(control: Any) -> None:
    _, _, path = control
    payload = (
        b"garbage\n"
        + b'{"id": 3, "op": "nope"}\n'
        + encode_message({"id": 4, "op": "remove_route", "args": {"service": "x"}})
        + encode_message({"id": 5, "op": "add_target", "args": {"target": {"service": "a"}}})
        + encode_message({"id": 6, "op": "status", "args": {}})
        + encode_message({"id": 7, "op": "set_pool_weights", "args": {}})
        + encode_message({"id": 8, "op": "ping", "args": {}})
    )
    answers = await _exchange(path, payload, answers=7)
    assert [a["ok"] for a in answers] == [False] * 6 + [True]
    assert [a["id"] for a in answers] == [None, 3, 4, 5, 6, 7, 8]
    assert "not valid JSON" in answers[0]["error"]
    assert answers[2]["error"] == "no route for service 'x'"
    assert answers[3]["error"] == "bad args for add_target: missing 'target_id'"
    assert "internal error in status" in answers[4]["error"]
    assert answers[5].get("retry") is True
    assert "retry" not in answers[2]


async def test_an_oversized_line_is_refused_without_crashing_the_server(control: Any) -> None:
    _, _, path = control
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 24)
    writer.write(b"x" * (5 * 1024 * 1024) + b"\n")
    answer = json.loads(await asyncio.wait_for(reader.readline(), 10))
    writer.close()
    assert answer["ok"] is False and "longer than" in answer["error"]
    assert (await _exchange(path, encode_message({"id": 1, "op": "ping"})))[0]["ok"] is True


async def test_a_long_op_does_not_block_other_connections(control: Any) -> None:
    _, ops, path = control
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(encode_message({"id": 1, "op": "drain_target", "args": {}}))
    await writer.drain()
    quick = await asyncio.wait_for(_exchange(path, encode_message({"id": 2, "op": "ping"})), 5)
    assert quick[0]["ok"] is True
    ops.release.set()
    slow = json.loads(await asyncio.wait_for(reader.readline(), 5))
    writer.close()
    assert slow == {"id": 1, "ok": True, "result": "drained"}


async def test_socket_is_private_to_the_user(control: Any) -> None:
    _, _, path = control
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_replace_takes_over_the_path_and_old_server_no_longer_owns_it(
    control: Any,
) -> None:
    old, _, path = control
    new = ControlServer(ScriptedOps())
    await new.start(path, replace=True)
    try:
        assert new.owns_path() and not old.owns_path()
        await old.close()  # must not unlink the successor's socket
        assert path.exists()
        assert (await _exchange(path, encode_message({"id": 1, "op": "ping"})))[0]["ok"]
    finally:
        await new.close()
    assert not path.exists()


async def test_handoff_passes_a_listening_socket_and_a_large_answer(control: Any) -> None:
    _, ops, path = control
    handoff = await asyncio.to_thread(request_handoff, path, 5.0)
    try:
        assert len(handoff.result["table"]["big"]) == 300_000
        [received] = handoff.sockets
        original = socket.socket(fileno=os.dup(ops.fd))
        assert received.getsockname() == original.getsockname()
        original.close()
        # The received socket is the same kernel socket: a client connecting is accepted on it.
        client = socket.create_connection(received.getsockname(), timeout=5)
        received.setblocking(True)
        received.settimeout(5)
        accepted, _ = received.accept()
        accepted.close()
        client.close()
    finally:
        handoff.abandon()


def test_drain_result_round_trips() -> None:
    result = DrainResult(target_id="i-1", seconds=1.25, finished=3, forced=1)
    assert drain_result_from_dict(json.loads(json.dumps(drain_result_to_dict(result)))) == result


def test_route_status_round_trips_with_health_spec_and_targets() -> None:
    route = RouteSpec(
        service="api",
        hosts=("api.local",),
        path_prefix="/api",
        balance="round_robin",
        health=HealthCheckSpec(path="/actuator/health", json_fields={"status": "UP"}, interval=2),
        drain_timeout=12.0,
    )
    target = TargetSpec("api", "i-1", "127.0.0.1", 8001, revision="abc", pool="abc-1")
    status = RouteStatus(
        route=route,
        targets=(TargetStatus(target, TargetHealth.HEALTHY, draining=True, inflight=4),),
        pools={"abc-1": 30, "old": 0},
    )
    wire = json.loads(json.dumps(route_status_to_dict(status)))
    assert route_status_from_dict(wire) == status


def test_pid_file_names_one_process_even_if_the_pid_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "router.pid"
    write_pid_file(path, os.getpid())
    assert read_pid_file(path) == os.getpid()
    record = json.loads(path.read_text())
    assert record["start_time"] == process_start_time(os.getpid())
    record["start_time"] -= 1  # as if another process had held this pid before
    path.write_text(json.dumps(record))
    assert read_pid_file(path) is None
    assert read_pid_file(tmp_path / "missing.pid") is None


def test_two_event_writers_on_one_file_never_reuse_a_seq(tmp_path: Path) -> None:
    """During a restart the old and the new router both append: seqs stay unique and ordered."""
    path = tmp_path / "events.jsonl"
    old, new = EventLog(path), EventLog(path)
    for i in range(5):
        old.record("tick", writer="old", i=i)
        new.record("tick", writer="new", i=i)
    seqs = [e["seq"] for e in new.since(0)]
    assert seqs == list(range(1, 11))
    assert [e["seq"] for e in old.since(8)] == [9, 10]
    lines = path.read_text().splitlines()
    assert all(json.loads(line)["ts"] > 0 for line in lines)


def test_event_log_rotates_and_keeps_counting(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    events = EventLog(path, max_bytes=2000)
    for i in range(40):
        events.record("tick", i=i, pad="x" * 50)
    assert path.with_name("events.jsonl.1").exists()
    assert path.stat().st_size <= 2000 + 200
    assert events.record("last")["seq"] == 41
    assert [e["seq"] for e in events.since(38)] == [39, 40, 41]


async def test_state_file_writes_after_a_change_and_sets_a_corrupt_file_aside(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    snapshot = {"version": 1, "routes": []}
    state = StateFile(path, lambda: snapshot)
    state.enabled = True
    state.mark_dirty()
    await state.flush()
    saved = StateFile.load(path)
    assert saved is not None and saved["table"] == snapshot
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [
        n for n in os.listdir(tmp_path) if n.endswith(".tmp")
    ] == []  # the temp file was renamed, not left behind

    path.write_text("{truncated")
    assert StateFile.load(path) is None
    assert (
        not path.exists()
        and len([n for n in os.listdir(tmp_path) if n.startswith("state.json.corrupt-")]) == 1
    )


async def test_state_file_debounces_bursts_of_changes(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    calls = 0

    def snapshot() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"version": 1, "routes": [], "n": calls}

    state = StateFile(path, snapshot)
    state.enabled = True
    for _ in range(100):
        state.mark_dirty()
    for _ in range(100):  # bounded wait for the one background write
        if path.exists():
            break
        await asyncio.sleep(0.05)
    await state.flush()  # nothing new since: no second write
    assert calls == 1
