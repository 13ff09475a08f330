"""CLI start-up: `zerodown --help`, `version` and `status` through a running serve, next to
`python -c pass` (goals: --help <= 0.25 s, status through serve <= 0.5 s, medians of 10)."""

from __future__ import annotations

import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.machine import MachineFacts
from benchmarks.processes import free_port
from benchmarks.report import BenchError, Section, Table
from zerodown.demo import make_repository

HELP_GOAL = 0.25
STATUS_GOAL = 0.5
RUNS = 10
SERVE_START = 60.0  # seconds serve may take to listen


def _entry_point() -> str:
    """The installed `zerodown` script next to this interpreter (what a user runs)."""
    return str(Path(sys.executable).with_name("zerodown"))


def _wall(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"{' '.join(command[-2:])} exited {done.returncode}: {done.stderr[-300:]}")
    return seconds


def _medians(commands: dict[str, list[str]], cwd: Path, runs: int) -> dict[str, list[float]]:
    """Each command `runs` times, interleaved so that a noisy moment hits all of them."""
    for command in commands.values():
        _wall(command, cwd)  # warm the page cache and the bytecode cache
    timings: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            timings[name].append(_wall(command, cwd))
    return timings


def _start_serve(repo: Path) -> subprocess.Popen[str]:
    serve = subprocess.Popen(
        [_entry_point(), "serve"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    sock = repo / ".zerodown" / "control-plane.sock"
    deadline = time.monotonic() + SERVE_START
    while not sock.exists():  # another process: there is no event to await here
        if serve.poll() is not None or time.monotonic() > deadline:
            serve.kill()
            raise BenchError("zerodown serve did not start listening")
        time.sleep(0.05)
    return serve


def measure(runs: int) -> dict[str, list[float]]:
    """Median-ready wall times of each command, with a serve running for `status`."""
    zerodown = _entry_point()
    with tempfile.TemporaryDirectory(prefix="zerodown-cli-bench-") as tmp:
        repo = make_repository(Path(tmp), free_port())
        config = repo / "zerodown.yml"  # the dashboard on a free port, not the default 8686
        config.write_text(config.read_text() + f"server: {{listen: '127.0.0.1:{free_port()}'}}\n")
        serve = _start_serve(repo)
        try:
            return _medians(
                {
                    "python -c pass": [sys.executable, "-c", "pass"],
                    "zerodown --help": [zerodown, "--help"],
                    "zerodown version": [zerodown, "version"],
                    "zerodown status (through serve)": [zerodown, "status"],
                },
                repo,
                runs,
            )
        finally:
            serve.send_signal(signal.SIGINT)
            try:
                serve.wait(timeout=60)
            except subprocess.TimeoutExpired:
                serve.kill()
            subprocess.run([zerodown, "stop"], cwd=repo, capture_output=True, timeout=60)


async def run(*, quick: bool, machine: MachineFacts) -> Section:
    """The CLI start-up figures (a quick run measures 5 times)."""
    started = datetime.now(UTC)
    timings = await asyncio.to_thread(measure, 5 if quick else RUNS)
    median = {name: statistics.median(values) for name, values in timings.items()}
    help_s = median["zerodown --help"]
    status_s = median["zerodown status (through serve)"]
    rows = tuple(
        (name, f"{median[name] * 1000:.0f} ms", f"{max(values) * 1000:.0f} ms")
        for name, values in timings.items()
    )
    return Section(
        key="cli",
        title="CLI start-up",
        goal=f"`--help` <= {HELP_GOAL:.2f} s and `status` through a running serve <= "
        f"{STATUS_GOAL:.1f} s (medians of {RUNS})",
        met=help_s <= HELP_GOAL and status_s <= STATUS_GOAL,
        tables=(
            Table(
                caption="Wall time of each command, run one after another, interleaved.",
                headers=("command", "median", "worst"),
                rows=rows,
            ),
        ),
        limits=(
            "Imports: every command module loads its engine, store and web modules only when "
            "the command runs; `--help` loads typer and the command modules' signatures only.",
            "Typer converts a command's arguments with pydantic (about 0.2 s of imports): "
            "`version` and `status [--json]` through a running serve are answered before typer "
            "loads (zerodown.cli.fast_path); every other command pays it.",
            "`status` through serve reads only `state_dir` from zerodown.yml and asks serve on "
            "its socket; without serve it opens the history (SQLAlchemy) itself. `--help` is "
            "rendered by click without rich.",
        ),
        measured_at=started,
        measured_on=machine.one_line() + (" (quick run)" if quick else ""),
        method=f"Each command run {RUNS} times through the installed entry point (after one "
        "warm-up run each), in a temporary copy of the demo repository with `zerodown serve` "
        "running; medians and worst runs.",
    )
