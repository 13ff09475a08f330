"""The host side of the ssh runtime: `python3 -m zerodown.runtimes.ssh.remote`, run over SSH.

It runs with the host's own python3 (3.11+) and the standard library only, importing zerodown
from the copy `SshRuntime` unpacked there (`PYTHONPATH=<root>/lib/zerodown-<digest>`).
One request per process, as one JSON line on stdin (so secrets in an instance's env never
appear in the command line, which `ps` shows, nor on the host's disk); the answer is one JSON
line on stdout: `{"ok": ...}` or `{"error": sentence, "kind": class name}`. `logs` answers
with one JSON string per output line instead, then `{"end": true}`.

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


async def _answer(request: dict[str, Any]) -> Any:
    op = request["op"]
    runtime = _runtime(request)
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
    if op == "extract":
        root = Path(request["root"]) / RELEASES_DIR
        await asyncio.to_thread(
            extract_release, root / request["archive"], root / request["release"]
        )
        return str(root / request["release"])
    raise ValueError(f"unknown operation {op!r}")


async def _logs(request: dict[str, Any]) -> None:
    runtime = _runtime(request)
    async for line in runtime.logs(
        request["instance_id"], since=request["since"], follow=request["follow"]
    ):
        print(json.dumps(line), flush=True)  # a closed channel ends us with a BrokenPipeError
    print(json.dumps({"end": True}), flush=True)


def _error(exc: BaseException) -> str:
    kind = "InstanceNotFound" if isinstance(exc, InstanceNotFound) else type(exc).__name__
    return json.dumps({"error": str(exc), "kind": kind})


def main() -> int:
    """Read one request from stdin, answer it on stdout."""
    try:
        request = json.loads(sys.stdin.readline())
        if request["op"] == "logs":
            asyncio.run(_logs(request))
        else:
            print(json.dumps({"ok": asyncio.run(_answer(request))}), flush=True)
    except (ZerodownError, OSError, ValueError, KeyError, tarfile.TarError) as exc:
        print(_error(exc), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
