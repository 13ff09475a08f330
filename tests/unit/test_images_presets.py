"""The hardened presets' Dockerfiles: what each must contain (the seeds' Spring Boot image).

A real Spring Boot build cannot run here (Maven Central is unreachable), so the spring-boot
preset is checked by its generated text; the fastapi preset is also built and run for real in
tests/integration/test_images_build.py.
"""

from __future__ import annotations

import pytest

from zerodown.config.images import SEED_JAVA_OPTS, ImageBuildConfig
from zerodown.errors import BuildFailed
from zerodown.images.presets import PresetContext, render

REGISTRY = {"address": "127.0.0.1:5000"}
NOTHING = PresetContext(requirements=False, wheels=False, jar_built=False)


def image(**fields: object) -> ImageBuildConfig:
    return ImageBuildConfig.model_validate({"registry": REGISTRY, **fields})


def test_spring_boot_multi_stage_as_in_the_seeds() -> None:
    text = render(
        "spring-boot", image(builder="gradle:8.5-jdk17-alpine"), base="jre:17", context=NOTHING
    )
    lines = text.splitlines()
    assert "FROM gradle:8.5-jdk17-alpine AS builder" in lines
    assert "FROM jre:17 AS runtime" in lines
    # Dependencies resolved before the sources are copied: a code change reuses that layer.
    assert lines.index("RUN gradle dependencies --no-daemon") < lines.index("COPY src ./src")
    assert "COPY --from=builder /app/build/libs/*.jar app.jar" in lines
    assert "USER spring:spring" in lines
    assert "-u 1001" in text and "--uid 1001" in text
    assert "dumb-init" in text and 'ENTRYPOINT ["dumb-init", "--"]' in lines
    assert "HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3" in text
    assert "/actuator/health" in text
    assert f'ENV JAVA_OPTS="{SEED_JAVA_OPTS}" PORT=8080' in lines
    assert 'CMD ["sh", "-c", "exec java $JAVA_OPTS -jar app.jar --server.port=$PORT"]' in lines
    assert lines[-1] == "COPY --from=builder /app/build/libs/*.jar app.jar"  # changes most: last


def test_spring_boot_packages_a_jar_built_by_the_build_command() -> None:
    context = PresetContext(requirements=False, wheels=False, jar_built=True)
    text = render("spring-boot", image(java_opts="-Xmx256m"), base="jre:17", context=context)
    assert "AS builder" not in text
    assert "COPY build/libs/*.jar app.jar" in text.splitlines()
    assert 'JAVA_OPTS="-Xmx256m"' in text


def test_spring_boot_without_a_jar_or_builder_says_what_to_set() -> None:
    with pytest.raises(BuildFailed, match=r"build\.command.*builder"):
        render("spring-boot", image(), base="jre:17", context=NOTHING)


def test_fastapi_non_root_dependencies_first_uvicorn_and_healthcheck() -> None:
    context = PresetContext(requirements=True, wheels=False, jar_built=False)
    text = render("fastapi", image(app="svc.main:api", port=9000), base="py:3.11", context=context)
    lines = text.splitlines()
    assert lines[1] == "FROM py:3.11"
    install = next(i for i, line in enumerate(lines) if "pip install" in line)
    assert lines.index("COPY requirements.txt ./") < install < lines.index("COPY . .")
    assert lines[-1] == "COPY . ."  # the code changes most: its layer comes last
    assert "--no-index" not in lines[install]
    assert "USER 1001:1001" in lines
    assert "http://127.0.0.1:%s/health" in text and "'9000'" in text
    assert "python3 -m uvicorn svc.main:api --host 0.0.0.0" in lines[-2]


def test_fastapi_installs_offline_from_a_wheels_dir() -> None:
    context = PresetContext(requirements=True, wheels=True, jar_built=False)
    text = render("fastapi", image(health_path="/healthz"), base="py", context=context)
    assert "--no-index --find-links /tmp/wheels -r requirements.txt" in text
    assert "/healthz" in text


def test_fastapi_without_requirements_installs_nothing() -> None:
    text = render("fastapi", image(), base="py", context=NOTHING)
    assert "pip" not in text and "COPY requirements.txt" not in text
