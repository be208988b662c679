"""The Telegram webhook endpoint: an aiohttp server that checks the secret token before it
reads the body, refuses what is not an update with a status and one log line (never a
traceback: anyone can post to a public URL), and queues each update for the application.

python-telegram-bot's own webhook server answers a body that is not UTF-8 or JSON with a
500 and a logged traceback, and logs the whole body of an update it cannot read, so the
channel serves this one instead."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from aiohttp import web
from telegram import Update
from telegram.ext import Application

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY_BYTES = 1024 * 1024  # far above any update Telegram sends (files are links)


class WebhookServer:
    """Serves ``path`` on ``port`` for ``application``; ``start``, then ``stop``."""

    def __init__(
        self,
        application: Application[Any, Any, Any, Any, Any, Any],
        *,
        secret: str,
        path: str,
        port: int,
    ) -> None:
        self._application = application
        self._secret = secret.encode()
        self._path = "/" + path.lstrip("/")
        self._port = port
        self._runner: web.AppRunner | None = None

    def web_app(self) -> web.Application:
        """The aiohttp application: POST ``path`` only."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(self._path, self._handle)
        return app

    async def start(self) -> None:
        """Listen on all interfaces (raises if the port is taken)."""
        runner = web.AppRunner(self.web_app(), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "0.0.0.0", self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening; updates already queued are still handled by the application."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(token, self._secret):
            return _refused(request, 403, "missing or wrong secret token")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _refused(request, 413, "body too large")
        try:
            data = json.loads(raw)
        except ValueError:  # UnicodeDecodeError among them
            return _refused(request, 400, "body is not JSON")
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            return _refused(request, 400, "body is not an update")
        try:
            update = Update.de_json(data, self._application.bot)
        except Exception as exc:  # any shape Telegram would never send
            return _refused(request, 400, f"unreadable update ({type(exc).__name__})")
        await self._application.update_queue.put(update)
        return web.Response(status=200)


def _refused(request: web.Request, status: int, reason: str) -> web.Response:
    log.warning("refused a webhook request from %s: %s (%d)", request.remote, reason, status)
    return web.Response(status=status)
