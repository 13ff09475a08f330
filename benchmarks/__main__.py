"""`python -m benchmarks [--only NAME] [--quick]`: run the benchmarks, rewrite RESULTS.md."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import cast

from benchmarks import BENCHMARKS
from benchmarks.machine import MachineFacts, collect_machine
from benchmarks.report import BenchError, Section, write_results
from zerodown.errors import ZerodownError

RESULTS = Path(__file__).with_name("RESULTS.md")

BenchmarkRun = Callable[..., Awaitable[Section]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line: which benchmarks, how long, where to write."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), help="run only this (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="shorter loads (5 s instead of 10 s)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="default: %(default)s")
    return parser.parse_args(argv)


def load_benchmark(name: str) -> BenchmarkRun:
    """The `run` coroutine function of a benchmark module, imported only when it runs."""
    module = importlib.import_module(BENCHMARKS[name])
    return cast(BenchmarkRun, module.run)


async def run_benchmarks(
    names: Sequence[str], *, quick: bool
) -> tuple[MachineFacts, list[Section]]:
    """Run the named benchmarks one after another (never at once: they would share the CPU)."""
    machine = await collect_machine()
    sections = []
    for name in names:
        sections.append(await load_benchmark(name)(quick=quick, machine=machine))
    return machine, sections


def main(argv: Sequence[str] | None = None) -> int:
    """Run, write RESULTS.md, print where it went; a failed benchmark leaves the file as it was."""
    args = parse_args(argv)
    names = args.only or list(BENCHMARKS)
    command = "python -m benchmarks" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    try:
        machine, sections = asyncio.run(run_benchmarks(names, quick=args.quick))
    except (BenchError, ZerodownError) as exc:
        print(f"bench: {exc} (RESULTS.md left as it was)", file=sys.stderr)
        return 1
    write_results(args.output, machine, sections, order=list(BENCHMARKS), command=command)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
