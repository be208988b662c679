"""slack-sdk's rate-limit retry handler, also telling the pacer that the channel named in a
429 is blocked, so other replies in that channel wait instead of hitting the limit too."""

from __future__ import annotations

from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bots.pacing import FloodControl

DEFAULT_RETRY_AFTER = 1.0


class PacedRateLimitRetryHandler(AsyncRateLimitErrorRetryHandler):
    """Retries a 429 after its ``Retry-After`` and blocks that channel in ``flood`` meanwhile."""

    def __init__(self, flood: FloodControl, max_retry_count: int = 3) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._flood = flood

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        """Block the request's channel for the ``Retry-After`` seconds, then wait and retry."""
        if response is not None:
            params = request.body_params or {}
            channel = params.get("channel") or params.get("channel_id")
            if isinstance(channel, str):
                self._flood.blocked(channel, _retry_after(response))
            else:
                self._flood.throttled()
        await super().prepare_for_next_attempt_async(
            state=state, request=request, response=response, error=error
        )


def _retry_after(response: HttpResponse) -> float:
    for name, values in response.headers.items():
        if name.lower() == "retry-after" and values:
            try:
                return max(float(values[0]), 0.0)
            except ValueError:
                break
    return DEFAULT_RETRY_AFTER


def retry_handlers(flood: FloodControl) -> list[AsyncRetryHandler]:
    """The Web API client's retry handlers: connection errors, 429s (paced), 500/503."""
    return [
        AsyncConnectionErrorRetryHandler(),
        PacedRateLimitRetryHandler(flood),
        AsyncServerErrorRetryHandler(),
    ]
