"""The jobs of a pipeline as a DAG: check it, order it, and say which jobs may start now."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from zerodown.errors import PipelineDefinitionError


def check_graph(needs: Mapping[str, Sequence[str]]) -> None:
    """Raise `PipelineDefinitionError` for a `needs` naming an unknown job, or for a cycle
    (the message walks the cycle: a -> b -> a)."""
    for job, wanted in needs.items():
        for other in wanted:
            if other not in needs:
                known = ", ".join(sorted(needs))
                raise PipelineDefinitionError(
                    f"job {job!r} needs {other!r}, which is not a job (jobs: {known})"
                )
            if other == job:
                raise PipelineDefinitionError(f"job {job!r} needs itself: {job} -> {job}")
    cycle = find_cycle(needs)
    if cycle:
        raise PipelineDefinitionError("the jobs' needs form a cycle: " + " -> ".join(cycle))


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str]:
    """One cycle of the graph as [a, b, ..., a], or [] when there is none."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(needs, white)
    for start in sorted(needs):
        if colour[start] != white:
            continue
        # Iterative depth-first search: a pipeline is small, but recursion depth is not ours.
        path: list[str] = [start]
        stack: list[list[str]] = [sorted(needs[start])]
        colour[start] = grey
        while stack:
            if not stack[-1]:
                colour[path.pop()] = black
                stack.pop()
                continue
            nxt = stack[-1].pop()
            if colour.get(nxt, black) == grey:
                return [*path[path.index(nxt) :], nxt]
            if colour.get(nxt) == white:
                colour[nxt] = grey
                path.append(nxt)
                stack.append(sorted(needs[nxt]))
    return []


def topological_order(needs: Mapping[str, Sequence[str]]) -> list[str]:
    """Every job after the jobs it needs; ties keep the definition's order (stable)."""
    check_graph(needs)
    order: list[str] = []
    done: set[str] = set()
    remaining = list(needs)
    while remaining:
        ready = [job for job in remaining if all(n in done for n in needs[job])]
        order.extend(ready)
        done.update(ready)
        remaining = [job for job in remaining if job not in done]
    return order


def runnable(
    needs: Mapping[str, Sequence[str]],
    *,
    succeeded: Collection[str],
    running: Collection[str],
    finished: Collection[str],
    limit: int,
) -> list[str]:
    """Jobs that may start now: not started, every need succeeded, at most `limit` running in all.

    `finished` holds every job that ended in any way (succeeded, failed, skipped); a job whose
    need was skipped is never runnable, and the runner marks it skipped.
    """
    free = max(0, limit - len(running))
    ready = [
        job
        for job in topological_order(needs)
        if job not in running
        and job not in finished
        and all(need in succeeded for need in needs[job])
    ]
    return ready[:free]


def blocked(
    needs: Mapping[str, Sequence[str]], *, succeeded: Collection[str], finished: Collection[str]
) -> list[str]:
    """Jobs that can never run: one of their needs ended without succeeding."""
    return [
        job
        for job in topological_order(needs)
        if job not in finished
        and any(need in finished and need not in succeeded for need in needs[job])
    ]
