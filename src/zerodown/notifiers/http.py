"""One HTTP POST for the HTTP-based notifiers, with httpx's errors translated at the seam.

Messages never carry the URL (Slack webhook URLs hold a token) nor the response body beyond a
short, scrubbed excerpt.
"""

from __future__ import annotations

import httpx

from zerodown import __version__
from zerodown.errors import NotificationFailed
from zerodown.notifiers.base import scrub

USER_AGENT = f"zerodown/{__version__}"


class DeliveryRefused(NotificationFailed):
    """The endpoint answered, but not with a 2xx status."""

    def __init__(self, message: str, status_code: int) -> None:
        self.status_code = status_code
        super().__init__(message)


class HttpPoster:
    """POSTs bodies to one endpoint on a pooled client (opened on first use)."""

    def __init__(self, channel: str, *, timeout: float = 10.0) -> None:
        self.channel = channel
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST `body`; return the 2xx status, or raise `NotificationFailed` saying why."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout, headers={"User-Agent": USER_AGENT}, follow_redirects=False
            )
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise NotificationFailed(f"{self.channel}: no answer ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            reason = scrub(str(exc) or type(exc).__name__, url)
            raise NotificationFailed(f"{self.channel}: cannot deliver: {reason}") from exc
        if not 200 <= response.status_code < 300:
            excerpt = scrub(response.text[:200].strip(), url)
            raise DeliveryRefused(
                f"{self.channel}: HTTP {response.status_code} {excerpt}".rstrip(),
                response.status_code,
            )
        return response.status_code

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
