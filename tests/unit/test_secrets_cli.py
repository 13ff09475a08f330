"""`zerodown secrets`: values from stdin (never argv), `get` masked unless --reveal, list, rm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zerodown.cli.secrets import secrets_app
from zerodown.errors import ConfigError, SecretsError
from zerodown.secrets.local import KEY_ENV, new_key

SECRET = "cli-s3cret-value-9"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "zerodown.yml").write_text(
        "services:\n  api:\n    run: python app.py\nenvironments:\n  prod: {}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(KEY_ENV, new_key())
    return tmp_path


def _run(*args: str, stdin: str | None = None) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(secrets_app, list(args), input=stdin)
    return result.exit_code, result.output, result.exception


def test_set_reads_stdin_and_get_masks_unless_revealed(project: Path) -> None:
    code, output, _ = _run("set", "--env", "prod", "DB_PASSWORD", stdin=SECRET + "\n")
    assert code == 0, output
    assert SECRET not in output
    code, output, _ = _run("get", "--env", "prod", "DB_PASSWORD")
    assert code == 0 and "DB_PASSWORD=****" in output and SECRET not in output
    code, output, _ = _run("get", "--env", "prod", "DB_PASSWORD", "--reveal")
    assert code == 0 and output == SECRET + "\n"  # the trailing newline of stdin was dropped


def test_list_shows_names_and_rm_deletes(project: Path) -> None:
    _run("set", "--env", "prod", "DB_PASSWORD", stdin=SECRET)
    _run("set", "--env", "prod", "API_TOKEN", stdin="tok-0123456")
    code, output, _ = _run("list", "--env", "prod", "--json")
    assert code == 0
    assert [item["name"] for item in json.loads(output)] == ["API_TOKEN", "DB_PASSWORD"]
    assert _run("rm", "--env", "prod", "API_TOKEN")[0] == 0
    code, output, _ = _run("list", "--env", "prod")
    assert "API_TOKEN" not in output and "DB_PASSWORD" in output


def test_there_is_no_way_to_pass_a_value_on_the_command_line(project: Path) -> None:
    code, _, _ = _run("set", "--env", "prod", "DB_PASSWORD", SECRET, stdin="")
    assert code == 2  # click: unexpected extra argument


def test_empty_values_and_unknown_environments_are_refused(project: Path) -> None:
    assert isinstance(_run("set", "--env", "prod", "DB_PASSWORD", stdin="")[2], SecretsError)
    assert isinstance(_run("list", "--env", "staging")[2], ConfigError)
