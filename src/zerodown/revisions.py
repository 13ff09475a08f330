"""Revisions from git: resolve a name to a sha, export that commit's tree, build it once.

A release is `<state_dir>/releases/<service>/<sha>/`: the files of the service's path at that
commit (never the user's uncommitted changes, and without touching their work tree or index),
plus whatever the build made there. An export appears under its final name only when complete
(temp dir + rename); a successful build leaves `.zerodown-built`, so later deploys of the same sha
reuse it, and a failed one is retried from a fresh export. Prepares of one sha are serialised
across processes by an flock.

Builds share dependency caches under `<state_dir>/cache/` (pip, npm, yarn, uv), so a new release
downloads nothing an earlier one fetched. Releases are pruned after each successful deployment
(`ReleaseRetention`): the live and rollback-target revisions of every environment, those of any
instance or running deployment, and the service's `keep_releases` last used ones stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from zerodown.config.model import ServiceConfig
from zerodown.domain.events import DeploymentEvent, EventKind
from zerodown.errors import BuildFailed, ZerodownError
from zerodown.shell import ShellResult, run_shell

if TYPE_CHECKING:
    from zerodown.config import LoadedConfig
    from zerodown.images.build import PublishedImage
    from zerodown.runtimes.base import Runtime
    from zerodown.store.base import HistoryStore

log = logging.getLogger(__name__)

BUILT_MARKER = ".zerodown-built"
BUILD_LOG = ".zerodown-build.log"
# `<service_dir>/.<sha>.used`, touched by every prepare: its mtime is the release's last use.
USED_STAMP = ".{sha}.used"
CACHE_DIR = "cache"
# Where each tool keeps what it downloads: shared by the builds of every release (unless the
# user chose a cache). Not GRADLE_USER_HOME: it also holds the user's gradle.properties, and
# ~/.gradle is shared across builds already.
_CACHE_VARIABLES = {
    "PIP_CACHE_DIR": "pip",
    "npm_config_cache": "npm",
    "YARN_CACHE_FOLDER": "yarn",
    "UV_CACHE_DIR": "uv",
}
_BUILDING_MARKER = ".zerodown-building"  # present while a build runs, and after it failed
_SHA = re.compile(r"^[0-9a-f]{40}$")
_GIT_TIMEOUT = 300.0  # exporting a big tree is slow, but a git that hangs must not hang a deploy
_LOCK_POLL = 0.1
_LOCK_SLACK = 300.0  # beyond the build timeout: time another process may take to export
_TAIL = 20
# Git must neither prompt for credentials nor translate the messages we pass on.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


@dataclass(frozen=True)
class Release:
    """A revision of a service ready to run from `path`.

    `built`: its build command has succeeded (now or before); `cached`: nothing had to be done,
    both export and build were reused from an earlier prepare.
    """

    service: str
    sha: str
    path: Path
    message: str
    commit_time: float | None
    built: bool
    cached: bool
    image: str | None = None  # its image, pinned by manifest digest, when one was built


async def resolve_revision(repo: Path, revision: str) -> str:
    """The full 40-hex sha of a sha (full or short), a branch or a tag in `repo`."""
    if not revision or revision.startswith("-") or any(c.isspace() for c in revision):
        raise BuildFailed(f"revision {revision!r} is not a git sha, branch or tag")
    code, out, _ = await _git(repo, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    if code == 0:
        return out.decode().strip()
    await _check_repository(repo)
    raise BuildFailed(f"unknown revision {revision!r} in {repo}: use a sha, a branch or a tag")


async def commit_info(repo: Path, sha: str) -> tuple[str, float]:
    """The subject line and the commit time (unix seconds) of commit `sha`."""
    code, out, err = await _git(repo, "log", "-1", "--no-show-signature", "--format=%ct %s", sha)
    if code != 0:
        raise BuildFailed(f"cannot read commit {sha} in {repo}: {_first_line(err)}")
    stamp, _, subject = out.decode("utf-8", "replace").strip().partition(" ")
    return subject, float(stamp)


async def prepare_release(
    service_name: str,
    service: ServiceConfig,
    *,
    root: Path,
    state_dir: Path,
    revision: str,
    on_line: Callable[[str], None] | None = None,
) -> Release:
    """Make `revision` of a service ready to run: resolve, export and build it (each only once).

    Without `service.source` the service runs from `root / service.workdir` as it is, `revision`
    is only a label, and the build (if any) runs every time. Raises BuildFailed.
    """
    service_dir = state_dir / "releases" / service_name
    service_dir.mkdir(parents=True, exist_ok=True)
    lock_wait = service.build_timeout + _LOCK_SLACK
    if service.source is None:
        workdir = root / service.workdir
        if not workdir.is_dir():
            raise BuildFailed(f"workdir {workdir} of service {service_name} is not a directory")
        async with _locked(service_dir / ".workdir.lock", lock_wait, on_line):
            if build_command(service):
                await _build(
                    service_name,
                    service,
                    workdir,
                    service_dir / ".workdir-build.log",
                    revision,
                    on_line,
                    cache_root=state_dir / CACHE_DIR,
                )
        built = build_command(service) is not None
        if service.build is not None and service.build.image is not None:
            raise BuildFailed(
                f"service {service_name}: build.image needs `source:` (images are built per git "
                "revision and tagged with its sha)"
            )
        return Release(service_name, revision, workdir, "", None, built, False)

    repo = root / service.source.repo
    subdir = _service_path(service.source.path)
    sha = await resolve_revision(repo, revision)
    message, commit_time = await commit_info(repo, sha)
    release_dir = service_dir / sha
    async with _locked(service_dir / f".{sha}.lock", lock_wait, on_line):
        cached = True
        if (release_dir / _BUILDING_MARKER).exists():
            # An earlier build failed or was cut off half-way: start again from a clean tree.
            # (An export never built is kept: instances of a build-less config may run from it.)
            await asyncio.to_thread(shutil.rmtree, release_dir)
        if not release_dir.is_dir():
            cached = False
            await _export(repo, sha, subdir, service_dir, release_dir)
        if build_command(service) and not (release_dir / BUILT_MARKER).exists():
            cached = False
            (release_dir / _BUILDING_MARKER).touch()
            await _build(
                service_name,
                service,
                release_dir,
                release_dir / BUILD_LOG,
                sha,
                on_line,
                cache_root=state_dir / CACHE_DIR,
            )
            (release_dir / BUILT_MARKER).write_text(f"{time.time():.3f}\n")
            (release_dir / _BUILDING_MARKER).unlink()
        image = None
        if service.build is not None and service.build.image is not None:
            published = await _publish_image(service_name, service, repo, release_dir, sha, on_line)
            image = published.reference
            cached = cached and published.cached
        (service_dir / USED_STAMP.format(sha=sha)).touch()  # retention keeps the last used
    return Release(
        service_name,
        sha,
        release_dir,
        message,
        commit_time,
        build_command(service) is not None,
        cached,
        image,
    )


async def _publish_image(
    service_name: str,
    service: ServiceConfig,
    repo: Path,
    release_dir: Path,
    sha: str,
    on_line: Callable[[str], None] | None,
) -> PublishedImage:
    """The revision's image, pinned by digest: pushed before, or built and pushed now. With the
    registry unreachable, the digest recorded when this release was published (a rollback
    target still rolls back; a digest never changes)."""
    from zerodown.errors import ImageRegistryError
    from zerodown.images.build import publish_revision, recorded_image, version_tags_of

    assert service.build is not None and service.build.image is not None
    _, tags, _ = await _git(repo, "tag", "--points-at", sha)
    code, remote, _ = await _git(repo, "remote", "get-url", "origin")
    if code != 0:  # no remote: the repository's own directory names the source
        _, remote, _ = await _git(repo, "rev-parse", "--show-toplevel")
    source = remote.decode().strip() or None
    try:
        return await publish_revision(
            service_name,
            service.build.image,
            release_dir=release_dir,
            sha=sha,
            version_tags=version_tags_of(tags.decode().split()),
            source=source,
            on_line=on_line,
        )
    except ImageRegistryError as exc:
        recorded = await asyncio.to_thread(recorded_image, release_dir)
        if recorded is None or sha not in recorded.tags:
            raise
        if on_line is not None:
            on_line(f"{exc}; using the digest recorded with this release: {recorded.reference}")
        return recorded


@dataclass(frozen=True)
class StoredRelease:
    """A release directory on disk and when a deployment last prepared it."""

    service: str
    sha: str
    path: Path
    last_used: float


def stored_releases(state_dir: Path, service_name: str) -> list[StoredRelease]:
    """The service's exported releases (`<sha>/` dirs), newest use first."""
    service_dir = state_dir / "releases" / service_name
    if not service_dir.is_dir():
        return []
    found = []
    for path in service_dir.iterdir():
        if not _SHA.match(path.name) or not path.is_dir():
            continue
        stamp = service_dir / USED_STAMP.format(sha=path.name)
        try:
            last_used = (stamp if stamp.exists() else path).stat().st_mtime
        except FileNotFoundError:
            continue  # deleted meanwhile
        found.append(StoredRelease(service_name, path.name, path, last_used))
    return sorted(found, key=lambda r: r.last_used, reverse=True)


