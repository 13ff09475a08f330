"""run_shell against real /bin/sh processes: live lines, exit codes, timeouts, no leftovers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.processes import wait_exited

from zerodown.shell import MAX_LINE, run_shell


async def test_first_line_arrives_before_the_process_ends(tmp_path: Path) -> None:
    """The first line is delivered while the command still runs (it waits for a file we write)."""
    go = tmp_path / "go"
    command = f"echo first; while [ ! -e {go} ]; do sleep 0.02; done; echo second"
    first_seen = asyncio.Event()
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        first_seen.set()

    task = asyncio.create_task(
        run_shell(command, cwd=tmp_path, env=None, timeout=30, on_line=on_line)
    )
    await asyncio.wait_for(first_seen.wait(), 10)
    assert lines == ["first"]
    assert not task.done()
    go.touch()
    result = await asyncio.wait_for(task, 10)
    assert lines == ["first", "second"]
    assert result.ok and result.output_tail == ["first", "second"]


async def test_exit_codes_and_merged_stderr(tmp_path: Path) -> None:
    """Exit codes come back as given; stderr lines are in the output too; a tail is bounded."""
    ok = await run_shell("true", cwd=tmp_path, env=None, timeout=10)
    assert (ok.exit_code, ok.ok, ok.timed_out) == (0, True, False)
    failed = await run_shell(
        "for i in 1 2 3 4 5; do echo out$i; done; echo err >&2; exit 3",
        cwd=tmp_path,
        env=None,
        timeout=10,
        tail_lines=3,
    )
    assert failed.exit_code == 3 and not failed.ok
    assert failed.output_tail == ["out4", "out5", "err"]


async def test_env_and_cwd_are_the_commands(tmp_path: Path) -> None:
    """The command sees exactly the environment given, and runs in `cwd`."""
    expected = f"hello {tmp_path.resolve()} nohome"  # noqa: ASYNC240 (a test's one stat)
    result = await run_shell(
        'echo "$ZD_X" "$(pwd)" "${HOME:-nohome}"',
        cwd=tmp_path,
        env={"ZD_X": "hello", "PATH": "/usr/bin:/bin"},
        timeout=10,
    )
    assert result.output_tail == [expected]


async def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    """On timeout the shell and its background grandchild are both gone, promptly."""
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    result = await run_shell(
        f"sleep 100 & echo $! > {pidfile}; echo started; sleep 100",
        cwd=tmp_path,
        env=None,
        timeout=0.5,
    )
    assert result.timed_out and not result.ok
    assert result.output_tail == ["started"]
    assert time.monotonic() - started < 5
    assert await wait_exited(int(pidfile.read_text()))


async def test_term_resistant_group_gets_sigkill(tmp_path: Path) -> None:
    """A command that ignores SIGTERM is killed after the grace period."""
    pidfile = tmp_path / "pid"
    result = await run_shell(
        f"trap '' TERM; sleep 100 & echo $! > {pidfile}; wait",
        cwd=tmp_path,
        env=None,
        timeout=0.3,
        kill_grace=0.5,
    )
    assert result.timed_out
    assert await wait_exited(int(pidfile.read_text()))


async def test_background_leftover_is_ended_after_normal_exit(tmp_path: Path) -> None:
    """A `sleep 100 &` left behind by a command that exits 0 does not outlive run_shell."""
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    result = await run_shell(
        f"sleep 100 & echo $! > {pidfile}; echo done", cwd=tmp_path, env=None, timeout=10
    )
    assert result.ok and result.output_tail == ["done"]
    assert time.monotonic() - started < 5
    assert await wait_exited(int(pidfile.read_text()))


async def test_cancelling_kills_the_group(tmp_path: Path) -> None:
    """Cancelling the awaiting task (an aborted deployment) kills the command's group."""
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(
        run_shell(f"echo $$ > {pidfile}; sleep 100", cwd=tmp_path, env=None, timeout=60)
    )
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the command never started"
        await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    pid = int(pidfile.read_text())
    assert await wait_exited(pid)


async def test_long_lines_and_missing_final_newline(tmp_path: Path) -> None:
    """A line longer than the cap arrives in pieces; a last line without newline is kept."""
    lines: list[str] = []
    result = await run_shell(
        "head -c 40000 /dev/zero | tr '\\0' x; printf '\\nend'",
        cwd=tmp_path,
        env=None,
        timeout=10,
        on_line=lines.append,
    )
    assert result.ok
    assert "".join(lines[:-1]) == "x" * 40000
    assert len(lines) >= 4 and all(len(line) <= MAX_LINE for line in lines)
    assert lines[-1] == "end"
