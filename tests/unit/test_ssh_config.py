"""`runtime: {backend: ssh, ...}` in zerodown.yml: hosts, defaults, refusals, the opened runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from zerodown.config import parse_config
from zerodown.config.model import ZerodownConfig
from zerodown.config.ssh import SshRuntimeConfig
from zerodown.errors import ConfigError
from zerodown.runtimes.registry import open_runtime
from zerodown.runtimes.ssh.runtime import SshRuntime

SERVICE = """\
services:
  web:
    run: python3 app.py
"""


def config(runtime: str) -> ZerodownConfig:
    """The config of a one-service zerodown.yml with this `runtime:` section."""
    return parse_config(SERVICE + runtime, Path("zerodown.yml"), environ={}).config


def test_hosts_as_strings_and_mappings_with_defaults() -> None:
    """`address`, `user@address:port` and mappings are hosts; unset fields take the defaults."""
    settings = config(
        "runtime:\n"
        "  backend: ssh\n"
        "  hosts: [10.0.0.1, 'deploy@10.0.0.2:2222', {address: '[::1]'},\n"
        "          {address: h4, dir: /srv}]\n"
        "  key: ~/.ssh/fleet\n"
        "  command_timeout: 2m\n"
    ).runtime
    assert isinstance(settings, SshRuntimeConfig)
    hosts = [(h.address, h.port, h.user, h.dir) for h in settings.hosts]
    assert hosts == [
        ("10.0.0.1", 22, None, None),
        ("10.0.0.2", 2222, "deploy", None),
        ("::1", 22, None, None),
        ("h4", 22, None, "/srv"),
    ]
    assert (settings.user, settings.dir, settings.python) == ("root", "~/.zerodown", "python3")
    assert (settings.connect_timeout, settings.command_timeout) == (10.0, 120.0)
    assert settings.known_hosts is None  # ~/.ssh/known_hosts: checking is never off


@pytest.mark.parametrize(
    ("runtime", "where", "says"),
    [
        ("runtime:\n  backend: ssh\n", "zerodown.yml:5: runtime.hosts: ", "required field"),
        (
            "runtime:\n  backend: ssh\n  hosts: []\n",
            "zerodown.yml:6: runtime.hosts: ",
            "list at least one host, e.g. hosts: [10.0.0.1",
        ),
        (
            "runtime:\n  backend: ssh\n  hosts: [a, a]\n",
            "zerodown.yml:6: runtime.hosts: ",
            "host a is listed twice",
        ),
        (
            "runtime:\n  backend: ssh\n  hosts: ['bad host']\n",
            "zerodown.yml:6: runtime.hosts.0: ",
            "write address, user@address or user@address:port",
        ),
        (
            "runtime:\n  backend: ssh\n  hosts: [a]\n  known_host: x\n",
            "zerodown.yml:7: runtime.known_host: ",
            "unknown field",
        ),
        (
            "runtime:\n  backend: ssh\n  hosts: [a]\n  connect_timeout: 0s\n",
            "zerodown.yml:7: runtime.connect_timeout: ",
            "more than 0",
        ),
    ],
)
def test_bad_ssh_settings_name_the_line_and_field(runtime: str, where: str, says: str) -> None:
    """Each refusal names zerodown.yml:LINE, the field and what to write."""
    with pytest.raises(ConfigError) as caught:
        config(runtime)
    assert str(caught.value).startswith(where), str(caught.value)
    assert says in str(caught.value)
    assert caught.value.exit_code == 2


def test_an_unknown_backend_lists_ssh_among_the_choices() -> None:
    """A misspelt backend says which ones exist."""
    with pytest.raises(ConfigError, match="`backend: ssh`"):
        config("runtime:\n  backend: shh\n")


def test_the_registry_opens_the_ssh_runtime_without_connecting(tmp_path: Path) -> None:
    """`open_runtime` builds an SshRuntime over the configured hosts; nothing connects yet."""
    settings = config(
        "runtime:\n  backend: ssh\n  hosts: ['ops@10.9.9.1:2200', 10.9.9.2]\n  dir: /srv/zd\n"
    ).runtime
    runtime = open_runtime(settings, tmp_path)
    assert isinstance(runtime, SshRuntime)
    assert [(h.target.name, h.target.user, h.root) for h in runtime.hosts] == [
        ("10.9.9.1:2200", "ops", "/srv/zd"),
        ("10.9.9.2", None, "/srv/zd"),
    ]
    assert runtime.options.user == "root"
