"""`route_name` and `parse_route_name`: the one place a route's name is built and read back."""

from __future__ import annotations

from zerodown.config.routes import PlannedRoute
from zerodown.domain.routes import parse_route_name, route_name


def test_route_name_is_service_dot_environment_and_parses_back() -> None:
    """`web.prod` for web in prod; every valid service/environment pair splits back unchanged."""
    assert route_name("web", "prod") == "web.prod"
    for service, environment in [("web", "prod"), ("api-2", "staging-eu"), ("a", "b0")]:
        assert parse_route_name(route_name(service, environment)) == (service, environment)


def test_a_name_without_a_dot_is_all_service() -> None:
    """A route zerodown did not create (no dot) names no environment: nothing matches it."""
    assert parse_route_name("legacy") == ("legacy", "")


def test_the_planned_route_uses_the_same_name() -> None:
    """The config's route plan names routes exactly as the engine's fleet does."""
    planned = PlannedRoute("web", "prod", frozenset(), frozenset(), "")
    assert planned.name == route_name("web", "prod")
