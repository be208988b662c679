"""``ReplySpool`` in files: one JSON file per write in the spool folder, written whole
(a temporary file renamed into place) so a crash never leaves half an entry."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.conversation.messages import NewMessage, Role
from core.conversation.spool import SpooledWrite
from core.conversation.store import UsageRecord
from core.jobs.reservations import reservation_from_json, reservation_to_json
from core.media.ports import PreparedImage


class FileSpool:
    """Keeps writes waiting for the database as files in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    async def keep(self, write: SpooledWrite) -> None:
        """Write ``write`` durably into the folder."""
        await asyncio.to_thread(self._keep, json.dumps(_encoded(write)))

    async def pending(self) -> list[tuple[str, SpooledWrite]]:
        """The writes kept, oldest first."""
        return await asyncio.to_thread(self._pending)

    async def remove(self, name: str) -> None:
        """Forget a written entry."""
        await asyncio.to_thread((self._folder / name).unlink, missing_ok=True)

    def _keep(self, text: str) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        # Names sort in the order the writes were spooled.
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        temporary = self._folder / f".{name}.tmp"
        with temporary.open("w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self._folder / name)

    def _pending(self) -> list[tuple[str, SpooledWrite]]:
        if not self._folder.is_dir():
            return []
        return [
            (path.name, _decoded(json.loads(path.read_text(encoding="utf-8"))))
            for path in sorted(self._folder.glob("*.json"))
        ]


def _encoded(write: SpooledWrite) -> dict[str, Any]:
    message = write.message
    return {
        "conversation_id": write.conversation_id,
        "message": None
        if message is None
        else {
            "role": message.role.value,
            "text": message.text,
            "token_count": message.token_count,
            "author_id": message.author_id,
            "platform_message_id": message.platform_message_id,
            "meta": message.meta,
            "turn_id": message.turn_id,
            "images": [
                {**asdict(image), "data": base64.b64encode(image.data).decode()}
                for image in message.images
            ],
        },
        "usage": [asdict(record) for record in write.usage],
        "closes_turn": write.closes_turn,
        "failure": write.failure,
        "settles": None if write.settles is None else reservation_to_json(write.settles),
        "cost": write.cost,
    }


def _decoded(data: dict[str, Any]) -> SpooledWrite:
    raw = data["message"]
    message = None
    if raw is not None:
        images = tuple(
            PreparedImage(**{**image, "data": base64.b64decode(image["data"])})
            for image in raw["images"]
        )
        message = NewMessage(
            Role(raw["role"]),
            raw["text"],
            raw["token_count"],
            author_id=raw["author_id"],
            platform_message_id=raw["platform_message_id"],
            meta=raw["meta"],
            images=images,
            turn_id=raw["turn_id"],
        )
    usage = tuple(UsageRecord(**record) for record in data["usage"])
    settles = data.get("settles")
    return SpooledWrite(
        data["conversation_id"],
        message,
        usage,
        data.get("closes_turn"),
        data.get("failure"),
        None if settles is None else reservation_from_json(settles),
        data.get("cost", 0),
    )
