"""The next task definition revision: the running one, with only one container's image changed.

The register payload is built from a whitelist, the input members of RegisterTaskDefinition in
the installed botocore's model, never by deleting known read-only keys: output fields AWS adds
later (`registeredAt`, `deleteRequestedAt`, ...) would otherwise break the call client-side.
"""

from __future__ import annotations

import copy
from typing import Any

from zerodown.errors import PlatformError


def register_input(
    described: dict[str, Any], allowed: frozenset[str], *, container: str, image: str
) -> dict[str, Any]:
    """RegisterTaskDefinition's input from a `describe_task_definition(include=["TAGS"])`
    answer: the whitelisted keys, its tags re-attached, `container`'s image set to `image`."""
    task = described["taskDefinition"]
    payload = {key: copy.deepcopy(value) for key, value in task.items() if key in allowed}
    tags = described.get("tags") or []
    if tags and "tags" in allowed:
        payload["tags"] = copy.deepcopy(tags)
    names = [c.get("name") for c in payload.get("containerDefinitions", [])]
    if container not in names:
        raise PlatformError(
            f"task definition {task.get('family')}:{task.get('revision')} has no container "
            f"{container!r} (it has {', '.join(map(str, names)) or 'none'}): fix "
            "`platform.container`"
        )
    for definition in payload["containerDefinitions"]:
        if definition.get("name") == container:
            definition["image"] = image
    return payload


def short_name(arn: str) -> str:
    """`family:revision` of a task definition ARN (what the ECS console shows)."""
    return arn.rsplit("/", 1)[-1]
