"""docker-py and requests errors become zerodown errors with a sentence (no daemon needed)."""

from __future__ import annotations

import docker.errors
import pytest
import requests
import requests.exceptions

from zerodown.errors import InstanceNotFound, RuntimeBackendError
from zerodown.runtimes.docker.api import DockerApi

API = DockerApi("unix:///run/nowhere.sock", 5.0)


def _response(status: int) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    return response


def test_a_missing_container_is_instance_not_found_naming_it() -> None:
    error = docker.errors.NotFound("no such container", _response(404), "No such container: x")
    found = API.translate(error, "inspect web-1", "web-1")
    assert isinstance(found, InstanceNotFound)
    assert "web-1" in str(found) and "No such container" in str(found)


def test_a_missing_image_says_to_check_the_push_and_the_digest() -> None:
    error = docker.errors.ImageNotFound("no image", _response(404), "manifest unknown")
    found = API.translate(error, "pull reg/web@sha256:abc")
    assert isinstance(found, RuntimeBackendError) and not isinstance(found, InstanceNotFound)
    assert "pushed to the registry under this digest" in str(found)


def test_a_refusal_names_the_action_and_the_daemons_reason() -> None:
    error = docker.errors.APIError("boom", _response(500), "port is already allocated")
    found = API.translate(error, "start web-1", "web-1")
    assert isinstance(found, RuntimeBackendError)
    assert str(found) == "the Docker API refused to start web-1: port is already allocated"


@pytest.mark.parametrize(
    "error",
    [requests.exceptions.ConnectionError("refused"), FileNotFoundError(2, "No such file")],
)
def test_an_unreachable_daemon_says_how_to_start_one_and_where_to_point(
    error: Exception,
) -> None:
    found = API.translate(error, "list containers")
    assert isinstance(found, RuntimeBackendError)
    assert "cannot reach the Docker API at unix:///run/nowhere.sock to list containers" in str(
        found
    )
    assert "podman system service" in str(found) and "runtime.url" in str(found)


def test_a_slow_daemon_says_which_timeout_to_raise() -> None:
    found = API.translate(requests.exceptions.ReadTimeout("slow"), "pull reg/web")
    assert isinstance(found, RuntimeBackendError) and "runtime.timeout" in str(found)
