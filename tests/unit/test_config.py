"""zerodown.yml: good files load with presets applied; bad ones fail in one line naming the spot."""

from __future__ import annotations

from pathlib import Path

import pytest

from zerodown.config import load_config, parse_config
from zerodown.config.units import parse_duration, parse_size
from zerodown.errors import ConfigError

GOOD = """\
services:
  api:
    run: python app.py
    instances: 2
    hosts: [api.localhost]
    memory: 1400m
    health:
      preset: spring-boot
      interval: 5s
    hooks:
      BeforeInstall: echo before
      ValidateService: {command: ./check.sh, timeout: 2m}
environments:
  prod:
    branch: main
    strategy: {type: rolling, batch: 1, min_healthy: "50%"}
"""


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("zerodown.yml"), environ={})
    return info.value


def test_good_file_loads_with_preset_and_overrides_applied() -> None:
    loaded = parse_config(GOOD, Path("/srv/app/zerodown.yml"), environ={})
    api = loaded.config.services["api"]
    spec = api.health.to_spec()
    assert spec.path == "/actuator/health"
    assert spec.json_fields == {"status": "UP"}
    assert spec.start_period == 30.0
    assert spec.interval == 5.0  # the file overrides the preset
    assert api.memory == 1400 * 1024**2
    assert api.hooks["ValidateService"].timeout == 120.0
    assert api.hooks["BeforeInstall"].command == "echo before"
    assert loaded.config.environments["prod"].strategy.min_healthy == "50%"
    assert loaded.state_dir == Path("/srv/app/.zerodown")


def test_environment_variables_override_the_file() -> None:
    loaded = parse_config(
        GOOD,
        Path("/srv/app/zerodown.yml"),
        environ={"ZERODOWN_ROUTER_LISTEN": "127.0.0.1:9000", "ZERODOWN_STATE_DIR": "/tmp/zd"},
    )
    assert loaded.config.router.listen == ("127.0.0.1:9000",)
    assert loaded.state_dir == Path("/tmp/zd")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("services:\n  api:\n   run: x\n  - bad\n", "zerodown.yml:4: invalid YAML"),
        (
            "services:\n  api:\n    run: x\n    bogus: 1\n",
            "zerodown.yml:4: services.api.bogus: unknown field",
        ),
        (
            "services:\n  api:\n    run: x\n    drain_timeout: 3 weeks\n",
            "zerodown.yml:4: services.api.drain_timeout: not a duration",
        ),
        ("services:\n  api:\n    instances: 2\n", "services.api.run: required field is missing"),
        (
            "services:\n  api:\n    run: '  '\n",
            "zerodown.yml:3: services.api.run: must be a command",
        ),
        (
            "services:\n  api:\n    run: x\n    hooks:\n      Foo: bar\n",
            "zerodown.yml:5: services.api.hooks.Foo: unknown name 'Foo'",
        ),
        ("services:\n  api:\n    run: x\n    run: y\n", "zerodown.yml:4: run: duplicate key"),
        ("services:\n  API:\n    run: x\n", "name 'API'"),
    ],
)
def test_bad_input_gives_one_line_naming_file_line_and_field(text: str, expected: str) -> None:
    message = str(_error(text))
    assert expected in message
    assert "\n" not in message


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="zerodown init"):
        load_config(tmp_path / "zerodown.yml", environ={})


def test_command_health_check_needs_a_command() -> None:
    text = "services:\n  api:\n    run: x\n    health: {type: command}\n"
    assert "needs `command:`" in str(_error(text))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30.0), ("30s", 30.0), ("5m", 300.0), ("250ms", 0.25), ("1.5h", 5400.0)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "size"), [("1400m", 1400 * 1024**2), ("1g", 1024**3), (512, 512)]
)
def test_sizes(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["soon", "-3s", True, "10 parsecs"])
def test_bad_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)
