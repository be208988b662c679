"""Loopback servers that are *not* the OpenAI API, for what an operator's wrong base URL or a
blocked account really meets: a web server's HTML pages, an OpenAI 403 (region or project
block) and a server that accepts connections but never answers. Plus a port nobody listens on.
"""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType

from aiohttp import web

from tests.fakes.background import BackgroundLoop

NGINX_PAGE = "<html><head><title>Welcome to nginx!</title></head><body>nginx</body></html>"
REGION_BLOCKED = {
    "error": {
        "code": "unsupported_country_region_territory",
        "message": "Country, region, or territory not supported",
        "param": None,
        "type": "request_forbidden",
    }
}


def closed_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class OtherServer:
    """Serves, under any path: ``/page/…`` a web server's HTML (200), ``/missing/…`` its HTML
    404 page, ``/forbidden/…`` OpenAI's 403 for a blocked region, ``/silent/…`` nothing
    (the answer never comes)."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._background: BackgroundLoop | None = None
        self.port = 0

    def url(self, kind: str) -> str:
        """A base URL (ending in ``/v1``) that answers like ``kind``."""
        return f"http://127.0.0.1:{self.port}/{kind}/v1"

    def __enter__(self) -> OtherServer:
        async def setup() -> None:
            app = web.Application()
            app.router.add_route("*", "/page/{tail:.*}", self._page)
            app.router.add_route("*", "/missing/{tail:.*}", self._missing)
            app.router.add_route("*", "/forbidden/{tail:.*}", self._forbidden)
            app.router.add_route("*", "/silent/{tail:.*}", self._silent)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert isinstance(server, asyncio.Server)
            self.port = server.sockets[0].getsockname()[1]

        self._background = BackgroundLoop("other-server", setup)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._background is not None
        runner = self._runner

        async def teardown() -> None:
            if runner is not None:
                await runner.cleanup()

        self._background.stop(teardown)

    @staticmethod
    async def _page(request: web.Request) -> web.Response:
        return web.Response(text=NGINX_PAGE, content_type="text/html")

    @staticmethod
    async def _missing(request: web.Request) -> web.Response:
        return web.Response(
            text=NGINX_PAGE.replace("Welcome", "404"), status=404, content_type="text/html"
        )

    @staticmethod
    async def _forbidden(request: web.Request) -> web.Response:
        return web.json_response(REGION_BLOCKED, status=403)

    @staticmethod
    async def _silent(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response(status=204)
