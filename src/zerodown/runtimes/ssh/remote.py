"""The host side of the ssh runtime: `python3 -m zerodown.runtimes.ssh.remote`, run over SSH.

It runs with the host's own python3 (3.11+) and the standard library only, importing zerodown
from the copy `SshRuntime` unpacked there (`PYTHONPATH=<root>/lib/zerodown-<digest>`).
It stays up for as long as its SSH channel: the control plane writes requests as JSON lines on
its stdin (so secrets in an instance's env never appear in a command line, which `ps` shows,
nor on the host's disk), each `{"id": n, "op": ..., ...}`, and it answers each, in any order,
as `{"id": n, "ok": ...}` or `{"id": n, "error": sentence, "kind": class name}`; `logs` sends
`{"id": n, "line": ...}` per output line, then `{"id": n, "end": true}` (`{"op": "cancel",
"request": n}` stops a followed one early). When stdin ends (the
control plane left or its connection dropped) it exits; the instances' supervisors stay.

Each operation is `LocalRuntime`'s over `<root>/runtime`, with the host's address as the
address instances listen on: the same detached supervisor per instance, the same files, the
same re-adoption, only run where the instances are.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tarfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from zerodown.errors import InstanceNotFound, ZerodownError
from zerodown.runtimes.base import InstanceInfo, InstanceSpec, ReleaseDirectory
from zerodown.runtimes.local.runtime import LocalRuntime

RUNTIME_DIR = "runtime"  # under the host's root: LocalRuntime's state_dir
RELEASES_DIR = "releases"
_REQUEST_LIMIT = 16 * 1024 * 1024  # one request line (a start's env) may be this long
_FINISH_ON_EOF = 60.0  # how long requests under way may finish once the control plane left


def info_json(info: InstanceInfo) -> dict[str, Any]:
    """An `InstanceInfo` as JSON-able data (`info_from_json` reads it back)."""
    data = asdict(info)
    data["state"] = str(info.state)
    return data


def _runtime(request: dict[str, Any]) -> LocalRuntime:
    return LocalRuntime(Path(request["root"]) / RUNTIME_DIR, host=request["host"])


def _spec(request: dict[str, Any]) -> InstanceSpec:
    spec = request["spec"]
    return InstanceSpec(
        service=spec["service"],
        revision=spec["revision"],
        instance_id=spec["instance_id"],
        artifact=ReleaseDirectory(command=spec["command"], workdir=spec["workdir"]),
        env=request.get("env", {}),
        port_env=spec["port_env"],
        port=spec["port"],
        stop_timeout=spec["stop_timeout"],
        memory_limit=spec["memory_limit"],
        restart=spec["restart"],
        labels=spec["labels"],
    )


def extract_release(archive: Path, target: Path) -> None:
    """Unpack `archive` into `target` atomically (a sibling temp dir, then a rename)."""
    if target.is_dir():
        archive.unlink(missing_ok=True)
        return
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # 3.11.4+: no absolute paths, links out or devices
            tar.extractall(partial, filter="data")
        else:  # Debian 12's 3.11.2: the same refusals, checked by hand
            for member in tar.getmembers():
                _check_member(member, partial)
            tar.extractall(partial)  # every member was checked just above
    os.replace(partial, target)
    archive.unlink(missing_ok=True)


def _check_member(member: tarfile.TarInfo, target: Path) -> None:
    """Refuse a member that would land outside `target` or is not a file, dir or link."""
    resolved = (target / member.name).resolve()
    if not resolved.is_relative_to(target.resolve()) or not (
        member.isfile() or member.isdir() or member.issym()
    ):
        raise tarfile.TarError(f"refusing release member {member.name!r}")
    if member.issym():
        link = (resolved.parent / member.linkname).resolve()
        if not link.is_relative_to(target.resolve()):
            raise tarfile.TarError(f"refusing release link {member.name!r} out of the release")


async def _answer(request: dict[str, Any], runtime: LocalRuntime) -> Any:
    op = request["op"]
    if op == "start":
        return info_json(await runtime.start(_spec(request)))
    if op == "stop":
        return info_json(await runtime.stop(request["instance_id"], timeout=request["timeout"]))
    if op == "inspect":
        return info_json(await runtime.inspect(request["instance_id"]))
    if op == "list":
        return [info_json(info) for info in await runtime.list(request.get("service"))]
    if op == "list_exited":
        return [info_json(info) for info in await runtime.list_exited(request.get("service"))]
    if op == "remove":
        await runtime.remove(request["instance_id"])
        return None
    if op == "output_tail":
        return await runtime.output_tail(
            request["instance_id"], request["lines"], max_bytes=request["max_bytes"]
        )
    if op == "adopt_orphans":
        return await runtime.adopt_orphans()
    if op == "has_release":
        return (Path(request["root"]) / RELEASES_DIR / request["release"]).is_dir()
    if op == "extract":
        root = Path(request["root"]) / RELEASES_DIR
        await asyncio.to_thread(
            extract_release, root / request["archive"], root / request["release"]
        )
        return str(root / request["release"])
    raise ValueError(f"unknown operation {op!r}")


def _send(message: dict[str, Any]) -> None:
    # One write per message from the event loop's thread: messages never interleave.
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _error(exc: BaseException) -> dict[str, Any]:
    kind = "InstanceNotFound" if isinstance(exc, InstanceNotFound) else type(exc).__name__
    return {"error": str(exc), "kind": kind}


class Agent:
    """Answers the requests of one control plane, each in its own task, until stdin ends."""

    def __init__(self) -> None:
        self._runtimes: dict[tuple[str, str], LocalRuntime] = {}
        self._requests: set[asyncio.Task[None]] = set()
        self._followers: dict[int, asyncio.Task[None]] = {}  # request id -> its follower

    def _runtime(self, request: dict[str, Any]) -> LocalRuntime:
        # One LocalRuntime per root and address: it reaps the supervisors it launched and
        # remembers the ports it promised, which one-shot processes could not.
        key = (request["root"], request["host"])
        if key not in self._runtimes:
            self._runtimes[key] = _runtime(request)
        return self._runtimes[key]

    async def serve(self, reader: asyncio.StreamReader) -> None:
        """Handle request lines until EOF (the SSH channel closed: the control plane left)."""
        while line := await reader.readline():
            request = json.loads(line)
            if request["op"] == "cancel":  # the reader of a followed log stopped reading
                follower = self._followers.pop(request["request"], None)
                if follower is not None:
                    follower.cancel()
                continue
            task = asyncio.create_task(self._handle(request))
            if request["op"] == "logs" and request.get("follow"):
                self._follow(request["id"], task)
            else:
                self._requests.add(task)
                task.add_done_callback(self._requests.discard)
        for task in list(self._followers.values()):  # nobody reads them any more
            task.cancel()
        if self._requests:  # a start halfway through finishes: its supervisor is detached
            await asyncio.wait(self._requests, timeout=_FINISH_ON_EOF)

    def _follow(self, number: int, task: asyncio.Task[None]) -> None:
        self._followers[number] = task

        def forget(_: asyncio.Task[None]) -> None:
            self._followers.pop(number, None)

        task.add_done_callback(forget)

    async def _handle(self, request: dict[str, Any]) -> None:
        number = request["id"]
        try:
            runtime = self._runtime(request)
            if request["op"] == "logs":
                async for line in runtime.logs(
                    request["instance_id"], since=request["since"], follow=request["follow"]
                ):
                    _send({"id": number, "line": line})
                _send({"id": number, "end": True})
            else:
                _send({"id": number, "ok": await _answer(request, runtime)})
        except (ZerodownError, OSError, ValueError, KeyError, TypeError, tarfile.TarError) as exc:
            _send({"id": number, **_error(exc)})


async def _main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_REQUEST_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await Agent().serve(reader)


def main() -> int:
    """Serve the control plane's requests (JSON lines on stdin) until stdin ends."""
    asyncio.run(_main())
    return 0


if __name__ == "__main__":
    sys.exit(main())
