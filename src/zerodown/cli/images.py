"""`zerodown images prune [--service S] [--dry-run]`: the registry images' retention policy.

Every image of each service that builds one (`build.image`) gets a verdict with its reason;
digests a running instance or a recorded live/rollback revision uses are always kept.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from zerodown.cli.console import lazy_console
from zerodown.errors import ConfigError

if TYPE_CHECKING:
    from zerodown.config import LoadedConfig
    from zerodown.images.retention import ImageVerdict

images_app = typer.Typer(help="Container images in the registry: retention.", no_args_is_help=True)
console = lazy_console(highlight=False)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="zerodown.yml (default: search upwards).")
]


@images_app.command("prune")
def prune_command(
    service: Annotated[
        str | None, typer.Option("--service", "-s", help="Only this service.")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="List what would go and why; delete nothing.")] = (
        False
    ),
    config: ConfigOption = None,
) -> None:
    """Delete registry images the retention policy lets go (latest, the last 10 and every
    in-use digest stay)."""
    from zerodown.config import load_config

    loaded = load_config(config)
    results = asyncio.run(_prune(loaded, service, dry_run))
    verb = "would delete" if dry_run else "deleted"
    total = 0
    for name, verdicts in results.items():
        for verdict in verdicts:
            tags = ",".join(_short(t) for t in verdict.image.tags) or "<untagged>"
            what = "keep" if verdict.keep else verb
            total += not verdict.keep
            console.print(f"{name}: {what} {verdict.image.digest[:19]} [{tags}]: {verdict.reason}")
    console.print(f"{verb} {total} image(s)")


async def _prune(
    loaded: LoadedConfig, only: str | None, dry_run: bool
) -> dict[str, list[ImageVerdict]]:
    from zerodown.images.lifecycle import ImageLifecycle
    from zerodown.runtimes.registry import open_runtime
    from zerodown.store.sql import open_store

    store = open_store(loaded.store_url)
    try:
        lifecycle = ImageLifecycle(
            loaded, store, open_runtime(loaded.config.runtime, loaded.state_dir)
        )
        names = lifecycle.image_services()
        if only is not None:
            if only not in loaded.config.services:
                known = ", ".join(sorted(loaded.config.services))
                raise ConfigError(
                    f"--service {only}: no such service; zerodown.yml defines {known}",
                    path=str(loaded.path),
                )
            names = [only]
        elif not names:
            raise ConfigError(
                "no service builds an image: add build.image to one", path=str(loaded.path)
            )
        return {name: await lifecycle.prune(name, dry_run=dry_run) for name in names}
    finally:
        await store.close()


def _short(tag: str) -> str:
    return tag[:12] if len(tag) == 40 and all(c in "0123456789abcdef" for c in tag) else tag


def register(app: typer.Typer) -> None:
    """Add `images` to the CLI."""
    app.add_typer(images_app, name="images")
