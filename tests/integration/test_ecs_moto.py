"""The ECS platform against a real `moto_server` over HTTP (ECS, ELBv2, EC2 for the VPC).

botocore validates every request client-side, so the re-register whitelist meets the real input
shape here. moto never progresses an ECS deployment (its one deployment is COMPLETED at once when
MOTO_ECS_SERVICE_RUNNING covers the desired count) and lacks ServiceDeployments, so the failure
rollouts of "Show it" replay recorded DescribeServices frames (tests/data/ecs) through
`ReplayProxy`, a pass-through to moto that rewrites only DescribeServices answers while armed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from zerodown.demo import make_repository

pytestmark = [pytest.mark.timeout(240)]

MOTO = Path(sys.executable).parent / "moto_server"
REGION = "ap-northeast-2"
DATA = Path(__file__).parent.parent / "data" / "ecs"
RECORDED_OLD = "arn:aws:ecs:ap-northeast-2:123456789012:task-definition/gaekdam-ai:3"
RECORDED_OURS = "ecs-svc/2222222222222222222"
ORIGINAL = "123456789012.dkr.ecr.ap-northeast-2.amazonaws.com/gaekdam-ai@sha256:" + "1" * 64
IMAGE = "123456789012.dkr.ecr.ap-northeast-2.amazonaws.com/gaekdam-ai@sha256:" + "b" * 64
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto_server on a free port; its ECS services report 2 running tasks (COMPLETED)."""
    port = _free_port()
    env = {**os.environ, "MOTO_ECS_SERVICE_RUNNING": "2"}
    server = subprocess.Popen(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):  # another process: poll until it answers (bounded, ~20 s)
            try:
                httpx.get(f"{url}/moto-api/", timeout=0.5)
                break
            except httpx.TransportError:
                if server.poll() is not None:
                    raise RuntimeError("moto_server exited") from None
                time.sleep(0.1)
        else:
            raise RuntimeError("moto_server did not start")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def _client(service: str, url: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=url)  # type: ignore[call-overload]


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Fake credentials, a fresh moto, and the Gaekdam AI service on revision 1 behind a
    target group (15 s x 2 health checks, 30 s deregistration delay)."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    httpx.post(f"{moto_url}/moto-api/reset", timeout=5).raise_for_status()
    ec2, elb, ecs = (_client(s, moto_url) for s in ("ec2", "elbv2", "ecs"))
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    group = elb.create_target_group(
        Name="gaekdam-ai",
        Protocol="HTTP",
        Port=8000,
        VpcId=vpc,
        TargetType="ip",
        HealthCheckPath="/api/v1/health",
        HealthCheckIntervalSeconds=15,
        HealthyThresholdCount=2,
    )["TargetGroups"][0]["TargetGroupArn"]
    elb.modify_target_group_attributes(
        TargetGroupArn=group,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "30"}],
    )
    ecs.create_cluster(clusterName="gaekdam")
    recorded = json.loads((DATA / "task_definition.json").read_text())
    allowed = ecs.meta.service_model.operation_model("RegisterTaskDefinition").input_shape.members
    first = {k: v for k, v in recorded["taskDefinition"].items() if k in allowed}
    first["containerDefinitions"][0]["image"] = ORIGINAL
    arn = ecs.register_task_definition(**first, tags=recorded["tags"])["taskDefinition"][
        "taskDefinitionArn"
    ]
    ecs.create_service(
        cluster="gaekdam",
        serviceName="ai",
        taskDefinition=arn,
        desiredCount=2,
        launchType="FARGATE",
        loadBalancers=[{"targetGroupArn": group, "containerName": "app", "containerPort": 8000}],
    )
    return {"ecs": ecs, "first": arn, "target_group": group, "url": moto_url}


class ReplayProxy:
    """Forwards every AWS call to moto; while armed with a recorded sequence, the answers to
    DescribeServices after our UpdateService are its frames (recorded ids and ARNs replaced by
    moto's), until zerodown's own rollback UpdateService disarms it."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.frames: list[dict[str, Any]] = []
        self.playing = False
        self.index = 0
        self.subst: dict[str, str] = {}
        self.targets: list[str] = []  # X-Amz-Target of every call, in order
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, headers, answer = proxy.forward(self.path, dict(self.headers), body)
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def arm(self, sequence: str) -> None:
        """Replay `sequence` after the next UpdateService of a deployment."""
        self.frames = json.loads((DATA / f"{sequence}.json").read_text())["frames"]
        self.armed = True

    armed = False

    def forward(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        target = headers.get("X-Amz-Target", "")
        self.targets.append(target)
        operation = target.rsplit(".", 1)[-1]
        params = json.loads(body or b"{}") if "json" in headers.get("Content-Type", "") else {}
        if operation == "UpdateService":
            if self.armed and "deploymentConfiguration" in params:
                before = _client("ecs", self.upstream).describe_services(
                    cluster=params["cluster"], services=[params["service"]]
                )["services"][0]
                self.subst = {RECORDED_OLD: before["taskDefinition"]}
            elif self.playing:  # zerodown's rollback: moto answers from now on
                self.playing = False
        reply = httpx.post(
            self.upstream + path,
            content=body,
            headers={k: v for k, v in headers.items() if k.lower() != "host"},
            timeout=30,
        )
        content = reply.content
        if operation == "UpdateService" and self.armed and "deploymentConfiguration" in params:
            service = reply.json()["service"]
            self.subst["$NEW"] = service["taskDefinition"]
            self.subst[RECORDED_OURS] = service["deployments"][0]["id"]
            self.armed, self.playing, self.index = False, True, 0
        elif operation == "DescribeServices" and self.playing:
            frame = self.frames[min(self.index, len(self.frames) - 1)]
            self.index += 1
            text = json.dumps(frame)
            for recorded, real in self.subst.items():
                text = text.replace(recorded, real)
            answer = reply.json()
            answer["services"][0].update(json.loads(text))
            content = json.dumps(answer).encode()
        return reply.status_code, dict(reply.headers), content

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def proxy(aws: dict[str, Any]) -> Iterator[ReplayProxy]:
    replay = ReplayProxy(aws["url"])
    try:
        yield replay
    finally:
        replay.close()


def _definition(ecs: Any, arn: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    answer = ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"])
    return answer["taskDefinition"], answer.get("tags", [])


class Project:
    """A git repository with the Gaekdam AI service on ECS, driven through the real CLI."""

    def __init__(self, root: Path, endpoint: str) -> None:
        self.repo = make_repository(root, _free_port())
        self.env = {**os.environ, **AWS_ENV}
        self.env.pop("AWS_PROFILE", None)
        (self.repo / "zerodown.yml").write_text(
            f"""project: gaekdam
