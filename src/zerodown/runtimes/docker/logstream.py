"""A container's output as an async stream of masked lines, read by docker-py in a thread.

docker-py's log stream blocks; a daemon thread reads it and hands chunks to the event loop.
Stopping early (the caller breaks out, or is cancelled) closes the stream, which ends the
thread's read.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from zerodown.runtimes.docker.api import DockerApi

_Item = bytes | Exception | None


async def container_lines(
    api: DockerApi,
    container_id: str,
    *,
    since: float | None,
    follow: bool,
    mask: Callable[[str], str],
    instance: str,
    tail: int | None = None,
) -> AsyncIterator[str]:
    """Lines of the container's stdout and stderr (merged, oldest first), masked by `mask`."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[_Item] = asyncio.Queue()
    stopped = threading.Event()
    holder: dict[str, Any] = {}

    def put(item: _Item) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is reading
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def produce() -> None:
        try:
            options: dict[str, Any] = {"stdout": True, "stderr": True, "stream": True}
            options["follow"] = follow
            if since is not None and since > 0:
                options["since"] = float(since)
            if tail is not None:
                options["tail"] = tail
            stream = api.client().api.logs(container_id, **options)
            holder["stream"] = stream
            if stopped.is_set():
                stream.close()
                return
            for chunk in stream:
                put(bytes(chunk))
        except Exception as exc:
            if not stopped.is_set():
                put(api.translate(exc, "read the container's output", instance))
        finally:
            put(None)

    thread = threading.Thread(target=produce, name=f"logs {instance}", daemon=True)
    thread.start()
    partial = b""
    try:
        while True:
            item = await queue.get()
            if item is None:
                break
            if isinstance(item, Exception):
                raise item
            data = partial + item
            complete = data.rfind(b"\n") + 1  # a line being written is yielded once whole
            partial = data[complete:]
            for line in data[:complete].decode(errors="replace").splitlines():
                yield mask(line)
        if partial:
            yield mask(partial.decode(errors="replace"))
    finally:
        stopped.set()
        stream = holder.get("stream")
        if stream is not None:
            with contextlib.suppress(Exception):  # already closed by the daemon
                stream.close()
