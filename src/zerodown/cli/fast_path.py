"""What the CLI needs to reach a running `zerodown serve` before it loads anything heavy.

`zerodown status` through serve should answer in well under half a second; validating
zerodown.yml (pydantic) and opening the history (SQLAlchemy) would take most of that. serve
validates the file itself, so here the state directory is only read from it.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_FILE = "zerodown.yml"  # zerodown.config.loader.DEFAULT_FILE, without importing it


def state_dir_hint(config: Path | None) -> Path | None:
    """The state dir zerodown.yml (given, or the nearest one upwards) names, honouring
    ZERODOWN_STATE_DIR; None when there is no readable file (the full load says why)."""
    path = config if config is not None else _nearest(Path.cwd().resolve())
    if path is None:
        return None
    try:
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    configured = data.get("state_dir", ".zerodown") if isinstance(data, dict) else ".zerodown"
    state_dir = os.environ.get("ZERODOWN_STATE_DIR") or configured
    if not isinstance(state_dir, str):
        return None
    return (path.resolve().parent / state_dir).resolve()


def _nearest(here: Path) -> Path | None:
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None
