"""The operations HTTP server on ``SWITCHBOARD_HTTP_PORT``: ``/healthz`` (the process is
alive), ``/readyz`` (the database answers and every started channel is connected) and
``/metrics`` (Prometheus text format). Other endpoints join it through ``routes`` (the
jobs' ``/openai/webhooks``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from types import TracebackType
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from sqlalchemy.ext.asyncio import AsyncEngine

from core.errors import ConfigError
from core.storage.database import ping

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 3.0
"""How long the database may take to answer a readiness check."""


class Connected(Protocol):
    """Readiness of a started channel: whether it is connected to its platform now."""

    @property
    def connected(self) -> bool:
        """True while the channel receives and answers messages."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OpsServer:
    """The operations endpoints on ``host``:``port`` (0 picks a free port: see ``port``),
    started and stopped with ``async with``.

    ``routes`` adds endpoints, e.g. ``[web.post("/openai/webhooks", handler)]``.
    """

    def __init__(
        self,
        *,
        port: int,
        database: AsyncEngine,
        registry: CollectorRegistry,
        channels: Mapping[str, Connected] | None = None,
        routes: Iterable[web.AbstractRouteDef] = (),
        host: str = "0.0.0.0",
        ready_timeout: float = READY_TIMEOUT_SECONDS,
    ) -> None:
        self._host = host
        self._port = port
        self._database = database
        self._channels = dict(channels or {})
        self._ready_timeout = ready_timeout
        self._was_ready: bool | None = None
        self.app = web.Application(middlewares=[_no_tracebacks])
        self.app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/metrics", make_aiohttp_handler(registry)),
                *routes,
            ]
        )
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (the one picked, when started with port 0)."""
        if self._runner is not None and self._runner.addresses:
            return int(self._runner.addresses[0][1])
        return self._port

    async def __aenter__(self) -> OpsServer:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"SWITCHBOARD_HTTP_PORT={self._port}: cannot listen ({exc.strerror or exc})"
            ) from None
        self._runner = runner
        log.info("operations server on port %d: /healthz /readyz /metrics", self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = [
            f"{name}: not connected"
            for name, channel in self._channels.items()
            if not channel.connected
        ]
        database = await self._database_problem()
        if database is not None:
            problems.insert(0, f"database: {database}")
        ready = not problems
        if ready != self._was_ready:
            # Probes come every few seconds: log the changes, not every answer.
            if ready:
                log.info("ready")
            else:
                log.warning("not ready: %s", "; ".join(problems))
            self._was_ready = ready
        body: dict[str, Any] = {
            "status": "ready" if ready else "not ready",
            "channels": {name: c.connected for name, c in self._channels.items()},
        }
        if problems:
            body["problems"] = problems
        return web.json_response(body, status=200 if ready else 503)

    async def _database_problem(self) -> str | None:
        """Why the database does not answer a trivial query, or None when it does."""
        try:
            async with asyncio.timeout(self._ready_timeout):
                await ping(self._database)
        except TimeoutError:
            return f"no answer within {self._ready_timeout:g} s"
        except Exception as exc:
            # The class of the root cause says enough; driver messages may carry the URL.
            cause: BaseException = exc
            while cause.__cause__ is not None:
                cause = cause.__cause__
            return f"unreachable ({type(cause).__name__})"
        return None


@web.middleware
async def _no_tracebacks(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unexpected errors answer 500 with one log line; 404 and 405 pass through as they are."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        log.error("operations server: %s %s failed: %r", request.method, request.path, exc)
        log.debug("operations server failure", exc_info=True)
        return web.Response(status=500, text="internal error\n")


def operations_server(
    port: int | None,
    database: AsyncEngine,
    registry: CollectorRegistry,
    channels: Mapping[str, Connected],
    routes: Iterable[web.AbstractRouteDef] = (),
) -> AbstractAsyncContextManager[object]:
    """The operations server for the run commands, or nothing when ``port`` is unset."""
    if port is None:
        return nullcontext()
    return OpsServer(
        port=port, database=database, registry=registry, channels=channels, routes=routes
    )