def plan_release_prune(
    releases: Sequence[StoredRelease], *, protected: Iterable[str], keep_last: int
) -> list[StoredRelease]:
    """The releases to delete: all but the protected ones and the `keep_last` last used."""
    newest = sorted(releases, key=lambda r: r.last_used, reverse=True)
    keep = set(protected) | {r.sha for r in newest[:keep_last]}
    return [r for r in newest if r.sha not in keep]


async def prune_releases(
    state_dir: Path,
    service_name: str,
    *,
    protected: Iterable[str],
    keep_last: int,
    dry_run: bool = False,
) -> list[StoredRelease]:
    """Delete the releases `plan_release_prune` names; return those deleted (or, dry, doomed).

    A release being prepared right now (its flock is held) is skipped; a deleted one vanishes
    in one rename, so nobody sees it half-deleted.
    """
    releases = await asyncio.to_thread(stored_releases, state_dir, service_name)
    doomed = plan_release_prune(releases, protected=protected, keep_last=keep_last)
    if dry_run:
        return doomed
    deleted = []
    for release in doomed:
        if await asyncio.to_thread(_delete_release, release):
            deleted.append(release)
    return deleted


def _delete_release(release: StoredRelease) -> bool:
    """Delete one release unless a prepare holds its lock; False when it was skipped."""
    with (release.path.parent / f".{release.sha}.lock").open("ab") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a deployment is preparing it: in use
        doomed = release.path.with_name(f".{release.sha}.deleting-{os.getpid()}")
        try:
            release.path.rename(doomed)
        except FileNotFoundError:
            return False
    shutil.rmtree(doomed, ignore_errors=True)
    (release.path.parent / USED_STAMP.format(sha=release.sha)).unlink(missing_ok=True)
    return True


