"""The local process runtime: instances are processes watched by a detached supervisor shim."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zerodown.runtimes.local.runtime import LocalRuntime

__all__ = ["LocalRuntime"]


def __getattr__(name: str) -> Any:
    # Lazy on purpose: `python -m zerodown.runtimes.local.supervisor` imports this package first,
    # and the supervisor should neither pay for nor double-import the runtime side.
    if name == "LocalRuntime":
        from zerodown.runtimes.local.runtime import LocalRuntime

        return LocalRuntime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
