"""build stage: the revision's artifact, built once per commit and content-hashed.

The build command runs in the run's checkout; its `output` (a directory or a file) is packed
into a deterministic tar.gz (sorted names, zeroed times and owners), so the same content gives
the same sha256 digest. A later run of the same commit reuses the archive without building.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from zerodown.errors import PipelineError

ARCHIVE = "artifact.tar.gz"
META = "artifact.json"


@dataclass(frozen=True)
class BuiltArtifact:
    """A built archive and its content digest."""

    archive: Path
    digest: str  # "sha256:<hex>"
    size: int
    cached: bool


def build_dir(state_dir: Path, sha: str, job: str) -> Path:
    """Where the artifact of `job` at commit `sha` is kept."""
    return state_dir / "pipeline" / "builds" / sha / job


def cached_build(state_dir: Path, sha: str, job: str) -> BuiltArtifact | None:
    """The archive an earlier run built for this commit, if complete."""
    folder = build_dir(state_dir, sha, job)
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    archive = folder / ARCHIVE
    if not archive.is_file():
        return None
    return BuiltArtifact(archive, str(meta["digest"]), archive.stat().st_size, cached=True)


async def pack_output(output: Path, state_dir: Path, sha: str, job: str) -> BuiltArtifact:
    """Pack `output` into the commit's archive; raise `PipelineError` if it does not exist."""
    return await asyncio.to_thread(_pack, output, build_dir(state_dir, sha, job))


def _pack(output: Path, folder: Path) -> BuiltArtifact:
    if not output.exists():
        raise PipelineError(f"the build produced no {output.name} (expected at {output})")
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / (ARCHIVE + ".partial")
    members = [output] if output.is_file() else sorted(output.rglob("*"))
    with (
        open(partial, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in members:
            name = path.name if output.is_file() else str(path.relative_to(output))
            info = tar.gettarinfo(str(path), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.pax_headers = {}
            if info.isfile():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    digest = "sha256:" + _sha256(partial)
    archive = folder / ARCHIVE
    os.replace(partial, archive)
    (folder / META).write_text(json.dumps({"digest": digest}))
    return BuiltArtifact(archive, digest, archive.stat().st_size, cached=False)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
