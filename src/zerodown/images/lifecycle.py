"""After a successful deploy of an image-built service: move its tags, then prune its images.

A `DeploymentObserver`: a prod deploy (an environment in `build.image.production`) moves
`latest` to the deployed digest; any other environment's adds `dev-<UTC timestamp>`. Then the
retention policy runs (`build.image.retention.enabled`), with the history store and the runtime
saying which digests are in use. Housekeeping: a failure is logged, never raised into the
deployment. `zerodown images prune` calls `prune` directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from zerodown.config.images import ImageBuildConfig
from zerodown.domain.events import DeploymentEvent, EventKind
from zerodown.errors import ConfigError, ZerodownError
from zerodown.images.build import image_repository
from zerodown.images.registry import ImageRegistry, open_registry
from zerodown.images.retention import (
    ImageVerdict,
    plan_image_prune,
    protected_digests,
    prune_images,
)

if TYPE_CHECKING:
    from zerodown.config import LoadedConfig
    from zerodown.config.images import RegistryConfig
    from zerodown.domain.records import DeploymentRecord
    from zerodown.runtimes.base import Runtime
    from zerodown.store.base import HistoryStore

log = logging.getLogger(__name__)

LATEST = "latest"


def dev_tag(now: float) -> str:
    """`dev-<YYYYmmddHHMMSS>` in UTC."""
    return "dev-" + datetime.fromtimestamp(now, UTC).strftime("%Y%m%d%H%M%S")


class ImageLifecycle:
    """Tags (`latest`, `dev-<timestamp>`) and retention of the services' registry images."""

    def __init__(
        self,
        loaded: LoadedConfig,
        store: HistoryStore,
        runtime: Runtime,
        *,
        now: Callable[[], float] = time.time,
        registry_factory: Callable[[RegistryConfig], ImageRegistry] = open_registry,
    ) -> None:
        self.loaded = loaded
        self.store = store
        self.runtime = runtime
        self.now = now
        self.registry_factory = registry_factory

    async def on_event(self, event: DeploymentEvent) -> None:
        """On the STATE event that says a deployment succeeded: tag, then prune."""
        if event.kind is not EventKind.STATE or event.data.get("to") != "succeeded":
            return
        try:
            record = await self.store.get_deployment(event.deployment_id)
            await self.after_deploy(record)
        except (OSError, ZerodownError) as exc:
            log.warning("image tags/retention after %s: %s", event.deployment_id, exc)

    async def after_deploy(self, record: DeploymentRecord) -> list[str]:
        """Move `latest` (prod) or add `dev-<timestamp>` on the deployed digest; prune. The
        tags written."""
        image = self._image_config(record.service)
        if image is None:
            return []
        repository = image_repository(record.service, image)
        registry = self.registry_factory(image.registry)
        try:
            digest = await registry.manifest_digest(repository, record.revision)
            if digest is None:
                log.warning("%s:%s is not in the registry", repository, record.revision[:12])
                return []
            production = record.environment in image.production
            tag = LATEST if production else dev_tag(self.now())
            await registry.add_tag(repository, digest, tag)
            log.info("tagged %s@%s as %s", repository, digest[:19], tag)
            if image.retention.enabled:
                verdicts = await self._prune(record.service, image, registry, dry_run=False)
                for verdict in verdicts:
                    if not verdict.keep:
                        log.info(
                            "deleted %s@%s: %s", repository, verdict.image.digest, verdict.reason
                        )
            return [tag]
        finally:
            await registry.aclose()

    async def prune(self, service_name: str, *, dry_run: bool = False) -> list[ImageVerdict]:
        """Apply the service's retention policy; every image's verdict (deleted: keep=False)."""
        image = self._image_config(service_name)
        if image is None:
            raise ConfigError(
                f"service {service_name} builds no image: add build.image to it",
                path=str(self.loaded.path),
                field=f"services.{service_name}.build.image",
            )
        registry = self.registry_factory(image.registry)
        try:
            return await self._prune(service_name, image, registry, dry_run=dry_run)
        finally:
            await registry.aclose()

    def image_services(self) -> list[str]:
        """The services that build an image."""
        return [name for name in self.loaded.config.services if self._image_config(name)]

    async def _prune(
        self, service_name: str, image: ImageBuildConfig, registry: ImageRegistry, *, dry_run: bool
    ) -> list[ImageVerdict]:
        repository = image_repository(service_name, image)
        images = await registry.list_images(repository)
        protected = await protected_digests(
            service_name,
            images,
            environments=list(self.loaded.config.environments),
            store=self.store,
            runtime=self.runtime,
        )
        verdicts = plan_image_prune(
            images, policy=image.retention, protected=protected, now=self.now()
        )
        await prune_images(registry, repository, verdicts, dry_run=dry_run)
        return verdicts

    def _image_config(self, service_name: str) -> ImageBuildConfig | None:
        service = self.loaded.config.services.get(service_name)
        if service is None or service.build is None:
            return None
        return service.build.image
