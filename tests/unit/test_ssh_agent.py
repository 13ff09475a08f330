"""`HostAgent` against a fake channel: answers by id, timeouts, and a channel that ends."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import pytest

from zerodown.errors import InstanceNotFound, RuntimeBackendError
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