router:
  listen: 127.0.0.1:{_free_port()}
services:
  ai:
    source: {{repo: .}}
    platform:
      kind: ecs
      cluster: gaekdam
      service: ai
      container: app
      region: {REGION}
      endpoint_url: {endpoint}
      image: {IMAGE}
      poll_interval: 0.05s
environments:
  prod: {{}}
"""
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zerodown", *args],
            cwd=self.repo,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=self.env,
        )

    def sha(self, tag: str) -> str:
        return subprocess.run(
            ["git", "rev-parse", tag], cwd=self.repo, capture_output=True, text=True, check=True
        ).stdout.strip()


@pytest.fixture
def project(tmp_path: Path, proxy: ReplayProxy) -> Iterator[Project]:
    made = Project(tmp_path, proxy.url)
    try:
        yield made
    finally:
        made.run("stop")


def _service(aws: dict[str, Any]) -> dict[str, Any]:
    return dict(aws["ecs"].describe_services(cluster="gaekdam", services=["ai"])["services"][0])


@pytest.mark.slow
def test_show_it_deploy_circuit_breaker_and_rollback_through_the_cli(
    project: Project, proxy: ReplayProxy, aws: dict[str, Any]
) -> None:
    """`zerodown deploy ai --env prod --revision <sha>` against moto: revision N+1 differs from
    N only in the image (pinned by digest, tags kept) and the service is updated with the
    breaker on; a recorded circuit-breaker rollout ends rolled_back naming the breaker with the
    service back on N; `zerodown rollback` returns to the ARN the earlier deployment recorded."""
    ecs = aws["ecs"]
    first = project.run("deploy", "ai", "--env", "prod", "--revision", project.sha("v1"))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "succeeded" in first.stdout
    assert "for at most" in first.stdout and "30 deregistration" in first.stdout
    two = _service(aws)["taskDefinition"]
    assert two.endswith(":2")
    old, old_tags = _definition(ecs, aws["first"])
    new, new_tags = _definition(ecs, two)
    assert new["containerDefinitions"][0]["image"] == IMAGE
    assert new_tags == old_tags and new_tags
    volatile = {"taskDefinitionArn", "revision", "registeredAt", "registeredBy"}
    old["containerDefinitions"][0]["image"] = IMAGE
    assert {k: v for k, v in new.items() if k not in volatile} == {
        k: v for k, v in old.items() if k not in volatile
    }
    configuration = _service(aws)["deploymentConfiguration"]
    assert configuration["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}

    second = project.run("deploy", "ai", "--env", "prod", "--revision", project.sha("v2"))
    assert second.returncode == 0, second.stdout + second.stderr
    three = _service(aws)["taskDefinition"]
    assert three.endswith(":3")

    proxy.arm("circuit_breaker")
    broken = project.run("deploy", "ai", "--env", "prod", "--revision", project.sha("v3"))
    print(broken.stdout)  # the "Show it" output, with -s
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "rolled_back" in broken.stdout or "rolled back" in broken.stdout
    assert "circuit breaker" in broken.stdout
    assert _service(aws)["taskDefinition"] == three  # back on N
    history = json.loads(project.run("history", "--json").stdout)
    assert history[0]["state"] == "rolled_back"
    assert "trigger: circuit breaker" in history[0]["reason"]

    back = project.run("rollback", "ai", "--env", "prod")
    assert back.returncode == 0, back.stdout + back.stderr
    assert _service(aws)["taskDefinition"] == two  # v1's recorded ARN, registered once
    families = ecs.list_task_definitions(familyPrefix="gaekdam-ai")["taskDefinitionArns"]
    assert len(families) == 4  # 1 + v1, v2, v3: the rollback registered nothing


def test_a_missing_cluster_fails_in_one_sentence_and_changes_nothing(
    project: Project, aws: dict[str, Any]
) -> None:
    """An ECS service name that does not exist: failed, one sentence naming the setting."""
    text = (project.repo / "zerodown.yml").read_text().replace("service: ai", "service: nope")
    (project.repo / "zerodown.yml").write_text(text)
    done = project.run("deploy", "ai", "--env", "prod", "--revision", project.sha("v1"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no active service 'nope'" in done.stdout
    assert "platform.service" in done.stdout
    assert "nothing was changed" in done.stdout
    assert _service(aws)["taskDefinition"] == aws["first"]
