"""The local secret store: one encrypted JSON file per project, AES-256-GCM per value.

Names are stored in clear (so `list` shows what exists); each value is encrypted with a random
nonce and bound to its environment and name (associated data), so a value copied to another slot
does not decrypt. A key-check entry makes a wrong key fail at once, before anything is written.
The key comes from `ZERODOWN_SECRET_KEY` (32 bytes, URL-safe base64) or a key file created with
mode 0600 and refused when group or others may read it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from zerodown.errors import SecretsError
from zerodown.secrets.base import check_name, not_found

KEY_ENV = "ZERODOWN_SECRET_KEY"
STORE_FILE = "secrets.enc.json"
KEY_FILE = "secret.key"
FORMAT = "zerodown-secrets/1"
_NONCE_BYTES = 12
_CHECK_AAD = b"zerodown key check"
_CHECK_PLAINTEXT = b"zerodown"
_MAKE_KEY = 'python -c "import base64,os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'


def new_key() -> str:
    """A fresh key in the form `ZERODOWN_SECRET_KEY` and key files take."""
    return base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        key = b""
    if len(key) != 32:
        raise SecretsError(
            f"{where} is not a zerodown secret key (32 bytes in URL-safe base64); "
            f"make one with: {_MAKE_KEY}"
        )
    return key


def _write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write `data` to `path` with mode 0600, atomically (through a rename) unless `exclusive`."""
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class LocalSecretStore:
    """Secrets of every environment of a project in `path`, encrypted with one key."""

    def __init__(
        self, path: Path, *, key_file: Path, environ: Mapping[str, str] | None = None
    ) -> None:
        self.path = path
        self.key_file = key_file
        self._environ = os.environ if environ is None else environ

    def __repr__(self) -> str:
        return f"LocalSecretStore({str(self.path)!r})"

    def describe(self, environment: str) -> str:
        """`local:<file>`."""
        return f"local:{self.path}"

    # -- the seam -------------------------------------------------------------------------------

    async def values(self, environment: str) -> dict[str, str]:
        """Every secret of `environment`, decrypted."""
        return await asyncio.to_thread(self._values, environment)

    async def get(self, environment: str, name: str) -> str:
        """One secret, decrypted."""
        values = await self.values(environment)
        if name not in values:
            raise not_found(name, f"the local store ({environment})")
        return values[name]

    async def list(self, environment: str) -> tuple[str, ...]:
        """The names of `environment`'s secrets (checks the key too)."""
        return tuple(sorted(await self.values(environment)))

    async def set(self, environment: str, name: str, value: str) -> None:
        """Encrypt and store one secret (creating the key file on first use)."""
        check_name(name)
        await asyncio.to_thread(self._change, environment, name, value)

    async def remove(self, environment: str, name: str) -> None:
        """Delete one secret."""
        await asyncio.to_thread(self._change, environment, name, None)

    # -- file and key -----------------------------------------------------------------------------

    def _values(self, environment: str) -> dict[str, str]:
        document = self._read()
        if document is None:
            return {}
        cipher = AESGCM(self._key(create=False))
        self._check_key(cipher, document)
        entries: dict[str, str] = document["environments"].get(environment, {})
        return {
            name: self._decrypt(cipher, token, _aad(environment, name)).decode("utf-8")
            for name, token in entries.items()
        }

    def _change(self, environment: str, name: str, value: str | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._locked():
            document = self._read()
            cipher = AESGCM(self._key(create=document is None))
            if document is None:
                check = _encrypt(cipher, _CHECK_PLAINTEXT, _CHECK_AAD)
                document = {"format": FORMAT, "cipher": "AES-256-GCM", "check": check}
                document["environments"] = {}
            else:
                self._check_key(cipher, document)
            entries = document["environments"].setdefault(environment, {})
            if value is None:
                if name not in entries:
                    raise not_found(name, f"the local store ({environment})")
                del entries[name]
                if not entries:
                    del document["environments"][environment]
            else:
                entries[name] = _encrypt(cipher, value.encode("utf-8"), _aad(environment, name))
            _write_private(self.path, json.dumps(document, indent=2, sort_keys=True).encode())

    def _read(self) -> dict[str, Any] | None:
        try:
            document: dict[str, Any] = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SecretsError(
                f"cannot read the secret store {self.path}: {type(exc).__name__}; restore it "
                "from a backup or remove it and set the secrets again"
            ) from None
        if document.get("format") != FORMAT:
            raise SecretsError(f"{self.path} is not a zerodown secret store ({FORMAT})")
        return document

    def _key(self, *, create: bool) -> bytes:
        text = self._environ.get(KEY_ENV)
        if text:
            return _decode_key(text, KEY_ENV)
        try:
            info = self.key_file.stat()
        except FileNotFoundError:
            if not create:
                raise SecretsError(
                    f"no key for {self.path}: set {KEY_ENV} or restore the key file "
                    f"{self.key_file} it was written with"
                ) from None
            self.key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_private(self.key_file, new_key().encode() + b"\n", exclusive=True)
            info = self.key_file.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretsError(
                f"the key file {self.key_file} may be read by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}): run `chmod 600 {self.key_file}`"
            )
        return _decode_key(self.key_file.read_text(), str(self.key_file))

    def _check_key(self, cipher: AESGCM, document: dict[str, Any]) -> None:
        try:
            self._decrypt(cipher, document["check"], _CHECK_AAD)
        except SecretsError:
            source = KEY_ENV if self._environ.get(KEY_ENV) else f"the key file {self.key_file}"
            raise SecretsError(
                f"the key from {source} does not open {self.path}: it was written with another "
                "key; use that key (or remove the store and set the secrets again)"
            ) from None

    def _decrypt(self, cipher: AESGCM, token: str, aad: bytes) -> bytes:
        try:
            raw = base64.b64decode(token)
            return cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)
        except (InvalidTag, binascii.Error, ValueError):
            raise SecretsError(
                f"a value in {self.path} does not decrypt: the file was changed or the key is "
                "wrong; set the secret again"
            ) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise writers (two `zerodown secrets set` at once) with an advisory lock."""
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _aad(environment: str, name: str) -> bytes:
    return f"{environment}/{name}".encode()


def _encrypt(cipher: AESGCM, plaintext: bytes, aad: bytes) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    return base64.b64encode(nonce + cipher.encrypt(nonce, plaintext, aad)).decode("ascii")
