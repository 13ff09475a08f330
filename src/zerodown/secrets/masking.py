"""Masking: every known secret value (and its common encodings) becomes `****` wherever text leaves.

One process-wide `SecretMasker` (`global_masker()`) learns the values when `SecretsEnvSource`
resolves them; the deployment's event recorder, the CLI's consoles (`masked_console`), logging
(`install_log_masking`) and pipeline logs all pass text through it. The instance supervisor, a
separate process, masks the app's output with a `StreamMasker` built from its own environment.

This module stays light (no rich, no cryptography at import): the supervisor imports it.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import quote, quote_plus

if TYPE_CHECKING:
    from rich.console import Console

MASK = "****"
# Shorter values are ordinary words and numbers ("true", "80"): masking them would garble every
# message while hiding nothing an attacker could not guess.
MIN_MASKED_LENGTH = 4
# Set by `SecretsEnvSource` in an instance's environment: the comma-separated names of the
# variables whose values the supervisor masks in the app's log.
SECRET_NAMES_ENV = "ZERODOWN_SECRET_NAMES"


def encodings(value: str) -> set[str]:
    """`value` and the forms it commonly takes in logs: URL-quoted, base64, JSON-escaped."""
    raw = value.encode("utf-8")
    forms = {
        value,
        quote(value, safe=""),
        quote_plus(value, safe=""),
        quote(value),  # a path segment keeps its '/'
        base64.b64encode(raw).decode("ascii"),
        base64.urlsafe_b64encode(raw).decode("ascii"),
        json.dumps(value)[1:-1],
    }
    forms |= {form.rstrip("=") for form in forms if form.endswith("=")}
    return {form for form in forms if len(form) >= MIN_MASKED_LENGTH}


def _pattern(needles: Iterable[str]) -> re.Pattern[str] | None:
    # Longest first: where one secret contains another, the whole of it is masked.
    ordered = sorted(set(needles), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


class SecretMasker:
    """Replaces every registered secret value (and its encodings) in text with `****`.

    Thread-safe: logging filters call it from any thread. Its repr never shows a value.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._needles: set[str] = set()
        self._regex: re.Pattern[str] | None = None
        self.add(*values)

    def add(self, *values: str) -> None:
        """Learn more secret values; too-short ones are ignored (see MIN_MASKED_LENGTH)."""
        fresh = {v for v in values if len(v) >= MIN_MASKED_LENGTH} - self._values
        if not fresh:
            return
        with self._lock:
            self._values |= fresh
            for value in fresh:
                self._needles |= encodings(value)
                # multi-line values (PEM keys) also leak line by line
                self._needles |= {line for line in value.splitlines() if len(line.strip()) >= 8}
            self._regex = _pattern(self._needles)

    def mask(self, text: str) -> str:
        """`text` with every known secret replaced by `****`."""
        regex = self._regex
        if regex is None or not text:
            return text
        return regex.sub(MASK, text)

    def needles(self) -> frozenset[str]:
        """Every string this masker replaces (values and encodings): for stream maskers."""
        with self._lock:
            return frozenset(self._needles)

    @property
    def count(self) -> int:
        """How many secret values this masker knows."""
        return len(self._values)

    def __repr__(self) -> str:
        return f"SecretMasker({len(self._values)} values)"


_GLOBAL = SecretMasker()


def global_masker() -> SecretMasker:
    """The process-wide masker: CLI output, logs, events and pipeline logs all pass through it."""
    return _GLOBAL