async def protected_releases(
    service_name: str, environments: Iterable[str], store: HistoryStore, runtime: Runtime
) -> set[str]:
    """Revisions of the service retention never deletes: live and rollback target in each
    environment, those of running deployments, and those any instance runs (or ran) from."""
    from zerodown.pipeline.stages.deploy import protected_revisions  # the artifacts' same rule

    keep = await protected_revisions(store, [service_name], list(environments))
    keep.update(info.revision for info in await runtime.list(service_name))
    return keep


class ReleaseRetention:
    """A `DeploymentObserver`: after each successful deployment, prune that service's releases.

    Housekeeping: a failure is logged, never raised into the deployment.
    """

    def __init__(self, loaded: LoadedConfig, store: HistoryStore, runtime: Runtime) -> None:
        self.loaded = loaded
        self.store = store
        self.runtime = runtime

    async def on_event(self, event: DeploymentEvent) -> None:
        """Prune on the STATE event that says the deployment succeeded."""
        if event.kind is not EventKind.STATE or event.data.get("to") != "succeeded":
            return
        try:
            record = await self.store.get_deployment(event.deployment_id)
            await self.prune(record.service)
        except (OSError, ZerodownError) as exc:
            log.warning("could not prune old releases: %s", exc)

    async def prune(self, service_name: str, *, dry_run: bool = False) -> list[StoredRelease]:
        """Apply the retention policy to one service's releases."""
        service = self.loaded.config.services.get(service_name)
        if service is None or service.source is None:
            return []  # a service run from its workdir has no releases
        keep = await protected_releases(
            service_name, self.loaded.config.environments, self.store, self.runtime
        )
        deleted = await prune_releases(
            self.loaded.state_dir,
            service_name,
            protected=keep,
            keep_last=service.keep_releases,
            dry_run=dry_run,
        )
        for release in deleted:
            log.info("deleted release %s of %s", release.sha[:12], service_name)
        return deleted


