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
