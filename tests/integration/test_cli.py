"""The `zerodown` command: known errors are one line with exit code 2, nothing is started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def zerodown(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zerodown", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_init_writes_a_config_that_check_accepts(tmp_path: Path) -> None:
    done = zerodown("init", "--preset", "spring-boot", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "preset: spring-boot" in (tmp_path / "zerodown.yml").read_text()
    checked = zerodown("check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "services: api x2" in checked.stdout


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "zerodown.yml").write_text("services: {}\n")
    done = zerodown("init", cwd=tmp_path)
    assert done.returncode == 2
    assert "already exists" in done.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("services:\n  api:\n    run: x\n    drain_timeout: forever\n", "zerodown.yml:4:"),
        ("services:\n  api:\n    run: x\n    rnu: y\n", "services.api.rnu: unknown"),
        ("services: [\n", "invalid YAML"),
    ],
)
def test_bad_config_is_one_line_exit_2_and_starts_nothing(
    tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "zerodown.yml").write_text(text)
    done = zerodown("status", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert expected in lines[0]
    assert not (tmp_path / ".zerodown").exists()  # nothing started, nothing written


def test_deploy_of_an_unknown_service_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "zerodown.yml").write_text("services:\n  api:\n    run: x\n")
    done = zerodown("deploy", "nope", "--env", "dev", "--revision", "v1", cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown service 'nope'" in done.stderr
    assert not (tmp_path / ".zerodown").exists()


def test_schema_is_generated_from_the_model(tmp_path: Path) -> None:
    done = zerodown("schema", cwd=tmp_path)
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert "services" in schema["properties"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["deploy"], "Missing argument"),
        (["nosuchcmd"], "No such command 'nosuchcmd'"),
        (["status", "--bogus"], "No such option: --bogus"),
    ],
)
def test_usage_errors_are_clicks_message_and_exit_2(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    """Through the installed entry point: a usage error is click's message, never a crash."""
    entry_point = Path(sys.executable).with_name("zerodown")
    done = subprocess.run(
        [str(entry_point), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "Usage: zerodown" in done.stderr
    assert "unexpected error" not in done.stderr


# (typer itself loads pydantic to convert the arguments of any command it runs)
HEAVY = ("sqlalchemy", "fastapi", "uvicorn", "httpx", "zerodown.config", "zerodown.control_plane")


def _imported(*args: str, cwd: Path) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "zerodown", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        line.split("|")[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }


@pytest.mark.parametrize("args", [["--help"], ["version"], ["deploy", "--help"]])
def test_help_and_version_load_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    """Start-up cost is imports: --help and version load no database, model or web library
    (the timings are in `make bench`)."""
    heavy = {m for m in _imported(*args, cwd=tmp_path) if m.startswith(HEAVY)}
    assert heavy == set()