def _service_path(path: str) -> str:
    """The service's directory inside the repository, normalised; "" for the repository root."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise BuildFailed(f"source.path {path!r} must be a directory inside the repository")
    return "" if str(pure) == "." else str(pure)


async def _export(repo: Path, sha: str, subdir: str, service_dir: Path, release_dir: Path) -> None:
    """Extract the tree `<sha>:<subdir>` into `release_dir`: in a temp dir, then one rename."""
    tmp = await asyncio.to_thread(_fresh_temp_dir, service_dir, sha)
    try:
        # Archiving the tree `<sha>:<path>` yields paths relative to the service's directory;
        # git reads objects only, so the user's work tree and index are never touched.
        treeish = f"{sha}:{subdir}" if subdir else sha
        read_end, write_end = os.pipe()
        try:
            git = await asyncio.create_subprocess_exec(
                "git",
                "-C",
                str(repo),
                "archive",
                "--format=tar",
                treeish,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_end,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **_GIT_ENV},
            )
            tar = await asyncio.create_subprocess_exec(
                "tar",
                "-x",
                "-f",
                "-",
                "-C",
                str(tmp),
                stdin=read_end,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        finally:
            os.close(read_end)
            os.close(write_end)
        try:
            (_, git_err), (_, tar_err) = await asyncio.wait_for(
                asyncio.gather(git.communicate(), tar.communicate()), _GIT_TIMEOUT
            )
        except BaseException as exc:
            for proc in (git, tar):  # timed out or cancelled: they must not write on
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if isinstance(exc, TimeoutError):
                raise BuildFailed(
                    f"exporting {treeish} from {repo} took over {_GIT_TIMEOUT:g} s"
                ) from None
            raise
        if git.returncode != 0:
            if subdir and b"not a valid object name" in git_err:
                raise BuildFailed(f"source.path {subdir!r} does not exist at commit {sha[:12]}")
            raise BuildFailed(f"git archive {treeish} failed in {repo}: {_first_line(git_err)}")
        if tar.returncode != 0:
            raise BuildFailed(f"extracting {treeish} into {tmp} failed: {_first_line(tar_err)}")
        await asyncio.to_thread(tmp.rename, release_dir)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, tmp, True)
        raise


def _fresh_temp_dir(service_dir: Path, sha: str) -> Path:
    """A new temp dir for exporting `sha`, after removing those a dead process left behind."""
    for stale in service_dir.glob(f".{sha}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{sha}.tmp-", dir=service_dir))


async def _build(
    service_name: str,
    service: ServiceConfig,
    cwd: Path,
    log_path: Path,
    label: str,
    on_line: Callable[[str], None] | None,
    *,
    cache_root: Path,
) -> None:
    """Run the build command in `cwd`, its output to `log_path` and `on_line`; BuildFailed."""
    command = build_command(service)
    assert command is not None
    with log_path.open("w", encoding="utf-8") as log:
        log_ok = True

        def record(line: str) -> None:
            nonlocal log_ok
            if log_ok:
                try:
                    log.write(line + "\n")
                    log.flush()  # a user tailing the log sees a hanging build where it hangs
                except OSError:
                    log_ok = False  # a full disk must not turn into a hanging build
            if on_line is not None:
                on_line(line)

        env = {
            **build_cache_env(cache_root),
            **os.environ,  # a cache the user chose wins
            "ZERODOWN_SERVICE": service_name,
            "ZERODOWN_REVISION": label,
        }
        try:
            result = await run_shell(
                command,
                cwd=cwd,
                env=env,
                timeout=service.build_timeout,
                on_line=record,
                tail_lines=_TAIL,
            )
        except OSError as exc:
            raise BuildFailed(f"build of {service_name} could not start in {cwd}: {exc}") from exc
    if not result.ok:
        raise BuildFailed(_build_failure(service_name, label, result, log_path))


def build_command(service: ServiceConfig) -> str | None:
    """The service's build command (`build: make` or `build: {command: make}`), if any."""
    return service.build.command if service.build is not None else None


