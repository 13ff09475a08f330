"""zerodown's command line. Only this package exits the process.

Every failure is sorted into a known error (one red line, the error's exit code: 2 for bad input, 1
otherwise) or an unexpected one (the traceback goes to a log file; the user is asked to report it).
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from zerodown.errors import ZerodownError

if TYPE_CHECKING:
    from rich.console import Console

EXIT_UNEXPECTED = 70  # EX_SOFTWARE


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `zerodown` command."""
    from zerodown.secrets.masking import masked_console

    args = list(sys.argv[1:] if argv is None else argv)
    errors = masked_console(stderr=True, highlight=False)
    try:
        code = _run(args, errors)
    except ZerodownError as exc:
        errors.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        errors.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    except Exception:
        log = Path.home() / ".zerodown" / f"crash-{time.strftime('%Y%m%d-%H%M%S')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
        errors.print(
            "[bold red]unexpected error[/bold red]: zerodown itself failed; the traceback is in "
            f"{log}. Please report this (the router and your instances keep serving).",
            soft_wrap=True,
        )
        sys.exit(EXIT_UNEXPECTED)
    sys.exit(code)


def _run(args: list[str], errors: Console) -> int:
    """The command's exit code: `version` and `status` through serve answered at once, the
    rest by the typer application (loaded only then)."""
    from zerodown.cli.fast_path import answer_without_typer

    if answer_without_typer(args):
        return 0
    import typer
    from typer._click.exceptions import ClickException  # typer >= 0.24 bundles its own click

    from zerodown.cli.app import app

    try:
        # without standalone mode, click returns a command's exit code instead of exiting
        code = app(args=args, standalone_mode=False, prog_name="zerodown")
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        errors.print("[yellow]aborted[/yellow]")
        return 130
    except ClickException as exc:  # usage errors: click's own message and exit code (2)
        exc.show()
        return exc.exit_code
    return code if isinstance(code, int) else 0
