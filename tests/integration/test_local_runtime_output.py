"""`LocalRuntime.output_tail` and `list_exited`: an instance's last output, also after removal.

Real supervisors and apps (small `sh -c` commands); the log reading itself is tested on files.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from zerodown.errors import InstanceNotFound
from zerodown.runtimes.base import InstanceState
from zerodown.runtimes.local import LocalRuntime
from zerodown.runtimes.local.exited import KEPT_PER_SERVICE
from zerodown.runtimes.local.logfile import RotatingLogFile, read_tail
from zerodown.secrets.masking import SECRET_NAMES_ENV

from runtime_fixtures import (  # isort: skip - a sibling module, found through rootdir sys.path
    runtime,
    state_dir,
    eventually,
    shell_spec,
)

__all__ = ["runtime", "state_dir"]  # the fixtures, shared through runtime_fixtures


async def _until_crashed(runtime: LocalRuntime, instance_id: str) -> None:
    async def crashed() -> bool:
        info = await runtime.inspect(instance_id)
        return info.restarts > 0 or info.state is not InstanceState.RUNNING

    await eventually(crashed, timeout=10)


async def test_output_tail_right_after_a_crash_has_the_last_lines_masked(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    """The tail read the moment the exit shows holds the very last line, and no secret."""
    command = 'for i in $(seq 1 30); do echo "line $i"; done; echo "pw=$PW"; echo last >&2; exit 1'
    spec = shell_spec(
        "crashy", command, tmp_path, env={"PW": "s3cr3t-value", SECRET_NAMES_ENV: "PW"}
    )
    await runtime.start(spec)
    await _until_crashed(runtime, "crashy")
    tail = await runtime.output_tail("crashy", 5)
    assert tail[-2:] == ["pw=****", "last"]
    assert tail[:3] == ["line 28", "line 29", "line 30"]
    small = await runtime.output_tail("crashy", 20, max_bytes=20)
    assert small == ["pw=****", "last"]  # whole lines within 20 bytes


async def test_output_tail_waits_for_output_still_in_the_pipe_of_an_exited_app(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    """A child that left the app's process group writes after the app exited: the supervisor
    reads on until the pipe closes, and a tail asked for meanwhile waits for that last line."""
    command = "setsid sh -c 'sleep 0.6; echo late' & echo first; sleep 0.2; exit 1"
    await runtime.start(shell_spec("lagging", command, tmp_path, restart="no"))

    async def exited() -> bool:  # the app is gone; its supervisor still reads the pipe
        return (await runtime.inspect("lagging")).pid is None

    await eventually(exited, timeout=10)
    assert await runtime.output_tail("lagging", 5) == ["first", "late"]


async def test_removed_crashed_instance_keeps_its_output_and_is_listed_exited(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    await runtime.start(
        shell_spec("boom", "echo Traceback; echo ZeroDivisionError; exit 1", tmp_path)
    )
    await _until_crashed(runtime, "boom")
    await runtime.stop("boom")
    await runtime.remove("boom")
    with pytest.raises(InstanceNotFound):
        await runtime.inspect("boom")
    assert [i.instance_id for i in await runtime.list()] == []
    exited = await runtime.list_exited("sh")
    assert [(i.instance_id, i.state, i.pid) for i in exited] == [
        ("boom", InstanceState.STOPPED, None)
    ]
    assert (await runtime.output_tail("boom", 10))[-2:] == ["Traceback", "ZeroDivisionError"]
    assert await runtime.list_exited("other") == []


async def test_an_instance_stopped_on_purpose_leaves_no_output_behind(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    await runtime.start(shell_spec("calm", "echo hello; exec sleep 1000", tmp_path))

    async def said_hello() -> bool:
        return await runtime.output_tail("calm", 1) == ["hello"]

    await eventually(said_hello, timeout=10)
    await runtime.stop("calm")
    await runtime.remove("calm")
    assert await runtime.list_exited() == []
    with pytest.raises(InstanceNotFound):
        await runtime.output_tail("calm", 10)


async def test_only_the_newest_crashed_instances_of_a_service_are_kept(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    ids = [f"crash-{n}" for n in range(KEPT_PER_SERVICE + 2)]
    for instance_id in ids:  # one after the other: removal order is the age
        await runtime.start(
            shell_spec(instance_id, f"echo {instance_id}; exit 2", tmp_path, restart="no")
        )

        async def stopped(instance_id: str = instance_id) -> bool:
            return (await runtime.inspect(instance_id)).state is InstanceState.STOPPED

        await eventually(stopped, timeout=10)
        await runtime.remove(instance_id)
    kept = [i.instance_id for i in await runtime.list_exited("sh")]
    assert kept == list(reversed(ids))[:KEPT_PER_SERVICE]
    assert await runtime.output_tail(ids[-1], 5) == [ids[-1]]
    with pytest.raises(InstanceNotFound):
        await runtime.output_tail(ids[0], 5)


def test_read_tail_spans_rotated_files_and_drops_a_cut_first_line(tmp_path: Path) -> None:
    log = RotatingLogFile(tmp_path / "output.log", max_bytes=100, backups=3)
    log.write("".join(f"line {i:03}\n" for i in range(1, 31)).encode())  # 9 bytes a line
    log.close()
    files = log.files()
    assert len(files) == 3
    assert read_tail(files, 15) == [f"line {i:03}" for i in range(16, 31)]
    assert read_tail(files, 3, max_bytes=25) == ["line 029", "line 030"]
    assert read_tail(files, 0) == []
    assert read_tail([tmp_path / "missing.log"], 5) == []


async def test_read_tail_of_a_huge_log_reads_only_its_end(tmp_path: Path) -> None:
    path = tmp_path / "output.log"
    await asyncio.to_thread(path.write_bytes, b"x" * 20_000_000 + b"\nend 1\nend 2\n")
    assert await asyncio.to_thread(read_tail, [path], 2) == ["end 1", "end 2"]
