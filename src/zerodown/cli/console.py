"""The CLI's console, made on first use: `zerodown --help` and `version` never import rich."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """Stands for a masked rich `Console` (see `masked_console`) until something is printed."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from zerodown.secrets.masking import masked_console

            self._console = masked_console(**self._options)
        return getattr(self._console, name)


def lazy_console(**options: Any) -> Console:
    """A masked console with `options`, created when first used."""
    return cast("Console", _LazyConsole(**options))