class StreamMasker:
    """Masks a byte stream chunk by chunk, even when a secret is split between two chunks.

    `feed` holds back only the tail that could still grow into a secret (a prefix of one), so
    line-oriented output passes through at once; `flush` releases the rest at the end.
    """

    def __init__(self, needles: Iterable[str]) -> None:
        ordered = sorted({n.encode("utf-8") for n in needles if n}, key=len, reverse=True)
        self._needles = ordered
        self._regex = re.compile(b"|".join(map(re.escape, ordered))) if ordered else None
        self._longest = len(ordered[0]) if ordered else 0
        self._held = b""

    @classmethod
    def for_values(cls, values: Iterable[str]) -> StreamMasker:
        """A stream masker for these secret values and their encodings."""
        masker = SecretMasker(values)
        return cls(masker.needles())

    def feed(self, chunk: bytes) -> bytes:
        """The masked bytes that are safe to write now."""
        if self._regex is None:
            return chunk
        data = self._held + chunk
        cut = len(data) - self._partial_suffix(data)
        out: list[bytes] = []
        position = 0
        for match in self._regex.finditer(data):
            if match.end() > cut:  # reaches into the tail that may still grow: decide later
                cut = min(cut, match.start())
                break
            out += (data[position : match.start()], MASK.encode())
            position = match.end()
        out.append(data[position:cut])
        self._held = data[cut:]
        return b"".join(out)

    def flush(self) -> bytes:
        """Everything still held back, masked (the stream ended)."""
        held, self._held = self._held, b""
        if self._regex is None:
            return held
        return self._regex.sub(MASK.encode(), held)

    def _partial_suffix(self, data: bytes) -> int:
        """Length of the longest tail of `data` that is a proper prefix of some secret."""
        for size in range(min(self._longest - 1, len(data)), 0, -1):
            tail = data[-size:]
            if any(needle.startswith(tail) for needle in self._needles):
                return size
        return 0


class MaskingLogFilter(logging.Filter):
    """A `logging.Filter` that masks the message, its arguments and any traceback of a record."""

    def __init__(self, masker: SecretMasker | None = None) -> None:
        super().__init__()
        self.masker = masker if masker is not None else global_masker()

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place (always keeps it)."""
        if self.masker.count == 0:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed logging call: logging reports it when it formats
            return True
        record.msg = self.masker.mask(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.masker.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.masker.mask(record.stack_info)
        return True


_FACTORY_INSTALLED = False


def install_log_masking(masker: SecretMasker | None = None) -> None:
    """Mask every log record of this process as it is created (idempotent).

    A record factory, not a handler filter: records propagated from any logger, handlers added
    later and logging's last-resort stderr handler all see the masked text.
    """
    global _FACTORY_INSTALLED
    if _FACTORY_INSTALLED:
        return
    log_filter = MaskingLogFilter(masker)
    make_record = logging.getLogRecordFactory()

    def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        log_filter.filter(record)
        return record

    logging.setLogRecordFactory(masked_record)
    _FACTORY_INSTALLED = True


class MaskedStream:
    """A text stream that masks what is written before passing it to the real one.

    The real stream is looked up on every write (`sys.stdout` by default), so a stream swapped
    later (pytest's capture, Typer's test runner) still receives the output.
    """

    def __init__(
        self,
        target: Callable[[], IO[str]] = lambda: sys.stdout,
        masker: SecretMasker | None = None,
    ) -> None:
        self._target = target
        self.masker = masker if masker is not None else global_masker()

    def write(self, text: str) -> int:
        """Write `text` masked; returns the length of `text` as the caller knows it."""
        self._target().write(self.masker.mask(text))
        return len(text)

    def flush(self) -> None:
        """Flush the real stream."""
        self._target().flush()

    def isatty(self) -> bool:
        """Whether the real stream is a terminal (rich decides on colours with this)."""
        return self._target().isatty()

    def fileno(self) -> int:
        """The real stream's descriptor."""
        return self._target().fileno()

    @property
    def encoding(self) -> str:
        """The real stream's encoding."""
        return getattr(self._target(), "encoding", None) or "utf-8"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


def masked_console(
    *, stderr: bool = False, masker: SecretMasker | None = None, **options: Any
) -> Console:
    """A rich `Console` whose output passes through the masker: a drop-in for `Console(...)`."""
    from rich.console import Console

    target: Callable[[], IO[str]] = (lambda: sys.stderr) if stderr else (lambda: sys.stdout)
    # MaskedStream implements the part of IO[str] that rich uses (write, flush, isatty, fileno).
    stream = cast("IO[str]", MaskedStream(target, masker))
    return Console(file=stream, stderr=stderr, **options)
