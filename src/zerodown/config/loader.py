"""Reading zerodown.yml: YAML with line numbers, validation, and errors that point at the line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from zerodown.config.model import ZerodownConfig
from zerodown.config.routes import RouteConflict
from zerodown.errors import ConfigError
from zerodown.routers.registry import ROUTER_BACKENDS
from zerodown.runtimes.registry import RUNTIME_BACKENDS

DEFAULT_FILE = "zerodown.yml"


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and where it came from."""

    config: ZerodownConfig
    path: Path  # the zerodown.yml that was read
    root: Path  # its directory: relative paths in the file start here

    @property
    def state_dir(self) -> Path:
        return (self.root / self.config.state_dir).resolve()

    @property
    def store_url(self) -> str:
        return self.config.store or f"sqlite:///{self.state_dir / 'history.db'}"


def find_config(start: Path | None = None) -> Path:
    """The zerodown.yml in `start` or its nearest parent directory."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / DEFAULT_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {DEFAULT_FILE} here or in any parent directory: create one with `zerodown init`",
        path=str(here / DEFAULT_FILE),
    )


def load_config(
    path: Path | str | None = None, *, environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Read, override from ZERODOWN_* variables, validate; raise `ConfigError` on any problem."""
    file = Path(path) if path is not None else find_config()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "file not found: create it with `zerodown init`", path=str(file)
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", path=str(file)) from exc
    return parse_config(text, file, environ=os.environ if environ is None else environ)


def parse_config(
    text: str, file: Path, *, environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Validate YAML text as zerodown config; `file` is used for messages and relative paths."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or "invalid YAML"
        raise ConfigError(
            f"invalid YAML: {problem} (check indentation and quoting)", path=str(file), line=line
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the file must be a mapping of settings", path=str(file), line=1)
    _check_duplicate_keys(node, file)
    data = _apply_environ(data, environ or {})
    try:
        config = ZerodownConfig.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, node, file) from None
    return LoadedConfig(config=config, path=file.resolve(), root=file.resolve().parent)


def _apply_environ(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    data = dict(data)
    if environ.get("ZERODOWN_STATE_DIR"):
        data["state_dir"] = environ["ZERODOWN_STATE_DIR"]
    if environ.get("ZERODOWN_STORE"):
        data["store"] = environ["ZERODOWN_STORE"]
    if environ.get("ZERODOWN_ROUTER_LISTEN"):
        router = dict(data.get("router") or {})
        router["listen"] = [item.strip() for item in environ["ZERODOWN_ROUTER_LISTEN"].split(",")]
        data["router"] = router
    return data


def _first_error(exc: ValidationError, root: yaml.Node | None, file: Path) -> ConfigError:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, RouteConflict):  # raised for the whole config: it names its field
        loc = list(cause.loc)
    # pydantic reports errors raised in a validator of a union/annotated type with extra parts
    loc = [part for part in loc if not part.startswith(("function-", "tagged-union"))]
    if len(loc) >= 2 and loc[0] == "router" and loc[1] in ROUTER_BACKENDS:
        loc.pop(1)  # the tag pydantic puts in the path of a backend's own settings
    if len(loc) >= 2 and loc[0] == "runtime" and loc[1] in RUNTIME_BACKENDS:
        loc.pop(1)  # likewise for a runtime backend's settings
    field = ".".join(loc) if loc else None
    message = error["msg"].removeprefix("Value error, ")
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown field (check its spelling and indentation)"
        if len(loc) >= 3 and loc[-2] == "hooks":
            message = "unknown hook name: use one of BeforeBlockTraffic ... AfterAllowTraffic"
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "literal_error" and loc and loc[-1] == "[key]":
        loc = loc[:-1]
        field = ".".join(loc)
        message = f"unknown name {loc[-1]!r}: {message.replace('Input should be', 'use')}"
    elif kind == "literal_error":
        message = message.replace("Input should be", "must be")
    line = _line_of(root, loc)
    return ConfigError(message, path=str(file), line=line, field=field)


def _line_of(root: yaml.Node | None, loc: list[str]) -> int | None:
    """The line of the deepest node along `loc` that exists in the file."""
    node = root
    line: int | None = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if str(k.value) == part), None)
            if match is None:
                key = next((k for k, _ in node.value if str(k.value) == part), None)
                return int(key.start_mark.line) + 1 if key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
        else:
            break
        line = int(node.start_mark.line) + 1
    # an unknown key: point at the key itself
    if isinstance(node, yaml.MappingNode) and loc:
        for key, _ in node.value:
            if str(key.value) == loc[-1]:
                return int(key.start_mark.line) + 1
    return line


def _check_duplicate_keys(node: yaml.Node | None, file: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                raise ConfigError(
                    "duplicate key: remove one of the two",
                    path=str(file),
                    line=key.start_mark.line + 1,
                    field=name,
                )
            seen.add(name)
            _check_duplicate_keys(value, file)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, file)
