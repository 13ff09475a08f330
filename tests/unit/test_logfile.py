"""RotatingLogFile: size-based rotation that keeps the newest output in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from zerodown.runtimes.local.logfile import RotatingLogFile


def _lines(count: int) -> list[bytes]:
    return [f"line {i:04d} ...............\n".encode() for i in range(count)]  # 26 bytes each


def test_rotation_keeps_n_backups_each_under_the_size_and_newest_content_in_order(
    tmp_path: Path,
) -> None:
    log = RotatingLogFile(tmp_path / "output.log", max_bytes=100, backups=2)
    lines = _lines(20)
    for line in lines:
        log.write(line)
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["output.log", "output.log.1", "output.log.2"]
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())
    kept = b"".join(p.read_bytes() for p in reversed(log.files()))  # oldest first
    # Three lines fit in 100 bytes: 20 lines = six full files and one of two; 3 + 3 + 2 are kept.
    assert kept == b"".join(lines[-8:])


def test_chunks_are_split_at_line_boundaries_so_no_file_passes_the_limit(tmp_path: Path) -> None:
    log = RotatingLogFile(tmp_path / "output.log", max_bytes=10, backups=3)
    log.write(b"aaaa\nbbbb\ncccc\n")  # one chunk of three 5-byte lines
    log.close()
    assert (tmp_path / "output.log.1").read_bytes() == b"aaaa\nbbbb\n"
    assert (tmp_path / "output.log").read_bytes() == b"cccc\n"


def test_a_line_longer_than_a_whole_file_is_cut(tmp_path: Path) -> None:
    log = RotatingLogFile(tmp_path / "output.log", max_bytes=10, backups=3)
    log.write(b"small\n")
    log.write(b"x" * 25)
    log.close()
    assert [p.read_bytes() for p in reversed(log.files())] == [
        b"small\n",
        b"x" * 10,
        b"x" * 10,
        b"x" * 5,
    ]


def test_reopening_appends_and_counts_what_is_already_there(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "output.log"
    first = RotatingLogFile(path, max_bytes=20, backups=1)
    first.write(b"0123456789")
    first.close()
    second = RotatingLogFile(path, max_bytes=20, backups=1)
    second.write(b"abcdefghij")  # fits exactly: 20 bytes
    second.write(b"!")  # does not: rotates
    second.close()
    assert path.read_bytes() == b"!"
    assert path.with_name("output.log.1").read_bytes() == b"0123456789abcdefghij"


def test_zero_backups_drops_old_output(tmp_path: Path) -> None:
    log = RotatingLogFile(tmp_path / "output.log", max_bytes=5, backups=0)
    log.write(b"aaaa")
    log.write(b"bbbb")
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["output.log"]
    assert (tmp_path / "output.log").read_bytes() == b"bbbb"


@pytest.mark.parametrize(("max_bytes", "backups"), [(0, 1), (10, -1)])
def test_nonsense_limits_are_refused(tmp_path: Path, max_bytes: int, backups: int) -> None:
    with pytest.raises(ValueError):
        RotatingLogFile(tmp_path / "output.log", max_bytes=max_bytes, backups=backups)
