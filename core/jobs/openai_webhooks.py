"""``WebhookVerifier`` on the OpenAI SDK (``client.webhooks.unwrap``): the signature of a
webhook delivery checked, its event read; a bad one becomes the core's ``InvalidWebhook``."""

from __future__ import annotations

from collections.abc import Mapping

import openai
from openai import AsyncOpenAI

from core.errors import InvalidWebhook
from core.jobs.polling import WebhookEvent


class OpenAIWebhooks:
    """Verifies OpenAI webhook deliveries (batch and fine-tuning events alike)."""

    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client

    def verify_webhook(
        self, payload: bytes, headers: Mapping[str, str], secret: str
    ) -> WebhookEvent:
        """Verify and parse with the SDK's ``webhooks.unwrap``."""
        try:
            event = self._client.webhooks.unwrap(payload, dict(headers), secret=secret)
        except (openai.InvalidWebhookSignatureError, ValueError) as exc:
            raise InvalidWebhook(str(exc)) from None
        webhook_id = next((v for k, v in headers.items() if k.lower() == "webhook-id"), "")
        # Some event kinds (realtime calls) carry no object id; they concern no job.
        object_id = getattr(event.data, "id", "")
        return WebhookEvent(webhook_id, event.type, str(object_id))
