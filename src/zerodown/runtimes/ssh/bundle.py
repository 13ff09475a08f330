"""What the ssh runtime copies to a host: zerodown itself (once per host and version) and the
release directories (once per host and revision), each as one archive.

zerodown goes as a zip of its own package, unpacked on the host into a directory the host's
python3 imports it from (`PYTHONPATH=<root>/lib/<name>`); its name carries a digest of its
content, so a host holding the same code is never sent it twice and a changed zerodown never
runs the old one there.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import zerodown

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Bundle:
    """zerodown's package as a zip file here, and the name (with a digest) it has on a host."""

    name: str
    path: Path


_building = threading.Lock()


def zerodown_bundle() -> Bundle:
    """This zerodown's own package as a zip (sources only), built once per process."""
    with _building:  # hosts are prepared at once, each from a worker thread
        return _build_bundle()


@cache
def _build_bundle() -> Bundle:
    package = Path(zerodown.__file__).resolve().parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(package.rglob("*.py")):
            relative = path.relative_to(package.parent)
            if "__pycache__" in relative.parts:
                continue
            info = zipfile.ZipInfo(str(relative), date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())  # fixed stamps: same code, same digest
    data = buffer.getvalue()
    name = f"zerodown-{zerodown.__version__}-{hashlib.sha256(data).hexdigest()[:16]}"
    path = Path(tempfile.gettempdir()) / f"{name}.zip"
    if not path.exists():  # same name, same bytes: another process may have written it already
        fd, partial = tempfile.mkstemp(prefix=f"{name}.", suffix=".partial", dir=path.parent)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(partial, path)
    return Bundle(name=name, path=path)


def release_name(service: str, revision: str, workdir: str) -> str:
    """The directory name a release gets on every host: its service, revision and origin."""
    origin = hashlib.sha256(str(Path(workdir).resolve()).encode()).hexdigest()[:10]
    return f"{_SAFE.sub('_', service)}-{_SAFE.sub('_', revision)}-{origin}"


def pack_release(workdir: Path) -> Path:
    """The release directory `workdir` as a gzipped tarball in a temporary file (caller deletes)."""
    if not workdir.is_dir():
        raise FileNotFoundError(workdir)
    handle = tempfile.NamedTemporaryFile(prefix="zd-release-", suffix=".tar.gz", delete=False)  # noqa: SIM115
    handle.close()
    with tarfile.open(handle.name, "w:gz") as tar:
        for path in sorted(workdir.iterdir()):
            tar.add(path, arcname=path.name)
    return Path(handle.name)
