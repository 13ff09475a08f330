"""The routing table's preview pool and sticky revisions, and the sticky cookie parser."""

from __future__ import annotations

from zerodown.routers.base import RouteSpec, TargetSpec
from zerodown.routers.builtin.exchange import sticky_revision
from zerodown.routers.builtin.table import RoutingTable


def _table() -> RoutingTable:
    table = RoutingTable()
    table.apply_route(RouteSpec(service="api.prod", sticky=True, preview_header="X-Preview"))
    for target_id, revision, pool in (
        ("b1", "v1", "v1"),
        ("b2", "v1", "v1"),
        ("g1", "v2", "preview"),
    ):
        spec = TargetSpec("api.prod", target_id, "127.0.0.1", 1000, revision, pool=pool)
        table.add_target(spec, healthy=True)
    return table


def test_preview_targets_get_only_preview_requests_and_preview_requests_only_them() -> None:
    """Without the header never g1; with it always g1."""
    route = _table().routes()[0]
    plain = {route.pick().spec.target_id for _ in range(20)}  # type: ignore[union-attr]
    preview = {route.pick(preview=True).spec.target_id for _ in range(20)}  # type: ignore[union-attr]
    assert plain == {"b1", "b2"} and preview == {"g1"}


def test_a_preview_request_without_preview_targets_gets_none() -> None:
    """No green: a preview request is not silently served by blue."""
    table = _table()
    table.set_pool_weights("api.prod", {"v1": 100})  # a pool of its own, out of rotation:
    table.add_target(TargetSpec("api.prod", "g1", "127.0.0.1", 1000, "v2", "v2"), healthy=True)
    assert table.routes()[0].pick(preview=True) is None


def test_sticky_revision_keeps_a_client_on_its_revision_while_it_has_targets() -> None:
    """Cookie v2 -> only v2 targets; once v2's pool has no weight the client falls back to v1."""
    table = RoutingTable()
    table.apply_route(RouteSpec(service="api.prod", sticky=True))
    for target_id, revision in (("a", "v1"), ("b", "v2")):
        spec = TargetSpec("api.prod", target_id, "h", 1, revision, pool=revision)
        table.add_target(spec, healthy=True)
    route = table.routes()[0]
    assert {route.pick(revision="v2").spec.target_id for _ in range(10)} == {"b"}  # type: ignore[union-attr]
    table.set_pool_weights("api.prod", {"v1": 100, "v2": 0})
    assert route.pick(revision="v2").spec.target_id == "a"  # type: ignore[union-attr]


def test_preview_header_names_are_known_to_the_table_lowercased() -> None:
    """The proxy spots preview headers by one set lookup on lowercased names."""
    assert b"x-preview" in _table().preview_headers


def test_sticky_cookie_is_read_among_other_cookies_and_unsafe_values_are_ignored() -> None:
    """`a=1; zerodown_rev=abc123` -> abc123; a value with odd characters -> None."""
    assert sticky_revision(b"a=1; zerodown_rev=abc123; b=2") == "abc123"
    assert sticky_revision(b"zerodown_rev=<script>") is None
    assert sticky_revision(b"other=1") is None
