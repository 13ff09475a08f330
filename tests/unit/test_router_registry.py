"""Router and runtime backends are chosen by name in zerodown.yml and imported only when used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zerodown.config.loader import parse_config
from zerodown.config.router import BuiltinRouterConfig, HaproxyRouterConfig
from zerodown.errors import ConfigError
from zerodown.routers.base import RouterBackend
from zerodown.routers.registry import router_backend
from zerodown.runtimes.base import AdoptsOrphans, Runtime
from zerodown.runtimes.registry import open_runtime

SERVICES = "services:\n  api: {run: python app.py}\n"


def test_no_backend_named_is_the_builtin_router_with_its_own_settings() -> None:
    loaded = parse_config(
        "router: {listen: 127.0.0.1:9000, workers: 2}\n" + SERVICES, Path("z.yml")
    )
    assert isinstance(loaded.config.router, BuiltinRouterConfig)
    assert loaded.config.router.workers == 2
    backend = router_backend(loaded.config.router)
    assert isinstance(backend, RouterBackend) and backend.name == "builtin"


def test_haproxy_is_chosen_by_name_and_refuses_the_builtin_routers_settings() -> None:
    loaded = parse_config(
        "router: {backend: haproxy, hard_stop_after: 5m}\n" + SERVICES, Path("z.yml")
    )
    assert isinstance(loaded.config.router, HaproxyRouterConfig)
    assert loaded.config.router.hard_stop_after == 300.0
    with pytest.raises(ConfigError, match=r"z\.yml:3: router\.workers: unknown field"):
        parse_config("router:\n  backend: haproxy\n  workers: 2\n" + SERVICES, Path("z.yml"))


def test_an_unknown_router_backend_says_which_exist() -> None:
    with pytest.raises(ConfigError, match="write `backend: builtin` or `backend: haproxy`"):
        parse_config("router: {backend: nginx}\n" + SERVICES, Path("z.yml"))


def test_the_local_runtime_comes_from_the_registry_and_declares_adoption(tmp_path: Path) -> None:
    loaded = parse_config(SERVICES, tmp_path / "zerodown.yml")
    runtime = open_runtime(loaded.config.runtime, tmp_path)
    assert isinstance(runtime, Runtime) and isinstance(runtime, AdoptsOrphans)
    assert runtime.name == "local"


def test_a_backend_is_imported_only_when_chosen() -> None:
    """Loading a config and the registries loads no backend implementation."""
    code = (
        "import sys; from zerodown.config.loader import parse_config; from pathlib import Path; "
        "import zerodown.routers.registry, zerodown.runtimes.registry; "
        f"parse_config({SERVICES!r}, Path('z.yml')); "
        "print(sorted(m for m in sys.modules if m.startswith(('zerodown.routers.builtin', "
        "'zerodown.routers.haproxy', 'zerodown.runtimes.local'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
