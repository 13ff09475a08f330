"""The router's name for a service in an environment: `<service>.<environment>` (`web.prod`).

Built here and parsed back here only. Service and environment names are `[a-z][a-z0-9-]*` (the
config checks them), so neither contains the dot and a name splits back one way.
"""

from __future__ import annotations

SEPARATOR = "."


def route_name(service: str, environment: str) -> str:
    """The route that carries `service`'s traffic in `environment`."""
    return f"{service}{SEPARATOR}{environment}"


def parse_route_name(name: str) -> tuple[str, str]:
    """(service, environment) of a route name; a name without a dot (a route zerodown did not
    create) is all service, with environment ""."""
    service, _, environment = name.partition(SEPARATOR)
    return service, environment
