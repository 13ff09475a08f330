"""The README's zerodown.yml example is valid config (so the README stays true to the code)."""

from __future__ import annotations

import re
from pathlib import Path

from zerodown.config import parse_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_yaml_example_loads() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.DOTALL)
    assert blocks, "README has no yaml example"
    for block in blocks:
        loaded = parse_config(block, Path("zerodown.yml"), environ={})
        assert loaded.config.services


def test_readme_says_the_periods_the_seed_alarms_use() -> None:
    """The comment on `alarms: [{preset: seed}]` names every period the seed presets use."""
    from zerodown.alarms.presets import PRESETS, SEED

    line = next(x for x in README.read_text().splitlines() if "{preset: seed}" in x)
    stated = {int(n) for n in re.findall(r"(\d+) s\b", line.partition("#")[2])}
    assert stated == {int(PRESETS[name]["period"]) for name in SEED}, line
