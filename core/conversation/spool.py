"""Nothing unrecorded: what a turn must write at its end — the reply and its usage rows, or
usage alone, and the settle of its budget reservations — is retried while the database is
briefly away and, if it stays away, kept in a local spool and written when it returns
(``DurableWrites``). The spool is a port (``ReplySpool``); ``core.storage.file_spool``
keeps it in files."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from core.conversation.journal import TurnJournal
from core.conversation.messages import NewMessage, StoredMessage
from core.conversation.store import ConversationStore, UsageRecord
from core.errors import StorageUnavailable
from core.money.budgets import BudgetLedger, Reservation

log = logging.getLogger(__name__)
_T = TypeVar("_T")

RETRY_SECONDS = 15.0
"""How long a write is retried before it is spooled."""


@dataclass(frozen=True)
class SpooledWrite:
    """A write that could not be made: a message (with its usage), usage alone, the end
    of a turn (``closes_turn``, failed for ``failure`` or else delivered), or the settle of
    a budget reservation (``settles``, to ``cost``)."""

    conversation_id: int | None
    message: NewMessage | None
    usage: tuple[UsageRecord, ...] = ()
    closes_turn: int | None = None
    failure: str | None = None
    settles: Reservation | None = None
    cost: int = 0


class ReplySpool(Protocol):
    """Local storage for writes waiting for the database."""

    async def keep(self, write: SpooledWrite) -> None:
        """Keep ``write`` durably (it survives a restart of the process)."""

    async def pending(self) -> list[tuple[str, SpooledWrite]]:
        """The writes kept, oldest first, each with its name."""

    async def remove(self, name: str) -> None:
        """Forget a write once it is in the database."""


class DurableWrites:
    """The end-of-turn writes: retried with backoff, spooled if the database stays away,
    replayed (once each) when it is back."""

    def __init__(
        self,
        store: ConversationStore,
        journal: TurnJournal,
        spool: ReplySpool,
        *,
        retry_seconds: float = RETRY_SECONDS,
        first_delay: float = 0.25,
        ledger: BudgetLedger | None = None,
    ) -> None:
        self._ledger = ledger
        self._store = store
        self._journal = journal
        self._spool = spool
        self._retry_seconds = retry_seconds
        self._first_delay = first_delay

    async def add_message(
        self, conversation_id: int, message: NewMessage, usage: Sequence[UsageRecord] = ()
    ) -> StoredMessage | None:
        """Store ``message`` and ``usage``; None when they went to the spool instead."""
        write = SpooledWrite(conversation_id, message, tuple(usage))
        return await self._retried(write)

    async def record_usage(self, usage: Sequence[UsageRecord]) -> None:
        """Store usage rows of no message (a spoken reply)."""
        if usage:
            await self._retried(SpooledWrite(None, None, tuple(usage)))

    async def close_turn(self, turn_id: int, *, failed: str | None = None) -> None:
        """Close a turn (delivered, or failed): kept for later too, so a reply the user saw
        is never delivered again once the database is back."""
        await self._retried(SpooledWrite(None, None, closes_turn=turn_id, failure=failed))

    async def settle_later(self, reservation: Reservation, cost: int) -> None:
        """Keep the settle of ``reservation`` to ``cost`` for when the database is back (the
        meter tried it already): not retried here, so the user's answer is not held up. A
        held reservation settles once, so a settle written twice counts once."""
        await self._spool.keep(SpooledWrite(None, None, settles=reservation, cost=cost))

    async def replay(self) -> int:
        """Write what the spool holds, if the database is back; returns how many were
        written. A message whose turn already has its answer stored is not written twice."""
        written = 0
        for name, write in await self._spool.pending():
            try:
                if not await self._already_stored(write):
                    await self._write(write)
                    written += 1
            except StorageUnavailable:
                return written  # still away: try again on the next round
            await self._spool.remove(name)
        if written:
            log.info("wrote %d spooled replies or usage rows to the database", written)
        return written

    async def attempt(self, write: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``write``, retried with backoff while the database is away, for as long as
        the end-of-turn writes are; ``StorageUnavailable`` if it stays away. For a write
        nothing can go on without (recording an incoming message)."""
        delay = self._first_delay
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_seconds
        while True:
            try:
                return await write()
            except StorageUnavailable:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _retried(self, write: SpooledWrite) -> StoredMessage | None:
        try:
            return await self.attempt(lambda: self._write(write))
        except StorageUnavailable as exc:
            await self._spool.keep(write)
            log.error("database unavailable (%s); the write is spooled", exc)
            return None

    async def _write(self, write: SpooledWrite) -> StoredMessage | None:
        if write.settles is not None:
            if self._ledger is None:
                raise StorageUnavailable("no budget ledger to settle the reservation with")
            await self._ledger.settle(write.settles, write.cost)
            return None
        if write.closes_turn is not None:
            await self._journal.close_turn(write.closes_turn, failed=write.failure)
            return None
        if write.message is None:
            await self._store.record_usage(write.usage)
            return None
        assert write.conversation_id is not None
        return await self._store.add_message(write.conversation_id, write.message, write.usage)

    async def _already_stored(self, write: SpooledWrite) -> bool:
        message = write.message
        if message is None or message.turn_id is None:
            return False
        return await self._journal.turn_message_stored(message.turn_id, message.role)
