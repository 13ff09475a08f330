"""How a revision is named to a user: the tag or branch they deployed, with the sha it meant.

Kept free of heavy imports: the CLI, the server views and the notifiers all show revisions.
"""

from __future__ import annotations

import re

REF_LABEL = "ref"  # DeploymentRecord.labels key: the name the user gave (a tag or a branch)
SHORT_SHA = 8  # sha characters shown beside a ref: "v2 (1f03ba05)"
BARE_SHA = 12  # sha characters shown when no ref is known

_HEX = re.compile(r"^[0-9a-f]{4,40}$")


def revision_label(sha: str | None, ref: str | None = None) -> str:
    """`v2 (1f03ba05)` when the deploy named the revision by `ref`, else the short sha."""
    if not sha:
        return ref or "-"
    if not _HEX.match(sha):  # an unsourced service: its "revision" is already a name
        return sha
    if given_ref(ref or "", sha) is None:
        return sha[:BARE_SHA]
    return f"{ref} ({sha[:SHORT_SHA]})"


def given_ref(requested: str, sha: str) -> str | None:
    """The name worth keeping from what the user asked for: None when it was (part of) the sha."""
    if not requested or requested == sha or (_HEX.match(requested) and sha.startswith(requested)):
        return None
    return requested
