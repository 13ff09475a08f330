"""What one post-deploy check found, as a sentence for people and numbers for the history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

CheckKind = Literal["smoke", "dependency", "log_scan"]
MAX_SHOWN = 120  # characters of a response value quoted in a detail


@dataclass(frozen=True)
class CheckResult:
    """One check against one target (an instance, the router, or the new fleet's logs)."""

    check: str  # the check's name: "GET /health", "DB", "error-lines"
    kind: CheckKind
    target: str  # instance id, "router", or "3 instances"
    ok: bool
    detail: str  # why it failed, or what it measured
    numbers: dict[str, Any] = field(default_factory=dict)  # status, latency_ms, count, ...

    def message(self) -> str:
        """One line for the event: `smoke check GET /health on api-1 passed: 200 in 12 ms`."""
        mark = "passed" if self.ok else "FAILED"
        return f"{_KIND_NAMES[self.kind]} {self.check} on {self.target} {mark}: {self.detail}"

    def event_data(self) -> dict[str, Any]:
        """The VERIFY event's data: names, outcome and every number."""
        return {
            "check": self.check,
            "kind": self.kind,
            "target": self.target,
            "ok": self.ok,
            "detail": self.detail,
            **self.numbers,
        }


_KIND_NAMES: dict[CheckKind, str] = {
    "smoke": "smoke check",
    "dependency": "dependency",
    "log_scan": "log scan",
}


def summarize(
    results: Sequence[CheckResult], seconds: float, *, error: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The summary event's message and data: how many passed, which failed, how long it took.

    `error`: why the verification stopped before its checks could decide (timeout, no instance).
    """
    failures = [r for r in results if not r.ok]
    failed_names = list(dict.fromkeys(f"{r.check} ({r.target})" for r in failures))
    data: dict[str, Any] = {
        "summary": True,
        "ok": not failures and error is None,
        "passed": len(results) - len(failures),
        "failed": len(failures),
        "failures": failed_names,
        "seconds": round(seconds, 3),
    }
    if error is not None:
        data["error"] = error
        return f"verification failed: {error}", data
    if not failures:
        return f"verification passed: {len(results)} check(s) in {seconds:.1f} s", data
    return (
        f"verification failed: {len(failures)} of {len(results)} check(s) failed "
        f"({', '.join(failed_names)})",
        data,
    )


def failure_reason(results: Sequence[CheckResult]) -> str:
    """The sentence a failed deployment records: the first failed check and why."""
    failures = [r for r in results if not r.ok]
    if not failures:
        return "verification passed"
    first = failures[0]
    reason = f"{_KIND_NAMES[first.kind]} {first.check} failed on {first.target}: {first.detail}"
    if len(failures) > 1:
        reason += f" (and {len(failures) - 1} more failed check(s))"
    return reason


def shown(value: Any) -> str:
    """A response value quoted in a detail, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."
