"""The spring-boot preset's runtime stage, for real, with a jar built by Debian's JDK.

Maven Central is not reachable, so no Spring Boot application can be built here: the jar is a
tiny `com.sun.net.httpserver` app that answers /actuator/health like Spring Boot does, made by
the service's own `build.command` (javac + jar into build/libs/). The image is the preset's
runtime stage on the JRE base zerodown builds with debootstrap (~2.5 min once, then cached).
Checked: non-root user 1001, dumb-init as PID 1 forwarding SIGTERM, the seeds' JAVA_OPTS, $PORT,
the HEALTHCHECK, and the image pinned by the registry's digest.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmarks.sample_images import commit_all, init_repo
from tests.integration.container_fixtures import PodmanApi, wait_for
from tests.integration.test_images_build import registry_config

from zerodown.config.model import ServiceConfig
from zerodown.revisions import prepare_release

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(shutil.which("javac") is None, reason="needs a JDK (javac, jar)"),
]

APP = """\
import com.sun.net.httpserver.HttpServer;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;

public class App {
    public static void main(String[] args) throws Exception {
        int port = 8080;
        for (String arg : args) {
            if (arg.startsWith("--server.port=")) port = Integer.parseInt(arg.substring(14));
        }
        HttpServer server = HttpServer.create(new InetSocketAddress("0.0.0.0", port), 0);
        server.createContext("/actuator/health", exchange -> {
            byte[] body = "{\\"status\\":\\"UP\\"}".getBytes(StandardCharsets.UTF_8);
            exchange.sendResponseHeaders(200, body.length);
            exchange.getResponseBody().write(body);
            exchange.close();
        });
        server.createContext("/", exchange -> {
            String info = "{\\"user\\":\\"" + System.getProperty("user.name")
                + "\\",\\"maxHeapMb\\":" + (Runtime.getRuntime().maxMemory() / (1024 * 1024)) + "}";
            byte[] body = info.getBytes(StandardCharsets.UTF_8);
            exchange.sendResponseHeaders(200, body.length);
            exchange.getResponseBody().write(body);
            exchange.close();
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> System.out.println("graceful stop")));
        server.start();
        System.out.println("listening on " + port);
    }
}
"""

BUILD = (
    "mkdir -p out build/libs && javac --release 17 -d out App.java"
    " && printf 'Main-Class: App\\n' > manifest.txt"
    " && jar cfm build/libs/app.jar manifest.txt -C out ."
)


@pytest.fixture
def containers(podman_api: PodmanApi) -> Iterator[list[str]]:
    """Containers a test starts, removed at its end (also when it failed)."""
    started: list[str] = []
    yield started
    with podman_api.client() as client:
        for container in started:
            client.api.remove_container(container, force=True)


async def test_spring_boot_runtime_stage_runs_the_jar_hardened(
    podman_api: PodmanApi, tmp_path: Path, containers: list[str]
) -> None:
    repo = init_repo(tmp_path / "repo")
    (repo / "App.java").write_text(APP)
    sha = commit_all(repo, "spring v1")
    repository = "zerodown-test/spring"
    config = ServiceConfig.model_validate(
        {
            "source": {"repo": "repo"},
            "run": "unused: the image's CMD runs",
            "build": {
                "command": BUILD,
                "image": {
                    "preset": "spring-boot",
                    "repository": repository,
                    "registry": {"address": podman_api.registry.address},
                    "engine": podman_api.url,
                },
            },
        }
    )
    lines: list[str] = []
    release = await prepare_release(
        "api",
        config,
        root=tmp_path,
        state_dir=tmp_path / "state",
        revision=sha,
        on_line=lines.append,
    )
    assert any("Dockerfile from preset spring-boot" in line for line in lines)
    digest = podman_api.registry.manifest_digest(repository, sha)
    assert release.image == f"{podman_api.registry.address}/{repository}@{digest}"
    image_config = registry_config(podman_api, repository, digest)
    assert image_config["User"] == "spring:spring"
    assert image_config["Entrypoint"] == ["dumb-init", "--"]
    assert "/actuator/health" in " ".join(image_config["Healthcheck"]["Test"])

    with podman_api.client() as client:
        client.images.pull(release.image)
        container = client.api.create_container(
            release.image,
            environment={"PORT": "8081"},
            host_config=client.api.create_host_config(port_bindings={8081: ("127.0.0.1", None)}),
            ports=[8081],
        )["Id"]
        containers.append(container)
        client.api.start(container)
        port = client.api.port(container, 8081)[0]["HostPort"]
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/actuator/health") is not None, 90, "java")
        assert _get(f"http://127.0.0.1:{port}/actuator/health") == {"status": "UP"}
        info = _get(f"http://127.0.0.1:{port}/")
        assert info is not None and info["user"] == "spring"
        assert 900 <= int(info["maxHeapMb"]) <= 1024  # the seeds' -Xmx1024m from JAVA_OPTS
        pid1 = client.api.exec_start(client.api.exec_create(container, ["cat", "/proc/1/comm"]))
        assert pid1.strip() == b"dumb-init"
        uid = client.api.exec_start(client.api.exec_create(container, ["id", "-u"]))
        assert uid.strip() == b"1001"
        # SIGTERM reaches the JVM through dumb-init: it stops gracefully, long before the kill.
        started = time.monotonic()
        client.api.stop(container, timeout=20)
        assert time.monotonic() - started < 10
        assert b"graceful stop" in client.api.logs(container)


def _get(url: str) -> dict[str, str] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return dict(json.loads(response.read()))
    except OSError:
        return None
