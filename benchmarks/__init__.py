"""zerodown's benchmarks: `python -m benchmarks` measures and rewrites benchmarks/RESULTS.md.

Each benchmark is a module with a `run(*, quick, machine)` coroutine that returns a
`benchmarks.report.Section`; `BENCHMARKS` names them in the order RESULTS.md shows them.
"""

from __future__ import annotations

BENCHMARKS: dict[str, str] = {
    "router": "benchmarks.router_bench",
    "deploy": "benchmarks.deploy_bench",
    "rollback": "benchmarks.rollback_bench",
    "kpis": "benchmarks.kpi_bench",
    "pipeline": "benchmarks.pipeline_bench",
    "images": "benchmarks.image_bench",
    "containers": "benchmarks.container_bench",
    "cli": "benchmarks.cli_bench",
}
