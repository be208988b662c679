"""The turn journal port: every accepted message is a durable turn, so a process that dies
half-way loses nothing — another process (or the same one restarted) finds the turns whose
lease ran out and finishes them (``core.conversation.recovery``).

A turn is *received* when recorded (together with its platform event's dedupe, in one
transaction), *answering* while a process holds its lease, *answered* once a reply message
names it (``NewMessage.turn_id``, written with the reply and its usage), then *delivered*
or *failed* (with a reason) when it is closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from core.conversation.messages import ConversationKey, Role, UserRef

LEASE_SECONDS = 20.0
"""How long a process may work on a turn without renewing its lease."""


@dataclass(frozen=True, slots=True)
class NewTurn:
    """What is needed to answer an accepted message again: where, who, what was asked."""

    key: ConversationKey
    sender: UserRef
    text: str
    command: str | None = None
    has_files: bool = False
    platform_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class OpenTurn:
    """A turn neither delivered nor failed whose lease ran out: ``asked`` when the user's
    message is in the conversation, ``reply`` the stored answer once there is one."""

    id: int
    turn: NewTurn
    created_at: datetime
    asked: bool = False
    reply: str | None = None


class TurnJournal(Protocol):
    """Where turns are recorded (the conversation store's database)."""

    async def accept_turn(
        self, turn: NewTurn, event_id: str | None, owner: str, until: datetime
    ) -> int | None:
        """Record ``turn`` leased to ``owner`` until ``until``, and claim its platform
        ``event_id`` in the same transaction; None (and nothing written) if the event was
        claimed before — a redelivery."""

    async def lease_turn(self, turn_id: int, owner: str, until: datetime, now: datetime) -> bool:
        """Take or renew the lease of an open turn: True if ``owner`` holds it now (it was
        free, expired at ``now``, or already ``owner``'s)."""

    async def close_turn(self, turn_id: int, *, failed: str | None = None) -> None:
        """The turn is over: delivered, or failed for the reason ``failed``."""

    async def open_turns(self, now: datetime, limit: int = 100) -> list[OpenTurn]:
        """Open turns whose lease ran out by ``now``, oldest first."""

    async def lease_owners(self) -> list[str]:
        """Who holds the leases of open turns (each owner once)."""

    async def release_leases(self, owner: str) -> int:
        """Let go every lease ``owner`` holds (a process known to be dead); returns how
        many turns are free now."""

    async def turn_message_stored(self, turn_id: int, role: Role) -> bool:
        """Whether a message of ``role`` naming the turn is stored (its question, its
        answer)."""
