"""What the ssh runtime copies to hosts: zerodown's own package and release tarballs."""

from __future__ import annotations

import io
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from zerodown.runtimes.ssh import bundle as bundle_module
from zerodown.runtimes.ssh.bundle import pack_release, release_name, zerodown_bundle
from zerodown.runtimes.ssh.remote import _check_member, extract_release


def test_the_bundle_holds_the_host_side_and_is_built_once_under_concurrent_calls() -> None:
    """Eight threads asking at once (hosts prepared in parallel) get one bundle, one file."""
    bundle_module._build_bundle.cache_clear()
    built = zerodown_bundle()
    built.path.unlink()
    bundle_module._build_bundle.cache_clear()
    with ThreadPoolExecutor(8) as pool:
        bundles = list(pool.map(lambda _: zerodown_bundle(), range(8)))
    assert {b.name for b in bundles} == {built.name}  # same sources, same digest
    names = zipfile.ZipFile(built.path).namelist()
    assert "zerodown/runtimes/ssh/remote.py" in names
    assert "zerodown/runtimes/local/supervisor.py" in names
    assert not any("__pycache__" in name for name in names)


def test_a_release_is_named_by_service_revision_and_origin() -> None:
    """Unsafe characters become '_'; another source dir of the same revision is another name."""
    first = release_name("web api", "v1/2", "/srv/a")
    assert first.startswith("web_api-v1_2-")
    assert release_name("web api", "v1/2", "/srv/b") != first


def test_a_packed_release_extracts_to_the_same_files(tmp_path: Path) -> None:
    """pack_release + extract_release round-trip a directory; the archive is removed."""
    source = tmp_path / "src"
    (source / "pkg").mkdir(parents=True)
    (source / "app.py").write_text("print('hi')\n")
    (source / "pkg" / "data.txt").write_text("x")
    archive = pack_release(source)
    target = tmp_path / "releases" / "web-r1"
    extract_release(archive, target)
    assert (target / "app.py").read_text() == "print('hi')\n"
    assert (target / "pkg" / "data.txt").read_text() == "x"
    assert not archive.exists()


@pytest.mark.parametrize(
    ("name", "kind", "link"),
    [("../escape.txt", tarfile.REGTYPE, ""), ("link", tarfile.SYMTYPE, "/etc/passwd")],
)
def test_a_member_out_of_the_release_is_refused(
    tmp_path: Path, name: str, kind: bytes, link: str
) -> None:
    """A path or a link leading out of the release dir is refused (also on Python < 3.11.4)."""
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = link
    with pytest.raises(tarfile.TarError, match="refusing"):
        _check_member(member, tmp_path)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(member, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(tarfile.TarError):
        extract_release(archive, tmp_path / "releases" / "bad")
