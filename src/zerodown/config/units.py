"""Durations ("30s", "5m", "500ms") and sizes ("1400m", "1g", "512Mi") as zerodown.yml has them."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|k|ki|kb|m|mi|mb|g|gi|gb)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "k": 1024,
    "ki": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mi": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gi": 1024**3,
    "gb": 1000**3,
}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as "30s", "5m", "1.5h", "250ms"."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r} (write e.g. 30s, 5m, 250ms)")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError(f"not a duration: {value!r} (write e.g. 30s, 5m, 250ms)")


def parse_size(value: Any) -> int:
    """Bytes from a number or a string such as "1400m" (Docker's --memory), "1g", "512Mi"."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r} (write e.g. 512m, 1g)")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"size must be positive: {value!r}")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            unit = match.group(2).lower() if match.group(2) else None
            return int(float(match.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"not a size: {value!r} (write e.g. 512m, 1g)")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
