"""OpenAI webhooks on the operations server: ``POST /openai/webhooks`` hands each delivery to
the jobs it is about (verified with ``OPENAI_WEBHOOK_SECRET``, each delivery once; a
``batch.*`` or ``fine_tuning.job.*`` event polls its job at once); a bad signature gets 400
and one log line."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from core.errors import InvalidWebhook
from core.jobs.batches import BatchJobs
from core.jobs.finetunes import FineTuneJobs

log = logging.getLogger(__name__)

PATH = "/openai/webhooks"
MAX_BODY = 1024 * 1024
FINE_TUNING_PREFIX = "fine_tuning."


def webhook_routes(batches: BatchJobs, finetunes: FineTuneJobs | None = None) -> list[web.RouteDef]:
    """The route the operations server adds when ``OPENAI_WEBHOOK_SECRET`` is set."""

    async def receive(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.Response(status=413, text="too large\n")
        payload = await request.read()
        # Which jobs it is about decides who verifies it; the signature covers the type.
        handle = batches.on_webhook
        if finetunes is not None and _event_type(payload).startswith(FINE_TUNING_PREFIX):
            handle = finetunes.on_webhook
        try:
            await handle(payload, dict(request.headers))
        except InvalidWebhook as exc:
            log.warning("refused an OpenAI webhook from %s: %s", request.remote, exc)
            return web.Response(status=400, text="invalid signature\n")
        return web.Response(text="ok\n")

    return [web.post(PATH, receive)]


def _event_type(payload: bytes) -> str:
    """The ``type`` a webhook's body says it has ("" if it has none; it is not verified)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return ""
    kind = body.get("type") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) else ""
