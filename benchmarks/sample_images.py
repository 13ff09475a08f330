"""Sample services for image builds (the image benchmark and tests/integration/test_images_*).

A FastAPI app with its wheels, in a git repository. Nothing reaches PyPI: the app's
dependencies are re-packed as wheels from this interpreter's own installed distributions (the
same Python minor version as Debian bookworm's, 3.11), so the `fastapi` preset installs them
with `pip --no-index --find-links wheels`. `push_synthetic_image` publishes images of any age
straight through a registry's API (retention tests).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import subprocess
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

FASTAPI_APP = """\
import os

from fastapi import FastAPI

app = FastAPI()
VERSION = os.environ.get("APP_VERSION", "{version}")


@app.get("/")
def index() -> dict[str, str]:
    return {{"version": VERSION, "uid": str(os.getuid())}}


@app.get("/health")
def health() -> dict[str, str]:
    return {{"status": "ok"}}
"""


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(names: list[str]) -> list[metadata.Distribution]:
    """The installed distributions `names` need (markers evaluated here, extras left out)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if _key(name) in seen:
            continue
        dist = metadata.distribution(name)
        seen[_key(name)] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(seen.values(), key=lambda d: _key(d.metadata["Name"]))


def repack_wheel(dist: metadata.Distribution, into: Path) -> Path:
    """A wheel of an installed distribution: its files (no bytecode), a fresh RECORD."""
    info = next(f for f in dist.files or [] if str(f).endswith(".dist-info/WHEEL"))
    info_dir = str(info).split("/")[0]
    tags = [
        line.split(":", 1)[1].strip()
        for line in Path(str(dist.locate_file(info))).read_text().splitlines()
        if line.startswith("Tag:")
    ]
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    wheel = into / f"{name}-{dist.version}-{tags[0]}.whl"
    records = io.StringIO()
    writer = csv.writer(records, lineterminator="\n")
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in dist.files or []:
            path = str(item)
            if path.startswith("..") or "__pycache__" in path or path.endswith(".pyc"):
                continue
            if path == f"{info_dir}/RECORD" or path.endswith("/INSTALLER"):
                continue
            data = Path(str(dist.locate_file(item))).read_bytes()
            archive.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            writer.writerow([path, f"sha256={digest.decode()}", len(data)])
        writer.writerow([f"{info_dir}/RECORD", "", ""])
        archive.writestr(f"{info_dir}/RECORD", records.getvalue())
    return wheel


def fastapi_service(into: Path, *, version: str = "v1") -> Path:
    """A FastAPI service dir: main.py, requirements.txt pinned to the wheels in wheels/."""
    into.mkdir(parents=True, exist_ok=True)
    (into / "main.py").write_text(FASTAPI_APP.format(version=version))
    wheels = into / "wheels"
    wheels.mkdir(exist_ok=True)
    lines = []
    for dist in dependency_closure(["fastapi", "uvicorn"]):
        repack_wheel(dist, wheels)
        lines.append(f"{dist.metadata['Name']}=={dist.version}")
    (into / "requirements.txt").write_text("\n".join(lines) + "\n")
    return into


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` (identity set), return its stdout."""
    result = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    """Commit everything in `repo`; the new sha."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def init_repo(repo: Path) -> Path:
    """An empty git repository at `repo`."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    return repo


def push_synthetic_image(
    registry_url: str, repository: str, tags: list[str], *, created: float, payload: bytes
) -> str:
    """Push a one-layer image straight through the registry API; its manifest digest.

    `created` (unix seconds) goes into the image config, so retention sees an image of any age.
    """
    import gzip
    import json
    import tarfile
    import time as _time

    import httpx

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("payload")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    stamp = _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(created))
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": stamp,
            "config": {"Cmd": ["/payload"]},
            "rootfs": {"type": "layers", "diff_ids": [_sha(raw.getvalue())]},
        }
    ).encode()
    with httpx.Client(base_url=registry_url, timeout=30) as http:
        for blob in (layer, config):
            start = http.post(f"/v2/{repository}/blobs/uploads/")
            assert start.status_code == 202, start.text
            location = start.headers["Location"]
            sep = "&" if "?" in location else "?"
            done = http.put(f"{location}{sep}digest={_sha(blob)}", content=blob)
            assert done.status_code == 201, done.text
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": len(config),
                    "digest": _sha(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": len(layer),
                        "digest": _sha(layer),
                    }
                ],
            }
        ).encode()
        for tag in tags:
            put = http.put(
                f"/v2/{repository}/manifests/{tag}",
                content=manifest,
                headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"},
            )
            assert put.status_code == 201, put.text
    return _sha(manifest)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
