"""Fixtures several test modules share, registered once as a plugin.

A session-scoped fixture that a test module imports is a fixture of that module: each importing
module got its own podman service, registry and images. Registered here they exist once per run.
"""

pytest_plugins = ["tests.integration.container_fixtures"]
