"""Turn recovery: the turns a dead process left open (their lease ran out) are taken over
and finished — a stored answer is delivered, an unanswered message is answered now — with
a note that it was delayed. Run at start and periodically by the scheduler, in every
process; each turn is leased, so exactly one process finishes it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from core.clock import Clock
from core.conversation.channel import Outbox
from core.conversation.events import Notice, ReplyFailed, ReplyFinished
from core.conversation.journal import LEASE_SECONDS, OpenTurn, TurnJournal
from core.conversation.messages import IncomingMessage
from core.conversation.pipeline import Delivered, InboundPipeline
from core.conversation.spool import DurableWrites
from core.money.metering import Meter

log = logging.getLogger(__name__)

PARALLEL_RECOVERIES = 32
"""Open turns finished at once by one process."""
DELAYED = "Sorry for the wait — I was restarting. Here is my answer to your message."
FILES_LOST = (
    "Sorry — I was restarting and lost the file you sent with your last message. "
    "Please send it again."
)


class TurnRecovery:
    """Finishes the open turns whose lease ran out, for the channels running here. ``gone``
    says whether a lease owner is known to be dead (a process of this machine that no
    longer runs), so its turns need not wait for their leases to run out. With a ``meter``,
    the budget reservations dead processes left are released first, so that the turns
    answered again find their users' money free."""

    def __init__(
        self,
        journal: TurnJournal,
        outbox: Outbox,
        pipeline: InboundPipeline,
        *,
        clock: Clock,
        owner: str,
        writes: DurableWrites,
        gone: Callable[[str], bool] = lambda owner: False,
        meter: Meter | None = None,
    ) -> None:
        self._meter = meter
        self._gone = gone
        self._writes = writes
        self._journal = journal
        self._outbox = outbox
        self._pipeline = pipeline
        self._clock = clock
        self._owner = owner

    async def run_once(self) -> int:
        """Write what the spool kept, release what dead processes held, then take over and
        finish what is open now; returns how many turns were taken."""
        now = self._clock.now()
        try:
            # First the spool: a turn whose answer is spooled is answered already.
            await self._writes.replay()
            if self._meter is not None:
                await self._meter.release_abandoned(lambda o: o != self._owner and self._gone(o))
            for owner in await self._journal.lease_owners():
                if owner != self._owner and self._gone(owner):
                    released = await self._journal.release_leases(owner)
                    log.info("took over %d turns of %s, which is gone", released, owner)
            open_turns = await self._journal.open_turns(now)
        except Exception as exc:
            log.error("could not look for unfinished turns (%s); trying again later", exc)
            return 0
        taken_turns: list[OpenTurn] = []
        for open_turn in open_turns:
            if not self._outbox.reaches(open_turn.turn.key):
                continue  # another process runs that channel
            until = now + timedelta(seconds=LEASE_SECONDS)
            if await self._journal.lease_turn(open_turn.id, self._owner, until, now):
                taken_turns.append(open_turn)  # else another process took it first
        # Different conversations are finished side by side (each waits for its own
        # platform's pacing); the turn runner keeps one conversation's turns in order.
        limit = asyncio.Semaphore(PARALLEL_RECOVERIES)

        async def finish(open_turn: OpenTurn) -> None:
            async with limit:
                try:
                    await self._finish(open_turn)
                except Exception:
                    log.exception("recovering turn %d failed; tried again later", open_turn.id)

        await asyncio.gather(*(finish(open_turn) for open_turn in taken_turns))
        return len(taken_turns)

    async def _finish(self, open_turn: OpenTurn) -> None:
        turn = open_turn.turn
        reply = Delivered(self._outbox.reply(turn.key))
        log.info("recovering turn %d in %s", open_turn.id, turn.key)
        try:
            if open_turn.reply is not None:
                await reply.emit(Notice(DELAYED))
                await reply.emit(ReplyFinished(open_turn.reply))
            elif turn.has_files and not open_turn.asked:
                await reply.emit(ReplyFailed(FILES_LOST))
            else:
                await reply.start()
                await reply.emit(Notice(DELAYED))
                message = IncomingMessage(
                    turn.key,
                    turn.sender,
                    turn.text,
                    platform_message_id=turn.platform_message_id,
                    turn_id=open_turn.id,
                    stored=open_turn.asked,
                )
                await self._pipeline.answer(message, reply, turn.command)
        finally:
            await reply.close()
            await self._pipeline.close(open_turn.id, reply)
