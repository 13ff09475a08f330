"""The local encrypted secret store: round trip, key handling, and no plain value on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from zerodown.errors import SecretsError
from zerodown.secrets.local import KEY_ENV, LocalSecretStore, new_key

SECRET = "pa55-w0rd-for-prod-db"


def _store(tmp_path: Path, environ: dict[str, str] | None = None) -> LocalSecretStore:
    return LocalSecretStore(
        tmp_path / "state" / "secrets.enc.json",
        key_file=tmp_path / "state" / "secret.key",
        environ={} if environ is None else environ,
    )


async def test_round_trip_by_environment(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.set("prod", "DB_PASSWORD", SECRET)
    await store.set("prod", "API_TOKEN", "tok-123456")
    await store.set("dev", "DB_PASSWORD", "dev-password")
    assert await store.values("prod") == {"DB_PASSWORD": SECRET, "API_TOKEN": "tok-123456"}
    assert await store.get("dev", "DB_PASSWORD") == "dev-password"
    assert await store.list("prod") == ("API_TOKEN", "DB_PASSWORD")
    await store.set("prod", "DB_PASSWORD", "rotated-value")
    assert await store.get("prod", "DB_PASSWORD") == "rotated-value"
    await store.remove("prod", "API_TOKEN")
    assert await store.list("prod") == ("DB_PASSWORD",)
    assert await store.values("staging") == {}


async def test_the_file_holds_no_plain_value_and_key_files_are_private(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.set("prod", "DB_PASSWORD", SECRET)
    data = store.path.read_bytes()
    assert SECRET.encode() not in data
    assert b"DB_PASSWORD" in data  # names stay readable: `list` shows what exists
    assert os.stat(store.path).st_mode & 0o777 == 0o600
    assert os.stat(store.key_file).st_mode & 0o777 == 0o600


async def test_a_wrong_key_is_refused_without_any_value_in_the_message(tmp_path: Path) -> None:
    await _store(tmp_path).set("prod", "DB_PASSWORD", SECRET)
    other = _store(tmp_path, {KEY_ENV: new_key()})
    with pytest.raises(SecretsError, match="another key") as caught:
        await other.values("prod")
    assert SECRET not in str(caught.value)
    with pytest.raises(SecretsError, match="another key"):
        await other.set("prod", "X_TOKEN", "abcdef")  # nothing is written with the wrong key
    assert await _store(tmp_path).list("prod") == ("DB_PASSWORD",)


async def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.set("prod", "DB_PASSWORD", SECRET)
    store.key_file.chmod(0o640)
    with pytest.raises(SecretsError, match="chmod 600"):
        await store.values("prod")


async def test_the_key_from_the_environment_needs_no_key_file(tmp_path: Path) -> None:
    environ = {KEY_ENV: new_key()}
    store = _store(tmp_path, environ)
    await store.set("prod", "DB_PASSWORD", SECRET)
    assert not store.key_file.exists()
    assert await _store(tmp_path, environ).get("prod", "DB_PASSWORD") == SECRET
    with pytest.raises(SecretsError, match="no key"):
        await _store(tmp_path).values("prod")  # neither the variable nor a key file


async def test_bad_keys_names_and_missing_secrets_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match="URL-safe base64"):
        await _store(tmp_path, {KEY_ENV: "too-short"}).set("prod", "DB_PASSWORD", SECRET)
    store = _store(tmp_path)
    with pytest.raises(SecretsError, match="not an environment variable name"):
        await store.set("prod", "db-password", SECRET)
    await store.set("prod", "DB_PASSWORD", SECRET)
    with pytest.raises(SecretsError, match="zerodown secrets set"):
        await store.get("prod", "MISSING")
    with pytest.raises(SecretsError, match="no secret MISSING"):
        await store.remove("prod", "MISSING")


async def test_a_value_moved_to_another_name_does_not_decrypt(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.set("prod", "DB_PASSWORD", SECRET)
    await store.set("prod", "OTHER", "other-value")
    document = json.loads(store.path.read_text())
    entries = document["environments"]["prod"]
    entries["OTHER"] = entries["DB_PASSWORD"]
    store.path.write_text(json.dumps(document))
    with pytest.raises(SecretsError, match="does not decrypt"):
        await store.values("prod")
