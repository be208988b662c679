"""slack-sdk's retry handlers for the Web API client: 429s after their ``Retry-After`` (also
telling the pacer that the channel named in the 429 is blocked, so other replies in that
channel wait instead of hitting the limit too), and transient failures — any 5xx, a
dropped or refused connection, a timeout — with a doubling backoff. What still fails after
the retries is raised to the caller: a reply's final message then stays undelivered, and
the turn open for recovery."""

from __future__ import annotations

import asyncio
import math
import random

import aiohttp
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bots.pacing import FloodControl

DEFAULT_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 60.0
TRANSIENT_RETRIES = 3  # after the first attempt: 4 in all, about 3.5 s of backoff at most
_BACKOFF = BackoffRetryIntervalCalculator(backoff_factor=0.5)


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
        """Block the request's channel for the ``Retry-After`` seconds, then wait and retry.

        The wait is computed here, not by slack-sdk, which fails on a ``Retry-After`` that
        is not an integer (``nan``, ``1.5``, garbage)."""
        if response is None:
            raise error or RuntimeError("a 429 retry without a response")
        delay = _retry_after(response)
        params = request.body_params or {}
        channel = params.get("channel") or params.get("channel_id")
        if isinstance(channel, str):
            self._flood.blocked(channel, delay)
        else:
            self._flood.throttled()
        state.next_attempt_requested = True
        await asyncio.sleep(delay + random.random() / 4)
        state.increment_current_attempt()


class ServerErrorRetryHandler(AsyncRetryHandler):
    """Retries any 5xx answer (slack-sdk's own handler knows only 500 and 503)."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code >= 500


def _retry_after(response: HttpResponse) -> float:
    """The ``Retry-After`` seconds, or the default when it is missing or not a finite,
    non-negative number; capped, so that a wild value cannot stall a reply for hours."""
    for name, values in response.headers.items():
        if name.lower() == "retry-after" and values:
            try:
                seconds = float(values[0])
            except ValueError:
                break
            if math.isfinite(seconds) and seconds >= 0:
                return min(seconds, MAX_RETRY_AFTER)
            break
    return DEFAULT_RETRY_AFTER


def retry_handlers(flood: FloodControl) -> list[AsyncRetryHandler]:
    """The Web API client's retry handlers: connection errors and timeouts, 429s (paced),
    5xx."""
    return [
        AsyncConnectionErrorRetryHandler(
            max_retry_count=TRANSIENT_RETRIES,
            interval_calculator=_BACKOFF,
            # Any failed connection or read, and the client's own timeout.
            error_types=[aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError],
        ),
        PacedRateLimitRetryHandler(flood),
        ServerErrorRetryHandler(max_retry_count=TRANSIENT_RETRIES, interval_calculator=_BACKOFF),
    ]
