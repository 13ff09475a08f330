"""How zerodown's containers are named and labelled, and what their inspect data means.

A container carries everything needed to find and understand it after a control-plane restart:
`<prefix>scope` (which zerodown state dir owns it), `service`, `instance`, `revision`,
`environment`, `deployment`, the host port it is reached on and its stop timeout. Secrets go
only into its environment (set at create time), never into a label. A crashed instance that
was removed keeps its container under an `-exited-<time>` name, stopped, so its output can
still be read (`list_exited`); nothing is written to a file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from zerodown.runtimes.base import InstanceInfo, InstanceState

SCOPE = "scope"
SERVICE = "service"
INSTANCE = "instance"
REVISION = "revision"
HOST = "host"
PORT = "port"
STOP_TIMEOUT = "stop-timeout"
EXITED = "exited"  # InstanceInfo label of a kept crashed container (as the local runtime's)
# Labels of ours that only this module reads; everything else is shown to the engine.
_INTERNAL = {SCOPE, HOST, PORT, STOP_TIMEOUT}
# Exit codes of a container stopped on purpose: its app's own 0, or the SIGTERM/SIGKILL of a stop.
STOPPED_EXIT_CODES = (0, 128 + 15, 128 + 9)
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?$")


def scope_of(state_dir: Path) -> str:
    """A short id of the state dir: two zerodown projects on one daemon never see each other."""
    return hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:12]


def container_name(scope: str, instance_id: str) -> str:
    """The name of an instance's container."""
    return f"zerodown-{scope}-{instance_id}"


def exited_name(scope: str, instance_id: str, at: float) -> str:
    """The name a crashed instance's container is kept under once the instance is removed."""
    return f"{container_name(scope, instance_id)}-exited-{int(at * 1000)}"


def is_exited(attrs: Mapping[str, Any], prefix: str, scope: str) -> bool:
    """Whether inspect data `attrs` is of a kept crashed container (not a live instance)."""
    labels = _labels(attrs, prefix)
    name = str(attrs.get("Name", "")).lstrip("/")
    return name != container_name(scope, labels.get(INSTANCE, ""))


def parse_time(text: str | None) -> float | None:
    """Unix time of a Docker timestamp (RFC 3339 with nanoseconds); None for the zero time."""
    found = _RFC3339.match(text or "")
    if found is None or found.group(1).startswith("0001-"):
        return None
    clock, fraction, zone = found.groups()
    fraction = "." + fraction[:6].ljust(6, "0") if fraction else ""
    zone = "+00:00" if zone in (None, "Z") else zone
    try:
        return dt.datetime.fromisoformat(clock + fraction + zone).timestamp()
    except ValueError:
        return None


def state_of(attrs: Mapping[str, Any], stopped: Collection[str] = ()) -> InstanceState:
    """The instance state a container's `State` means; `stopped`: ids of containers stopped on
    purpose (whatever their exit code: an app may exit 1 on SIGTERM)."""
    state = attrs.get("State") or {}
    status = str(state.get("Status", "")).lower()
    if status == "running":
        return InstanceState.RUNNING
    if status == "restarting":
        return InstanceState.RESTARTING
    if status in ("created", "configured", "initialized"):
        return InstanceState.STARTING
    if status in ("removing", "stopping", "paused"):
        return InstanceState.STOPPING
    # exited, stopped, dead: on purpose unless it crashed or the daemon gave up on it
    if state.get("OOMKilled") or state.get("Error") or status == "dead":
        return InstanceState.FAILED
    if attrs.get("Id") in stopped:
        return InstanceState.STOPPED
    if int(state.get("ExitCode") or 0) not in STOPPED_EXIT_CODES:
        return InstanceState.FAILED
    return InstanceState.STOPPED


def info_of(
    attrs: Mapping[str, Any], prefix: str, scope: str, stopped: Collection[str] = ()
) -> InstanceInfo:
    """What inspect data `attrs` of one of our containers says about its instance."""
    labels = _labels(attrs, prefix)
    state = attrs.get("State") or {}
    instance_state = state_of(attrs, stopped)
    running = instance_state in (InstanceState.RUNNING, InstanceState.STARTING)
    shown = {k: v for k, v in labels.items() if k not in _INTERNAL}
    if is_exited(attrs, prefix, scope):
        shown[EXITED] = "true"
    health = (state.get("Health") or {}).get("Status") or None
    if instance_state is InstanceState.FAILED and state.get("OOMKilled"):
        shown["oom_killed"] = "true"
    return InstanceInfo(
        instance_id=labels.get(INSTANCE, ""),
        service=labels.get(SERVICE, ""),
        revision=labels.get(REVISION, ""),
        host=labels.get(HOST, "127.0.0.1"),
        port=int(labels.get(PORT, "0") or 0),
        state=instance_state,
        pid=int(state["Pid"]) if running and state.get("Pid") else None,
        started_at=parse_time(state.get("StartedAt")) if running else None,
        restarts=int(attrs.get("RestartCount") or 0),
        exit_code=None if running else int(state.get("ExitCode") or 0),
        labels=shown,
        health=str(health) if health else None,
        image=str((attrs.get("Config") or {}).get("Image") or "") or None,
    )


def stop_timeout_of(attrs: Mapping[str, Any], prefix: str, default: float) -> float:
    """The stop timeout the instance was started with."""
    try:
        return float(_labels(attrs, prefix).get(STOP_TIMEOUT, default))
    except ValueError:
        return default


def environment_of(attrs: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment (where its secret values can be read back for masking)."""
    env: dict[str, str] = {}
    for item in (attrs.get("Config") or {}).get("Env") or []:
        name, _, value = str(item).partition("=")
        env[name] = value
    return env


def _labels(attrs: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """Our labels (those starting with `prefix`), without the prefix."""
    raw = (attrs.get("Config") or {}).get("Labels") or {}
    return {k[len(prefix) :]: str(v) for k, v in raw.items() if k.startswith(prefix)}
