"""The HTTP transport for ``getUpdates`` that keeps one malformed update from stalling
long polling.

python-telegram-bot parses a ``getUpdates`` batch all at once; if any update in it cannot be
parsed, the whole batch fails, the offset never advances and polling retries the same batch
forever. This transport checks each update of a successful answer and replaces one that
cannot be parsed with an empty update of the same id (logged), so the offset moves past it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from telegram import Update
from telegram.request import HTTPXRequest, RequestData
from typing_extensions import override

log = logging.getLogger(__name__)


class TolerantUpdatesRequest(HTTPXRequest):
    """``HTTPXRequest`` for ``getUpdates`` that neutralises unparseable updates."""

    def __init__(self) -> None:
        # python-telegram-bot's own choice for the getUpdates request: one connection.
        super().__init__(connection_pool_size=1)

    @override
    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = HTTPXRequest.DEFAULT_NONE,
        write_timeout: Any = HTTPXRequest.DEFAULT_NONE,
        connect_timeout: Any = HTTPXRequest.DEFAULT_NONE,
        pool_timeout: Any = HTTPXRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """Send the request; clean the updates of a successful answer."""
        code, payload = await super().do_request(
            url, method, request_data, read_timeout, write_timeout, connect_timeout, pool_timeout
        )
        if code != 200:
            return code, payload
        return code, _without_malformed_updates(payload)


def _without_malformed_updates(payload: bytes) -> bytes:
    try:
        body = json.loads(payload)
        updates = body["result"]
        Update.de_list(updates, None)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    else:
        return payload  # the common case: everything parses
    if not isinstance(body, dict) or not isinstance(body.get("result"), list):
        return payload
    cleaned: list[object] = []
    for update in body["result"]:
        try:
            Update.de_json(update, None)
            cleaned.append(update)
        except (ValueError, KeyError, TypeError, AttributeError):
            update_id = update.get("update_id") if isinstance(update, dict) else None
            log.warning("skipping a malformed Telegram update (id %s)", update_id)
            if isinstance(update_id, int):
                cleaned.append({"update_id": update_id})
    return json.dumps({**body, "result": cleaned}).encode()