def build_cache_env(cache_root: Path) -> dict[str, str]:
    """The environment that points each package tool at its shared cache under `cache_root`."""
    return {name: str(cache_root / tool) for name, tool in _CACHE_VARIABLES.items()}


def _build_failure(service: str, label: str, result: ShellResult, log_path: Path) -> str:
    what = f"build of {service} at {label[:12] if _SHA.match(label) else label}"
    if result.timed_out:
        head = f"{what} timed out after {result.seconds:.0f} s"
    else:
        head = f"{what} failed with exit code {result.exit_code}"
    tail = "\n".join(f"  | {line}" for line in result.output_tail) or "  (no output)"
    return f"{head} (full log: {log_path}); last output:\n{tail}"


@contextlib.asynccontextmanager
async def _locked(
    path: Path, wait: float, on_line: Callable[[str], None] | None
) -> AsyncIterator[None]:
    """Hold an exclusive flock on `path`; poll for it so waiting stays cancellable."""
    handle: IO[bytes] = path.open("ab")
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BuildFailed(
                        f"another process has been preparing this release for {wait:.0f} s "
                        f"(lock {path}); try again when it is done"
                    ) from None
                if not told and on_line is not None:
                    on_line(f"waiting for another process preparing this release ({path.name})")
                    told = True
                await asyncio.sleep(_LOCK_POLL)
        yield
    finally:
        handle.close()  # closing the file releases the flock


async def _check_repository(repo: Path) -> None:
    """Raise BuildFailed with a useful sentence when `repo` is not a usable git repository."""
    if not await asyncio.to_thread(repo.is_dir):
        raise BuildFailed(f"source.repo {repo} does not exist")
    code, _, err = await _git(repo, "rev-parse", "--git-dir")
    if code != 0:
        raise BuildFailed(f"{repo} is not a git repository: {_first_line(err)}")


async def _git(repo: Path, *args: str) -> tuple[int, bytes, bytes]:
    """Run one read-only git command in `repo`: (exit code, stdout, stderr)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            "-C",
            str(repo),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **_GIT_ENV},
        )
    except FileNotFoundError as exc:
        raise BuildFailed("git is not installed (needed for services with `source:`)") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), _GIT_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BuildFailed(f"git {args[0]} in {repo} took over {_GIT_TIMEOUT:g} s") from None
    assert proc.returncode is not None
    return proc.returncode, out, err


def _first_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[0] if lines else "(no message)"
