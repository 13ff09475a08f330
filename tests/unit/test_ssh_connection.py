"""SSH connection basics without a server: host names and the sentences errors become."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from zerodown.errors import RuntimeBackendError
from zerodown.runtimes.ssh.connection import SshOptions, SshTarget, quote, translate_error

OPTIONS = SshOptions(user="deploy", key=Path("/keys/id_ed25519"), known_hosts=Path("/kh"))
TARGET = SshTarget("10.0.0.5", 2222)


def test_a_target_is_named_by_address_and_a_non_default_port() -> None:
    """Errors name `address:port`, or the bare address on port 22."""
    assert TARGET.name == "10.0.0.5:2222"
    assert SshTarget("10.0.0.6").name == "10.0.0.6"


@pytest.mark.parametrize("address,port", [("", 22), ("a b", 22), ("10.0.0.5", 0)])
def test_a_bad_target_is_refused(address: str, port: int) -> None:
    """An empty address, one with spaces, or a port outside 1-65535 never reaches asyncssh."""
    with pytest.raises(RuntimeBackendError):
        SshTarget(address, port)


def test_an_unknown_host_key_says_how_to_add_it() -> None:
    """The sentence names the host, the known_hosts file and the ssh-keyscan line to run."""
    error = translate_error(TARGET, OPTIONS, asyncssh.HostKeyNotVerifiable("no match"))
    assert str(error) == (
        "host 10.0.0.5:2222: its SSH host key is unknown or changed (not as in /kh); check the "
        "key with the host's owner, then add it with `ssh-keyscan -p 2222 10.0.0.5 >> /kh`"
    )


def test_a_refused_login_names_the_user_and_the_key() -> None:
    """Permission denied names the user, the key file and where its public key goes."""
    error = translate_error(TARGET, OPTIONS, asyncssh.PermissionDenied("denied"))
    assert "host 10.0.0.5:2222: user 'deploy' was refused with key /keys/id_ed25519" in str(error)
    assert "~deploy/.ssh/authorized_keys" in str(error)


def test_a_refused_connection_and_a_timeout_name_the_host() -> None:
    """Network failures say which host and what to check."""
    refused = translate_error(TARGET, OPTIONS, ConnectionRefusedError(111, "Connection refused"))
    assert str(refused).startswith("host 10.0.0.5:2222 cannot be reached over SSH: Connection")
    assert "listens on port 2222" in str(refused)
    late = translate_error(TARGET, OPTIONS, TimeoutError())
    assert str(late).startswith("host 10.0.0.5:2222 did not answer SSH within 10s")


def test_quote_keeps_every_word_one_word_for_the_remote_shell() -> None:
    """Paths with spaces and shell characters reach the remote command unchanged."""
    assert quote("test", "-d", "/srv/my app;rm -rf /") == "test -d '/srv/my app;rm -rf /'"
