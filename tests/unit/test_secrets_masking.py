"""Masking: secret values and their encodings become `****` in text, streams, logs and consoles."""

from __future__ import annotations

import base64
import io
import logging
from urllib.parse import quote

import pytest

from zerodown.secrets import masking
from zerodown.secrets.masking import (
    MASK,
    MaskingLogFilter,
    SecretMasker,
    StreamMasker,
    masked_console,
)

SECRET = "p@ss/w0rd+prod"


def test_values_and_their_encodings_are_masked() -> None:
    masker = SecretMasker([SECRET])
    encoded = base64.b64encode(SECRET.encode()).decode()
    text = f"a {SECRET} b {quote(SECRET, safe='')} c {encoded} d"
    assert masker.mask(text) == f"a {MASK} b {MASK} c {MASK} d"
    assert SECRET not in repr(masker)


def test_the_longest_secret_wins_and_short_values_are_left_alone() -> None:
    masker = SecretMasker(["token", "token-and-more", "ab"])
    assert masker.mask("x token-and-more y token z ab") == f"x {MASK} y {MASK} z ab"
    assert masker.count == 2


def test_a_masker_learns_values_added_later() -> None:
    masker = SecretMasker()
    assert masker.mask(SECRET) == SECRET
    masker.add(SECRET)
    assert masker.mask(SECRET) == MASK


def test_a_stream_masker_catches_a_secret_split_across_chunks() -> None:
    text = f"line one\npassword={SECRET}\nend {SECRET}".encode()
    for size in (1, 2, 3, 5, 7, 64):
        masker = StreamMasker.for_values([SECRET])
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        out = b"".join(masker.feed(chunk) for chunk in chunks) + masker.flush()
        assert out == b"line one\npassword=****\nend ****", size


def test_a_stream_masker_passes_whole_lines_at_once() -> None:
    masker = StreamMasker.for_values([SECRET])
    assert masker.feed(b"listening on :8000\n") == b"listening on :8000\n"
    assert StreamMasker.for_values([]).feed(b"x") == b"x"


def test_the_log_filter_masks_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskingLogFilter(SecretMasker([SECRET])))
    logger = logging.getLogger("test_secrets_masking")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("connecting with %s", SECRET)
        try:
            raise ValueError(f"bad password {SECRET}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert SECRET not in output
    assert output.count(MASK) == 2


def test_installed_log_masking_covers_records_of_any_logger(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(masking, "_FACTORY_INSTALLED", False)  # restored after the test
    try:
        masking.install_log_masking(SecretMasker([SECRET]))
        with caplog.at_level(logging.INFO):
            logging.getLogger("zerodown.some.module").info("url %s", f"https://u:{SECRET}@h/")
    finally:
        logging.setLogRecordFactory(factory)
    assert caplog.messages == [f"url https://u:{MASK}@h/"]


def test_the_masked_console_masks_what_it_prints(capsys: pytest.CaptureFixture[str]) -> None:
    console = masked_console(masker=SecretMasker([SECRET]), highlight=False)
    console.print(f"DATABASE_URL=postgres://app:{SECRET}@db/app", soft_wrap=True)
    out = capsys.readouterr().out
    assert SECRET not in out
    assert MASK in out
