"""`build:` in zerodown.yml: the old command string unchanged, the image form, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from zerodown.config import parse_config
from zerodown.config.images import EcrRegistryConfig, PlainRegistryConfig
from zerodown.errors import ConfigError


def load(build: str) -> object:
    text = (
        f"services:\n  web:\n    source: {{repo: .}}\n    run: python app.py\n    build: {build}\n"
    )
    return parse_config(text, Path("zerodown.yml"), environ={}).config.services["web"].build


def error(build: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(build)
    return str(info.value)


def test_a_command_string_is_the_old_form() -> None:
    build = load("pip install -r requirements.txt")
    assert build is not None
    assert build.command == "pip install -r requirements.txt"  # type: ignore[attr-defined]
    assert build.image is None  # type: ignore[attr-defined]
    assert load('""').command is None  # type: ignore[attr-defined]  # "" built nothing, still


def test_image_form_with_a_plain_registry_by_default() -> None:
    build = load("{command: make, image: {preset: fastapi, registry: {address: '127.0.0.1:5000'}}}")
    image = build.image  # type: ignore[attr-defined]
    assert build.command == "make"  # type: ignore[attr-defined]
    assert isinstance(image.registry, PlainRegistryConfig)
    assert image.retention.keep_last == 10
    assert (image.retention.untagged_days, image.retention.dev_days) == (7, 30)
    assert image.production == ("prod",)


def test_ecr_registry() -> None:
    build = load("{image: {registry: {kind: ecr, region: ap-northeast-2}}}")
    assert isinstance(build.image.registry, EcrRegistryConfig)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("build", "says"),
    [
        ("{image: {preset: django, registry: {address: r:5000}}}", "fastapi"),
        ("{image: {registry: {address: 'http://r:5000'}}}", "host[:port]"),
        ("{image: {repository: Team/Web, registry: {address: r:5000}}}", "lower-case"),
        ("{image: {health_path: health, registry: {address: r:5000}}}", "/health"),
        ("{image: {preset: fastapi}}", "registry"),
    ],
)
def test_bad_image_settings_name_the_line_and_field(build: str, says: str) -> None:
    message = error(build)
    assert message.startswith("zerodown.yml:5: ")
    assert "build" in message and says in message
