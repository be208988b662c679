"""OpenAI webhooks on the operations server: ``POST /openai/webhooks`` hands each delivery to
the jobs (verified with ``OPENAI_WEBHOOK_SECRET``, each delivery once, a ``batch.*`` event
polls its job at once); a bad signature gets 400 and one log line."""

from __future__ import annotations

import logging

from aiohttp import web

from core.errors import InvalidWebhook
from core.jobs.batches import BatchJobs

log = logging.getLogger(__name__)

PATH = "/openai/webhooks"
MAX_BODY = 1024 * 1024


def webhook_routes(batches: BatchJobs) -> list[web.RouteDef]:
    """The route the operations server adds when ``OPENAI_WEBHOOK_SECRET`` is set."""

    async def receive(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.Response(status=413, text="too large\n")
        payload = await request.read()
        try:
            await batches.on_webhook(payload, dict(request.headers))
        except InvalidWebhook as exc:
            log.warning("refused an OpenAI webhook from %s: %s", request.remote, exc)
            return web.Response(status=400, text="invalid signature\n")
        return web.Response(text="ok\n")

    return [web.post(PATH, receive)]
