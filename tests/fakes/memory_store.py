"""``InMemoryConversationStore``: the conversation store port kept in dictionaries.

It has the SQL store's semantics (ids counting up from 1 per table, one active conversation
per key, foreign keys checked, a message and its usage rows stored together or not at all)
and passes ``tests/test_store_contract.py``, so unit tests can use it instead of a database.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from core.clock import Clock, SystemClock
from core.conversation.journal import NewTurn, OpenTurn
from core.conversation.messages import (
    Conversation,
    ConversationKey,
    NewMessage,
    PostedMessage,
    Role,
    StoredMessage,
    UserRef,
)
from core.conversation.store import Spend, UsageRecord
from core.media.ports import PreparedImage


@dataclass(frozen=True, slots=True)
class StoredUser:
    """A user row as the fake keeps it, for tests that check what ``ensure_user`` wrote."""

    id: int
    channel: str
    external_id: str
    username: str | None
    display_name: str | None


@dataclass(slots=True)
class _TurnRow:
    turn: NewTurn
    created: datetime
    owner: str | None
    until: datetime | None
    closed: bool = False
    reason: str | None = None


@dataclass(slots=True)
class _ConversationRow:
    conversation: Conversation
    active: bool


class InMemoryConversationStore:
    """A ``ConversationStore`` that forgets everything when the object goes away.

    Every method yields to the event loop once before it acts, as real I/O would, and then
    runs without awaiting, so each call is atomic the way a database transaction is.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._users: dict[tuple[str, str], StoredUser] = {}
        self._conversations: dict[int, _ConversationRow] = {}
        self._active: dict[ConversationKey, int] = {}
        self._messages: dict[int, list[StoredMessage]] = {}
        self._usage: list[tuple[datetime, UsageRecord]] = []
        self._events: set[tuple[str, str]] = set()
        self._posted: list[PostedMessage] = []
        self._turns: dict[int, _TurnRow] = {}
        self._turn_messages: dict[int, list[tuple[Role, str]]] = {}
        self._images: dict[int, tuple[int, list[PreparedImage]]] = {}
        self._rules: dict[str, str] = {}
        self._last_message_id = 0

    @property
    def users(self) -> Mapping[tuple[str, str], StoredUser]:
        """The stored users by ``(channel, external id)``."""
        return dict(self._users)

    async def ensure_user(self, user: UserRef) -> int:
        """The stored id of ``user``, creating the user or refreshing the names."""
        await asyncio.sleep(0)
        natural_key = (user.channel, user.user_id)
        existing = self._users.get(natural_key)
        user_id = existing.id if existing else len(self._users) + 1
        self._users[natural_key] = StoredUser(
            user_id, user.channel, user.user_id, user.username, user.display_name
        )
        return user_id

    async def active_conversation(self, key: ConversationKey) -> Conversation:
        """The open conversation of ``key``, created when there is none."""
        await asyncio.sleep(0)
        conversation_id = self._active.get(key)
        if conversation_id is None:
            return self._open(key)
        messages = self._messages.get(conversation_id)
        return dataclasses.replace(
            self._conversations[conversation_id].conversation,
            last_message_id=messages[-1].id if messages else None,
        )

    async def find_active(self, key: ConversationKey) -> Conversation | None:
        """The open conversation of ``key``, or None."""
        if key not in self._active:
            await asyncio.sleep(0)
            return None
        return await self.active_conversation(key)

    async def start_conversation(self, key: ConversationKey) -> Conversation:
        """Close the open conversation of ``key`` (its messages stay) and open a new one."""
        await asyncio.sleep(0)
        old_id = self._active.get(key)
        if old_id is not None:
            self._conversations[old_id].active = False
        return self._open(key)

    async def set_mode(self, conversation_id: int, mode: str | None) -> None:
        """Remember the mode chosen in a conversation; unknown ids are ignored, as in SQL."""
        await asyncio.sleep(0)
        row = self._conversations.get(conversation_id)
        if row is not None:
            row.conversation = dataclasses.replace(row.conversation, mode=mode)

    async def set_model(self, conversation_id: int, model: str | None) -> None:
        """Remember the model chosen in a conversation; unknown ids are ignored, as in SQL."""
        await asyncio.sleep(0)
        row = self._conversations.get(conversation_id)
        if row is not None:
            row.conversation = dataclasses.replace(row.conversation, model=model)

    async def replace_model(self, old: str, new: str) -> int:
        """Move every conversation that chose model ``old`` to ``new``; returns how many."""
        await asyncio.sleep(0)
        moved = [row for row in self._conversations.values() if row.conversation.model == old]
        for row in moved:
            row.conversation = dataclasses.replace(row.conversation, model=new)
        return len(moved)

    async def set_voice(self, conversation_id: int, on: bool, *, talk: bool = False) -> None:
        """Remember whether replies are spoken and voice notes answered voice-to-voice;
        unknown ids are ignored, as in SQL."""
        await asyncio.sleep(0)
        row = self._conversations.get(conversation_id)
        if row is not None:
            row.conversation = dataclasses.replace(
                row.conversation, voice=on, voice_talk=on and talk
            )

    async def add_message(
        self,
        conversation_id: int,
        message: NewMessage,
        usage: Sequence[UsageRecord] = (),
    ) -> StoredMessage:
        """Append ``message`` and its usage rows, or nothing if a reference is unknown.

        Raises:
            KeyError: the conversation, the author or a usage row's user or conversation
                does not exist (where the SQL store violates a foreign key).
        """
        await asyncio.sleep(0)
        self._require_conversation(conversation_id)
        self._require_user(message.author_id)
        for record in usage:
            self._require_user(record.user_id)
            if record.conversation_id is not None:
                self._require_conversation(record.conversation_id)
        self._last_message_id += 1
        stored = StoredMessage(
            id=self._last_message_id,
            conversation_id=conversation_id,
            role=message.role,
            text=message.text,
            token_count=message.token_count,
            created_at=self._clock.now(),
            platform_message_id=message.platform_message_id,
            image_count=len(message.images),
        )
        self._messages.setdefault(conversation_id, []).append(stored)
        if message.turn_id is not None:
            self._turn_messages.setdefault(message.turn_id, []).append((message.role, message.text))
        if message.images:
            self._images[stored.id] = (conversation_id, list(message.images))
        self._usage.extend((self._clock.now(), _copy(record)) for record in usage)
        return stored

    async def record_usage(self, usage: Sequence[UsageRecord]) -> None:
        """Store usage rows that belong to no new message."""
        await asyncio.sleep(0)
        for record in usage:
            self._require_user(record.user_id)
            if record.conversation_id is not None:
                self._require_conversation(record.conversation_id)
        self._usage.extend((self._clock.now(), _copy(record)) for record in usage)

    async def message_images(self, message_ids: Sequence[int]) -> dict[int, list[PreparedImage]]:
        """The pictures of each message, in the order they were sent."""
        await asyncio.sleep(0)
        return {i: list(self._images[i][1]) for i in message_ids if i in self._images}

    async def latest_image(self, conversation_id: int) -> PreparedImage | None:
        """The newest picture in a conversation."""
        await asyncio.sleep(0)
        for message_id in sorted(self._images, reverse=True):
            owner, images = self._images[message_id]
            if owner == conversation_id:
                return images[-1]
        return None

    async def recent_messages(
        self, conversation_id: int, *, limit: int, before_id: int | None = None
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages older than ``before_id`` (or the newest), newest first."""
        await asyncio.sleep(0)
        if limit < 0:
            raise ValueError("limit must not be negative")
        newest_first = reversed(self._messages.get(conversation_id, []))
        older = [m for m in newest_first if before_id is None or m.id < before_id]
        return older[:limit]

    async def usage(self, conversation_id: int) -> list[UsageRecord]:
        """The usage rows of one conversation, oldest first."""
        await asyncio.sleep(0)
        return [_copy(r) for _, r in self._usage if r.conversation_id == conversation_id]

    async def spending(
        self, since: datetime, user: UserRef | None = None, *, top: int = 10
    ) -> list[Spend]:
        """The total since ``since``, then the top users (or ``user``) by cost."""
        await asyncio.sleep(0)
        by_id = {row.id: row for row in self._users.values()}
        wanted = self._users.get((user.channel, user.user_id)) if user else None
        totals: dict[int, list[int]] = {}
        everyone = [0, 0]
        for when, record in self._usage:
            if when < since:
                continue
            everyone[0] += record.cost_micros
            everyone[1] += 1
            if record.user_id is not None:
                entry = totals.setdefault(record.user_id, [0, 0])
                entry[0] += record.cost_micros
                entry[1] += 1
        ranked = sorted(totals.items(), key=lambda item: (-item[1][0], item[0]))
        if user is not None:
            ranked = [(i, t) for i, t in ranked if wanted is not None and i == wanted.id]
        rows = [Spend(None, everyone[0], everyone[1])]
        for user_id, (cost, calls) in ranked[:top]:
            stored = by_id[user_id]
            ref = UserRef(stored.channel, stored.external_id, stored.username, stored.display_name)
            rows.append(Spend(ref, cost, calls))
        return rows

    async def find_users(self, username: str) -> list[UserRef]:
        """Known users with that username, case-insensitively."""
        await asyncio.sleep(0)
        wanted = username.lower()
        return [
            UserRef(u.channel, u.external_id, u.username, u.display_name)
            for u in sorted(self._users.values(), key=lambda u: u.id)
            if u.username is not None and u.username.lower() == wanted
        ]

    async def accept_turn(
        self, turn: NewTurn, event_id: str | None, owner: str, until: datetime
    ) -> int | None:
        """Record ``turn`` leased to ``owner`` and claim its event, all or nothing."""
        await asyncio.sleep(0)
        if event_id is not None:
            if (turn.key.channel, event_id) in self._events:
                return None
            self._events.add((turn.key.channel, event_id))
        turn_id = len(self._turns) + 1
        self._turns[turn_id] = _TurnRow(turn, self._clock.now(), owner, until)
        return turn_id

    async def lease_turn(self, turn_id: int, owner: str, until: datetime, now: datetime) -> bool:
        """Take or renew an open turn's lease; True if ``owner`` holds it now."""
        await asyncio.sleep(0)
        row = self._turns.get(turn_id)
        if row is None or row.closed:
            return False
        if row.owner not in (None, owner) and row.until is not None and row.until >= now:
            return False
        row.owner, row.until = owner, until
        return True

    async def close_turn(self, turn_id: int, *, failed: str | None = None) -> None:
        """The turn is over: delivered, or failed for the reason ``failed``."""
        await asyncio.sleep(0)
        row = self._turns[turn_id]
        row.closed, row.reason, row.owner, row.until = True, failed, None, None

    async def open_turns(self, now: datetime, limit: int = 100) -> list[OpenTurn]:
        """Open turns whose lease ran out by ``now``, oldest first."""
        await asyncio.sleep(0)
        found: list[OpenTurn] = []
        for turn_id, row in sorted(self._turns.items()):
            if row.closed or (row.until is not None and row.until >= now):
                continue
            messages = self._turn_messages.get(turn_id, [])
            replies = [text for role, text in messages if role == Role.ASSISTANT]
            asked = any(role == Role.USER for role, _ in messages)
            found.append(
                OpenTurn(turn_id, row.turn, row.created, asked, replies[-1] if replies else None)
            )
        return found[:limit]

    async def lease_owners(self) -> list[str]:
        """Who holds the leases of open turns."""
        await asyncio.sleep(0)
        return sorted({r.owner for r in self._turns.values() if r.owner and not r.closed})

    async def release_leases(self, owner: str) -> int:
        """Let go every lease ``owner`` holds on an open turn."""
        await asyncio.sleep(0)
        released = 0
        for row in self._turns.values():
            if row.owner == owner and not row.closed:
                row.owner, row.until = None, None
                released += 1
        return released

    async def turn_message_stored(self, turn_id: int, role: Role) -> bool:
        """Whether a message of ``role`` naming the turn is stored."""
        await asyncio.sleep(0)
        return any(stored == role for stored, _ in self._turn_messages.get(turn_id, []))

    def turn_reason(self, turn_id: int) -> tuple[bool, str | None]:
        """Whether the turn is closed, and why it failed (None: delivered), for tests."""
        row = self._turns[turn_id]
        return row.closed, row.reason

    async def claim_event(self, source: str, event_id: str) -> bool:
        """True the first time ``(source, event_id)`` is claimed, False for a redelivery."""
        await asyncio.sleep(0)
        if (source, event_id) in self._events:
            return False
        self._events.add((source, event_id))
        return True

    async def record_posted(self, key: ConversationKey, platform_message_id: str) -> PostedMessage:
        """Keep a message the bot posted in ``key``."""
        await asyncio.sleep(0)
        posted = PostedMessage(len(self._posted) + 1, key, platform_message_id)
        self._posted.append(posted)
        return posted

    async def posted(self, posted_id: int) -> PostedMessage | None:
        """A message kept by ``record_posted``, or None."""
        await asyncio.sleep(0)
        return self._posted[posted_id - 1] if 0 < posted_id <= len(self._posted) else None

    async def access_rules(self) -> dict[str, str]:
        """Admins' runtime allow and block rules by principal."""
        await asyncio.sleep(0)
        return dict(self._rules)

    async def set_access_rule(self, principal: str, rule: str | None, set_by: str) -> None:
        """Set or clear one principal's rule."""
        await asyncio.sleep(0)
        if rule is None:
            self._rules.pop(principal, None)
        else:
            self._rules[principal] = rule

    def _open(self, key: ConversationKey) -> Conversation:
        conversation = Conversation(
            id=len(self._conversations) + 1,
            key=key,
            mode=None,
            model=None,
            created_at=self._clock.now(),
        )
        self._conversations[conversation.id] = _ConversationRow(conversation, active=True)
        self._active[key] = conversation.id
        return conversation

    def _require_conversation(self, conversation_id: int) -> None:
        if conversation_id not in self._conversations:
            raise KeyError(f"no conversation {conversation_id}")

    def _require_user(self, user_id: int | None) -> None:
        # Users are never deleted, so the ids in use are exactly 1..len(users).
        if user_id is not None and not 1 <= user_id <= len(self._users):
            raise KeyError(f"no user {user_id}")


def _copy(record: UsageRecord) -> UsageRecord:
    """A copy whose ``prices`` the caller cannot change behind the store's back."""
    return dataclasses.replace(record, prices=dict(record.prices))
