"""`HostAgent` against a fake channel: answers by id, timeouts, and a channel that ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from zerodown.errors import InstanceNotFound, RuntimeBackendError
from zerodown.runtimes.ssh import remote
from zerodown.runtimes.ssh.agent import HostAgent


class FakeChannel:
    """Stands for asyncssh's process: what is written to stdin, and lines fed to stdout."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.exit_status: int | None = None
        self.stdin = self
        self.stdout = self

    def write(self, data: str) -> None:
        self.sent.append(json.loads(data))

    def write_eof(self) -> None:
        self.lines.put_nowait("")

    async def readline(self) -> str:
        return await self.lines.get()

    def answer(self, message: dict[str, Any]) -> None:
        self.lines.put_nowait(json.dumps(message) + "\n")

    def close(self) -> None:
        pass


def agent_over(channel: FakeChannel) -> HostAgent:
    return HostAgent("10.0.0.7", cast(Any, channel))


async def test_answers_reach_their_request_in_any_order() -> None:
    """Two requests at once; the second's answer comes first; each gets its own."""
    channel = FakeChannel()
    agent = agent_over(channel)
    first = asyncio.create_task(agent.call({"op": "inspect"}, timeout=5))
    second = asyncio.create_task(agent.call({"op": "list"}, timeout=5))
    await asyncio.sleep(0)
    ids = [message["id"] for message in channel.sent]
    channel.answer({"id": ids[1], "ok": ["b"]})
    channel.lines.put_nowait("not json, printed by something else\n")
    channel.answer({"id": ids[0], "error": "no instance 'x'", "kind": "InstanceNotFound"})
    assert await second == ["b"]
    with pytest.raises(InstanceNotFound, match=r"^host 10\.0\.0\.7: no instance 'x'$"):
        await first
    await agent.close()


async def test_a_request_without_an_answer_times_out_naming_the_host() -> None:
    """No answer within the timeout: one sentence with the host, the operation and the setting."""
    agent = agent_over(FakeChannel())
    with pytest.raises(RuntimeBackendError) as caught:
        await agent.call({"op": "stop"}, timeout=0.05)
    assert str(caught.value) == (
        "host 10.0.0.7: stop got no answer within 0.05s (runtime.command_timeout); it may "
        "still finish there"
    )
    await agent.close()


async def test_a_channel_that_ends_fails_what_waits_and_what_comes_next() -> None:
    """Requests under way and later ones fail naming the host; a stream ends with the error."""
    channel = FakeChannel()
    agent = agent_over(channel)
    waiting = asyncio.create_task(agent.call({"op": "list"}, timeout=5))
    lines = agent.stream({"op": "logs"})
    reading = asyncio.create_task(anext(lines))
    await asyncio.sleep(0)
    channel.exit_status = 1
    channel.lines.put_nowait("")  # EOF
    with pytest.raises(RuntimeBackendError, match=r"host 10\.0\.0\.7: zerodown's agent stopped"):
        await waiting
    with pytest.raises(RuntimeBackendError, match="exited with 1"):
        await reading
    assert agent.closed
    with pytest.raises(RuntimeBackendError, match="agent stopped"):
        await agent.call({"op": "list"}, timeout=5)


async def test_a_reader_that_stops_early_cancels_the_follower_on_the_host() -> None:
    """Breaking out of a followed log stream sends `cancel` for it (else the host would keep
    streaming that instance's output over the channel until the instance is gone)."""
    channel = FakeChannel()
    agent = agent_over(channel)
    lines = agent.stream({"op": "logs", "follow": True})
    reading = asyncio.create_task(anext(lines))
    await asyncio.sleep(0)
    number = channel.sent[0]["id"]
    channel.answer({"id": number, "line": "first"})
    assert await reading == "first"
    await lines.aclose()
    assert channel.sent[-1]["op"] == "cancel"
    assert channel.sent[-1]["request"] == number
    await agent.close()


class EndlessLogs:
    """A runtime whose `logs` yields until cancelled, and says when it was."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def logs(self, instance_id: str, **_: Any) -> AsyncIterator[str]:
        self.started.set()
        try:
            while True:
                yield "tick"
                await asyncio.sleep(0.01)
        finally:
            self.cancelled.set()


async def test_the_host_side_stops_a_follower_on_cancel_while_it_serves_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """remote.Agent: `cancel` ends that follower at once, before stdin ends."""
    runtime = EndlessLogs()
    agent = remote.Agent()
    monkeypatch.setattr(agent, "_runtime", lambda request: runtime)
    reader = asyncio.StreamReader()
    serving = asyncio.create_task(agent.serve(reader))
    follow = {"op": "logs", "id": 7, "instance_id": "a", "since": None, "follow": True}
    reader.feed_data((json.dumps(follow) + "\n").encode())
    await asyncio.wait_for(runtime.started.wait(), 5)
    reader.feed_data((json.dumps({"op": "cancel", "id": 8, "request": 7}) + "\n").encode())
    await asyncio.wait_for(runtime.cancelled.wait(), 5)
    assert not serving.done()
    reader.feed_eof()
    await asyncio.wait_for(serving, 5)
    sent = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sent and all(message == {"id": 7, "line": "tick"} for message in sent)
