"""Where environments are served: `listen:` as a string or a list, defaults that never collide,
and the shadow check that refuses two routes the router could not tell apart."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from zerodown.config import parse_config
from zerodown.config.model import ZerodownConfig
from zerodown.config.routes import router_addresses
from zerodown.errors import ConfigError

SERVICE = """\
services:
  api:
    run: python app.py
"""


def _load(text: str) -> ZerodownConfig:
    return parse_config(text, Path("zerodown.yml"), environ={}).config


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("zerodown.yml"), environ={})
    return info.value


def test_router_listen_may_be_a_single_string() -> None:
    config = _load("router: {listen: 127.0.0.1:9000}\n" + SERVICE)
    assert config.router.listen == ("127.0.0.1:9000",)
    listed = _load('router: {listen: ["127.0.0.1:9000", "[::1]:9000"]}\n' + SERVICE)
    assert listed.router.listen == ("127.0.0.1:9000", "[::1]:9000")


def test_environment_listen_may_be_a_single_string() -> None:
    config = _load(SERVICE + "environments:\n  prod:\n    listen: 127.0.0.1:9100\n")
    assert config.environments["prod"].listen == ("127.0.0.1:9100",)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("8080", "write host:port or a list of them, e.g. `listen: 127.0.0.1:8080`"),
        ("localhost", "write host:port with an IP address, e.g. 127.0.0.1:8080"),
        ("api.example.com:80", "write host:port with an IP address"),
        ("127.0.0.1:99999", "write host:port with an IP address"),
        ("{port: 8080}", "write host:port or a list of them, e.g. `listen: 127.0.0.1:8080`"),
        ("[]", "list at least one host:port"),
    ],
)
def test_a_bad_listen_names_the_line_and_what_to_write(value: str, says: str) -> None:
    error = _error(f"router:\n  workers: 1\n  listen: {value}\n" + SERVICE)
    assert error.line == 3
    assert error.field is not None and error.field.startswith("router.listen")
    assert says in error.reason
    assert "valid tuple" not in str(error)


def test_init_style_dev_and_prod_get_ports_8080_and_8081_and_a_third_8082() -> None:
    config = _load(SERVICE + "environments:\n  dev: {}\n  prod: {}\n  canary: {}\n")
    listen = {name: env.listen for name, env in config.environments.items()}
    assert listen == {
        "dev": ("127.0.0.1:8080",),
        "prod": ("127.0.0.1:8081",),
        "canary": ("127.0.0.1:8082",),
    }
    assert router_addresses(config) == ["127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082"]


def test_an_environment_with_its_own_hosts_shares_router_listen() -> None:
    text = SERVICE + "environments:\n  prod: {}\n  staging:\n    hosts: [staging.example.com]\n"
    config = _load(text)
    assert config.environments["staging"].listen == ("127.0.0.1:8080",)
    assert config.environments["staging"].hosts == ("staging.example.com",)


def test_two_environments_on_one_address_are_refused_at_the_line_of_listen() -> None:
    text = SERVICE + (
        "environments:\n  prod: {}\n  canary:\n    branch: main\n    listen: 127.0.0.1:8080\n"
    )
    error = _error(text)
    assert error.exit_code == 2
    assert (error.line, error.field) == (8, "environments.canary.listen")
    assert "api.prod and api.canary would shadow each other" in error.reason
    assert "127.0.0.1:8080, any host, path /" in error.reason
    assert "`listen: 127.0.0.1:8081`" in error.reason  # what to write instead


def test_overlapping_environment_hosts_on_one_address_are_refused_at_hosts() -> None:
    text = SERVICE + (
        "environments:\n"
        "  prod:\n"
        "    hosts: [a.example.com, b.example.com]\n"
        "  canary:\n"
        "    hosts: [B.example.com]\n"
    )
    error = _error(text)
    assert (error.line, error.field) == (8, "environments.canary.hosts")
    assert "b.example.com" in error.reason


def test_disjoint_hosts_or_an_any_host_route_beside_a_host_bound_one_are_fine() -> None:
    # the router matches host-bound routes before any-host ones: neither shadows the other
    text = SERVICE + (
        "environments:\n"
        "  prod: {}\n"
        "  staging:\n"
        "    hosts: [staging.example.com]\n"
        "  qa:\n"
        "    hosts: [qa.example.com]\n"
    )
    assert set(_load(text).environments) == {"prod", "staging", "qa"}


def test_two_services_with_one_path_in_one_environment_are_refused_at_the_path() -> None:
    text = (
        "services:\n"
        "  api:\n"
        "    run: python app.py\n"
        "  web:\n"
        "    run: python web.py\n"
        "    path_prefix: /\n"
    )
    error = _error(text)
    assert (error.line, error.field) == (6, "services.web.path_prefix")
    assert "routes api.dev and web.dev would shadow each other" in error.reason
    assert "own `path_prefix:` (e.g. /web)" in error.reason


def test_two_services_with_different_paths_share_an_environment() -> None:
    text = SERVICE + "  web:\n    run: python web.py\n    path_prefix: /web\n"
    assert set(_load(text).services) == {"api", "web"}


def test_a_wildcard_and_a_specific_address_on_one_port_are_refused() -> None:
    text = (
        "router: {listen: 0.0.0.0:8080}\n"
        + SERVICE
        + ("environments:\n  prod: {}\n  dev:\n    listen: 127.0.0.1:8080\n")
    )
    error = _error(text)
    assert error.field == "environments.dev.listen"
    assert "cannot listen on both 0.0.0.0:8080 and 127.0.0.1:8080" in error.reason


def test_an_environment_on_the_dashboards_address_is_refused() -> None:
    text = "server: {listen: 127.0.0.1:8081}\n" + SERVICE + "environments:\n  dev: {}\n  prod: {}\n"
    error = _error(text)
    assert error.field == "environments.prod"
    assert "is also server.listen" in error.reason


def test_the_check_applies_to_every_load_not_only_the_file_loader() -> None:
    data = {
        "services": {"api": {"run": "python app.py"}},
        "environments": {"prod": {}, "canary": {"listen": "127.0.0.1:8080"}},
    }
    with pytest.raises(ValidationError, match="would shadow each other"):
        ZerodownConfig.model_validate(data)


def test_the_json_schema_lets_editors_accept_listen_as_a_string_or_a_list() -> None:
    defs = ZerodownConfig.model_json_schema()["$defs"]
    for model in ("BuiltinRouterConfig", "HaproxyRouterConfig", "EnvironmentConfig"):
        options = defs[model]["properties"]["listen"]["anyOf"]
        assert {"type": "string"} in options
        assert {"type": "array", "items": {"type": "string"}} in options
        assert "type" not in defs[model]["properties"]["listen"]
