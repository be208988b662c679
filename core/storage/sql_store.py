"""``ConversationStore`` on SQLAlchemy 2 async (Core statements), for SQLite and PostgreSQL.

Core statements rather than ORM units of work: a turn makes four or five small queries, and
the ORM's bookkeeping was most of their cost (see bench/RESULTS.md).
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SqlTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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
from core.errors import StorageUnavailable
from core.media.ports import PreparedImage
from core.storage.database import broken_query, in_sqlite_connection, sqlite_transaction
from core.storage.schema import (
    AccessRuleRow,
    ConversationRow,
    MessageImageRow,
    MessageRow,
    PostedMessageRow,
    ProcessedEventRow,
    TurnRow,
    UsageRow,
    UserRow,
)

USER_CACHE_SIZE = 10_000

_messages = cast(Table, MessageRow.__table__)
_conversations = cast(Table, ConversationRow.__table__)
_usage_rows = cast(Table, UsageRow.__table__)
_images = cast(Table, MessageImageRow.__table__)
_events = cast(Table, ProcessedEventRow.__table__)
_turns = cast(Table, TurnRow.__table__)
_T = TypeVar("_T")
# How SQLAlchemy's SQLite dialect stores a DateTime (timezone dropped; ours are UTC).
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"

_MESSAGE_COLUMNS = (
    MessageRow.id,
    MessageRow.conversation_id,
    MessageRow.role,
    MessageRow.text,
    MessageRow.token_count,
    MessageRow.created_at,
    MessageRow.platform_message_id,
    MessageRow.image_count,
)
_CONVERSATION_COLUMNS = (
    ConversationRow.id,
    ConversationRow.mode,
    ConversationRow.model,
    ConversationRow.voice,
    ConversationRow.voice_talk,
    ConversationRow.created_at,
)


# The statements of every turn, built once: constructing statements per call was a visible
# share of a turn's cost. Values are bound at execution.
_INSERT_MESSAGE = insert(_messages).returning(_messages.c.id)
_INSERT_USAGE = insert(_usage_rows)
_ACTIVE_CONVERSATION = select(
    *_CONVERSATION_COLUMNS,
    select(func.max(_messages.c.id))
    .where(_messages.c.conversation_id == _conversations.c.id)
    .scalar_subquery()
    .label("last_message_id"),
).where(_conversations.c.key == bindparam("key"), _conversations.c.active)


_SQLITE_ACTIVE_CONVERSATION = str(_ACTIVE_CONVERSATION.compile(dialect=sqlite.dialect()))
"""The active conversation's query as SQLite runs it (the columns of
``_CONVERSATION_COLUMNS``, then ``last_message_id``)."""


class SqlConversationStore:
    """Conversation state in a relational database through an ``AsyncEngine``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect: Any = postgresql if engine.dialect.name == "postgresql" else sqlite
        # What reads go through (the PostgreSQL store reads in autocommit).
        self._reads = engine
        # Users change rarely; remembering them saves a query on every turn.
        self._users: dict[tuple[str, str], tuple[int, UserRef]] = {}

    async def ensure_user(self, user: UserRef) -> int:
        """The stored id of ``user``, creating the row or refreshing changed names.

        This process remembers what it last wrote per user, so an unchanged user costs no
        query; a name changed since (as this process sees the user) is written again.
        """
        cached = self._users.get((user.channel, user.user_id))
        if cached is not None and cached[1] == user:
            return cached[0]
        where = (UserRow.channel == user.channel, UserRow.external_id == user.user_id)
        async with self._engine.begin() as connection:
            await connection.execute(
                self._dialect.insert(UserRow)
                .values(
                    channel=user.channel,
                    external_id=user.user_id,
                    username=user.username,
                    display_name=user.display_name,
                )
                .on_conflict_do_nothing()
            )
            await connection.execute(
                update(UserRow)
                .where(*where)
                .values(username=user.username, display_name=user.display_name)
            )
            found = await connection.execute(select(UserRow.id).where(*where))
            user_id = int(found.scalar_one())
        if len(self._users) >= USER_CACHE_SIZE:
            self._users.clear()
        self._users[(user.channel, user.user_id)] = (user_id, user)
        return user_id

    async def active_conversation(self, key: ConversationKey) -> Conversation:
        """The open conversation of ``key``, created when missing."""
        async with self._reads.connect() as connection:
            row = await self._active_row(connection, key)
            if row is None:
                await connection.execute(
                    self._dialect.insert(ConversationRow)
                    .values(key=str(key), channel=key.channel, active=True)
                    .on_conflict_do_nothing()
                )
                await connection.commit()
                row = await self._active_row(connection, key)
            await connection.rollback()
        assert row is not None
        return _conversation(row, key)

    async def find_active(self, key: ConversationKey) -> Conversation | None:
        """The open conversation of ``key``, or None."""
        async with self._reads.connect() as connection:
            row = await self._active_row(connection, key)
            await connection.rollback()
        return None if row is None else _conversation(row, key)

    async def start_conversation(self, key: ConversationKey) -> Conversation:
        """Close the open conversation of ``key`` and open a new one.

        Resets of one key are serialised (on PostgreSQL by a transaction-scoped advisory
        lock; SQLite has one writer anyway), so each opens its own conversation. A reset
        racing the very first message of a key yields to it (ON CONFLICT DO NOTHING).
        """
        async with self._engine.begin() as connection:
            if self._dialect is postgresql:
                await connection.execute(
                    select(func.pg_advisory_xact_lock(func.hashtext(str(key))))
                )
            await connection.execute(
                update(ConversationRow)
                .where(ConversationRow.key == str(key), ConversationRow.active)
                .values(active=False)
            )
            result = await connection.execute(
                self._dialect.insert(ConversationRow)
                .values(key=str(key), channel=key.channel, active=True)
                .on_conflict_do_nothing()
                .returning(*_CONVERSATION_COLUMNS)
            )
            row = result.one_or_none()
            if row is None:
                row = await self._active_row(connection, key)
        return _conversation(row, key)

    async def set_mode(self, conversation_id: int, mode: str | None) -> None:
        """Remember the mode chosen in a conversation."""
        await self._update_conversation(conversation_id, mode=mode)

    async def set_model(self, conversation_id: int, model: str | None) -> None:
        """Remember the model chosen in a conversation."""
        await self._update_conversation(conversation_id, model=model)

    async def replace_model(self, old: str, new: str) -> int:
        """Move every conversation that chose model ``old`` to ``new``; returns how many."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(ConversationRow).where(ConversationRow.model == old).values(model=new)
            )
        return result.rowcount

    async def set_voice(self, conversation_id: int, on: bool, *, talk: bool = False) -> None:
        """Remember whether replies in a conversation are also spoken, and whether voice
        notes are answered voice-to-voice (``talk``, only with ``on``)."""
        await self._update_conversation(conversation_id, voice=on, voice_talk=on and talk)

    async def add_message(
        self,
        conversation_id: int,
        message: NewMessage,
        usage: Sequence[UsageRecord] = (),
    ) -> StoredMessage:
        """Append ``message``, its pictures and its usage rows in one transaction."""
        created_at = datetime.now(UTC)
        async with _reachable(), self._engine.begin() as connection:
            result = await connection.execute(
                _INSERT_MESSAGE, _message_values(conversation_id, message, created_at)
            )
            message_id = int(result.scalar_one())
            if message.images:
                await connection.execute(
                    insert(_images),
                    [
                        {
                            "message_id": message_id,
                            "position": position,
                            "conversation_id": conversation_id,
                            "mime_type": image.mime_type,
                            "width": image.width,
                            "height": image.height,
                            "data": image.data,
                        }
                        for position, image in enumerate(message.images)
                    ],
                )
            if usage:
                await connection.execute(_INSERT_USAGE, [usage_values(r) for r in usage])
        return _stored(message_id, conversation_id, message, created_at)

    async def record_usage(self, usage: Sequence[UsageRecord]) -> None:
        """Store usage rows that belong to no new message."""
        if not usage:
            return
        async with _reachable(), self._engine.begin() as connection:
            await connection.execute(_INSERT_USAGE, [usage_values(r) for r in usage])

    async def message_images(self, message_ids: Sequence[int]) -> dict[int, list[PreparedImage]]:
        """The pictures of each message, in the order they were sent."""
        if not message_ids:
            return {}
        query = (
            select(_images)
            .where(_images.c.message_id.in_(list(message_ids)))
            .order_by(_images.c.message_id, _images.c.position)
        )
        async with self._reads.connect() as connection:
            rows = (await connection.execute(query)).all()
            await connection.rollback()
        found: dict[int, list[PreparedImage]] = {}
        for row in rows:
            found.setdefault(row.message_id, []).append(_image(row))
        return found

    async def latest_image(self, conversation_id: int) -> PreparedImage | None:
        """The newest picture in a conversation."""
        query = (
            select(_images)
            .where(_images.c.conversation_id == conversation_id)
            .order_by(_images.c.message_id.desc(), _images.c.position.desc())
            .limit(1)
        )
        async with self._reads.connect() as connection:
            row = (await connection.execute(query)).one_or_none()
            await connection.rollback()
        return None if row is None else _image(row)

    async def recent_messages(
        self, conversation_id: int, *, limit: int, before_id: int | None = None
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages before ``before_id`` (or the newest), newest first."""
        query = select(*_MESSAGE_COLUMNS).where(MessageRow.conversation_id == conversation_id)
        if before_id is not None:
            query = query.where(MessageRow.id < before_id)
        query = query.order_by(MessageRow.id.desc()).limit(limit)
        async with self._reads.connect() as connection:
            rows = (await connection.execute(query)).all()
            await connection.rollback()
        return [_message(row) for row in rows]

    async def usage(self, conversation_id: int) -> list[UsageRecord]:
        """The usage rows of one conversation, oldest first."""
        query = (
            select(UsageRow)
            .where(UsageRow.conversation_id == conversation_id)
            .order_by(UsageRow.id)
        )
        async with self._reads.connect() as connection:
            rows = (await connection.execute(query)).all()
            await connection.rollback()
        return [
            UsageRecord(
                user_id=row.user_id,
                conversation_id=row.conversation_id,
                kind=row.kind,
                model=row.model,
                input_tokens=row.input_tokens,
                cached_input_tokens=row.cached_input_tokens,
                output_tokens=row.output_tokens,
                units=row.units,
                unit=row.unit,
                cost_micros=row.cost_micros,
                prices={str(k): int(v) for k, v in row.prices.items()},
                request_id=row.request_id,
            )
            for row in rows
        ]

    async def spending(
        self, since: datetime, user: UserRef | None = None, *, top: int = 10
    ) -> list[Spend]:
        """The total since ``since``, then the top users (or ``user``) by cost."""
        recent = _usage_rows.c.created_at >= since.astimezone(UTC)
        total = select(func.coalesce(func.sum(_usage_rows.c.cost_micros), 0), func.count()).where(
            recent
        )
        cost = func.sum(_usage_rows.c.cost_micros).label("cost")
        ranked = (
            select(
                UserRow.channel,
                UserRow.external_id,
                UserRow.username,
                UserRow.display_name,
                cost,
                func.count().label("calls"),
            )
            .join(UserRow, UserRow.id == _usage_rows.c.user_id)
            .where(recent)
            .group_by(UserRow.id)
            .order_by(cost.desc(), UserRow.id)
            .limit(top)
        )
        if user is not None:
            ranked = ranked.where(
                UserRow.channel == user.channel, UserRow.external_id == user.user_id
            )
        async with self._reads.connect() as connection:
            everyone = (await connection.execute(total)).one()
            rows = (await connection.execute(ranked)).all()
            await connection.rollback()
        return [
            Spend(None, int(everyone[0]), int(everyone[1])),
            *(
                Spend(
                    UserRef(row.channel, row.external_id, row.username, row.display_name),
                    int(row.cost),
                    int(row.calls),
                )
                for row in rows
            ),
        ]

    async def find_users(self, username: str) -> list[UserRef]:
        """Known users with that username, case-insensitively."""
        query = (
            select(UserRow.channel, UserRow.external_id, UserRow.username, UserRow.display_name)
            .where(func.lower(UserRow.username) == username.lower())
            .order_by(UserRow.id)
        )
        async with self._reads.connect() as connection:
            rows = (await connection.execute(query)).all()
            await connection.rollback()
        return [UserRef(r.channel, r.external_id, r.username, r.display_name) for r in rows]

    async def claim_event(self, source: str, event_id: str) -> bool:
        """True the first time an event id is seen, False for a redelivery."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                self._dialect.insert(ProcessedEventRow)
                .values(source=source, event_id=event_id, created_at=datetime.now(UTC))
                .on_conflict_do_nothing()
            )
            return bool(result.rowcount)

    async def accept_turn(
        self, turn: NewTurn, event_id: str | None, owner: str, until: datetime
    ) -> int | None:
        """Record ``turn`` leased to ``owner`` and claim its event, in one transaction;
        None for a redelivered event."""
        async with _reachable(), self._engine.begin() as connection:
            if event_id is not None:
                claimed = await connection.execute(
                    self._dialect.insert(ProcessedEventRow)
                    .values(source=turn.key.channel, event_id=event_id, created_at=_now())
                    .on_conflict_do_nothing()
                )
                if not claimed.rowcount:
                    return None
            turn_id = await connection.scalar(
                insert(_turns).values(_turn_values(turn, owner, until)).returning(_turns.c.id)
            )
        assert turn_id is not None
        return int(turn_id)

    async def lease_turn(self, turn_id: int, owner: str, until: datetime, now: datetime) -> bool:
        """Take or renew an open turn's lease; True if ``owner`` holds it now."""
        async with self._engine.begin() as connection:
            result = await connection.execute(_lease(turn_id, owner, until, now))
        return bool(result.rowcount)

    async def close_turn(self, turn_id: int, *, failed: str | None = None) -> None:
        """The turn is over: delivered, or failed for the reason ``failed``."""
        async with _reachable(), self._engine.begin() as connection:
            await connection.execute(_close(turn_id, failed))

    async def open_turns(self, now: datetime, limit: int = 100) -> list[OpenTurn]:
        """Open turns whose lease ran out by ``now``, oldest first, with what got stored."""
        asked = (
            select(func.count())
            .where(_messages.c.turn_id == _turns.c.id, _messages.c.role == Role.USER.value)
            .scalar_subquery()
        )
        reply = (
            select(_messages.c.text)
            .where(_messages.c.turn_id == _turns.c.id, _messages.c.role == Role.ASSISTANT.value)
            .order_by(_messages.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        query = (
            select(_turns, asked.label("asked"), reply.label("reply"))
            .where(
                _turns.c.delivered_at.is_(None),
                _turns.c.failed_at.is_(None),
                or_(_turns.c.lease_until.is_(None), _turns.c.lease_until < now),
            )
            .order_by(_turns.c.id)
            .limit(limit)
        )
        async with self._reads.connect() as connection:
            rows = (await connection.execute(query)).all()
            await connection.rollback()
        return [
            OpenTurn(
                id=row.id,
                turn=NewTurn(
                    ConversationKey(row.channel, row.place, row.scope, row.thread),
                    UserRef(row.channel, row.sender_id, row.sender_name),
                    row.text,
                    row.command,
                    row.has_files,
                    row.platform_message_id,
                ),
                created_at=_aware(row.created_at),
                asked=bool(row.asked),
                reply=row.reply,
            )
            for row in rows
        ]

    async def lease_owners(self) -> list[str]:
        """Who holds the leases of open turns."""
        query = (
            select(_turns.c.lease_owner)
            .where(
                _turns.c.delivered_at.is_(None),
                _turns.c.failed_at.is_(None),
                _turns.c.lease_owner.is_not(None),
            )
            .distinct()
        )
        async with self._reads.connect() as connection:
            owners = (await connection.execute(query)).scalars().all()
            await connection.rollback()
        return [str(owner) for owner in owners]

    async def release_leases(self, owner: str) -> int:
        """Let go every lease ``owner`` holds on an open turn."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(_turns)
                .where(
                    _turns.c.lease_owner == owner,
                    _turns.c.delivered_at.is_(None),
                    _turns.c.failed_at.is_(None),
                )
                .values(lease_owner=None, lease_until=None)
            )
        return int(result.rowcount)

    async def turn_message_stored(self, turn_id: int, role: Role) -> bool:
        """Whether a message of ``role`` naming the turn is stored."""
        query = select(_messages.c.id).where(
            _messages.c.turn_id == turn_id, _messages.c.role == role.value
        )
        async with _reachable(), self._reads.connect() as connection:
            found = (await connection.execute(query.limit(1))).first()
            await connection.rollback()
        return found is not None

    async def record_posted(self, key: ConversationKey, platform_message_id: str) -> PostedMessage:
        """Keep a message the bot posted in ``key`` (a status message it may edit later)."""
        async with self._engine.begin() as connection:
            posted_id = await connection.scalar(
                insert(PostedMessageRow)
                .values(
                    channel=key.channel,
                    scope=key.scope,
                    place=key.place,
                    thread=key.thread,
                    platform_message_id=platform_message_id,
                    created_at=datetime.now(UTC),
                )
                .returning(PostedMessageRow.id)
            )
        assert posted_id is not None
        return PostedMessage(posted_id, key, platform_message_id)

    async def posted(self, posted_id: int) -> PostedMessage | None:
        """A message kept by ``record_posted``, or None."""
        async with self._reads.connect() as connection:
            row = (
                await connection.execute(
                    select(PostedMessageRow).where(PostedMessageRow.id == posted_id)
                )
            ).first()
            await connection.rollback()
        if row is None:
            return None
        key = ConversationKey(row.channel, row.place, row.scope, row.thread)
        return PostedMessage(row.id, key, row.platform_message_id)

    async def access_rules(self) -> dict[str, str]:
        """Admins' runtime allow and block rules by principal."""
        async with self._reads.connect() as connection:
            rows = (
                await connection.execute(select(AccessRuleRow.principal, AccessRuleRow.rule))
            ).all()
            await connection.rollback()
        return {row.principal: row.rule for row in rows}

    async def set_access_rule(self, principal: str, rule: str | None, set_by: str) -> None:
        """Set or clear one principal's rule."""
        where = AccessRuleRow.principal == principal
        async with self._engine.begin() as connection:
            if rule is None:
                await connection.execute(delete(AccessRuleRow).where(where))
                return
            values = {"rule": rule, "set_by": set_by, "updated_at": datetime.now(UTC)}
            await connection.execute(
                self._dialect.insert(AccessRuleRow)
                .values(principal=principal, **values)
                .on_conflict_do_update(index_elements=[AccessRuleRow.principal], set_=values)
            )

    async def _active_row(self, connection: AsyncConnection, key: ConversationKey) -> Any:
        return (await connection.execute(_ACTIVE_CONVERSATION, {"key": str(key)})).one_or_none()

    async def _update_conversation(self, conversation_id: int, **values: Any) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(ConversationRow)
                .where(ConversationRow.id == conversation_id)
                .values(**values)
            )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _conversation(row: Any, key: ConversationKey) -> Conversation:
    last = row.last_message_id if "last_message_id" in row._fields else None
    return Conversation(
        row.id,
        key,
        row.mode,
        row.model,
        _aware(row.created_at),
        last,
        voice=bool(row.voice),
        voice_talk=bool(row.voice_talk),
    )


def _message(row: Any) -> StoredMessage:
    return StoredMessage(
        id=row.id,
        conversation_id=row.conversation_id,
        role=Role(row.role),
        text=row.text,
        token_count=row.token_count,
        created_at=_aware(row.created_at),
        platform_message_id=row.platform_message_id,
        image_count=row.image_count,
    )


def _image(row: Any) -> PreparedImage:
    return PreparedImage(bytes(row.data), row.mime_type, row.width, row.height)


def _message_values(
    conversation_id: int, message: NewMessage, created_at: datetime
) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "role": message.role.value,
        "text": message.text,
        "parts": message.meta,
        "token_count": message.token_count,
        "image_count": len(message.images),
        "author_id": message.author_id,
        "platform_message_id": message.platform_message_id,
        "turn_id": message.turn_id,
        "created_at": created_at,
    }


_OUTAGES = (OperationalError, InterfaceError, SqlTimeoutError, OSError, sqlite3.OperationalError)


@asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    """Database outages (down, unreachable, locked, connections cut) as the core's
    ``StorageUnavailable``; other errors (a broken reference) stay as they are."""
    try:
        yield
    except IntegrityError:
        raise
    except (
        OperationalError,
        InterfaceError,
        SqlTimeoutError,
        OSError,
        sqlite3.OperationalError,
    ) as exc:
        if broken_query(exc):
            raise
        raise StorageUnavailable(str(exc).splitlines()[0][:200]) from exc
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        raise StorageUnavailable(str(exc).splitlines()[0][:200]) from exc


def _now() -> datetime:
    return datetime.now(UTC)


def _turn_values(turn: NewTurn, owner: str, until: datetime) -> dict[str, Any]:
    return {
        "channel": turn.key.channel,
        "scope": turn.key.scope,
        "place": turn.key.place,
        "thread": turn.key.thread,
        "sender_id": turn.sender.user_id,
        "sender_name": turn.sender.username,
        "text": turn.text,
        "command": turn.command,
        "has_files": turn.has_files,
        "platform_message_id": turn.platform_message_id,
        "lease_owner": owner,
        "lease_until": until,
        "created_at": _now(),
    }


def _lease(turn_id: int, owner: str, until: datetime, now: datetime) -> Any:
    """The update that takes or renews an open turn's lease for ``owner``."""
    return (
        update(_turns)
        .where(
            _turns.c.id == turn_id,
            _turns.c.delivered_at.is_(None),
            _turns.c.failed_at.is_(None),
            or_(
                _turns.c.lease_owner.is_(None),
                _turns.c.lease_owner == owner,
                _turns.c.lease_until < now,
            ),
        )
        .values(lease_owner=owner, lease_until=until)
    )


def _close(turn_id: int, failed: str | None) -> Any:
    """The update that closes a turn: delivered, or failed for the reason ``failed``."""
    values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
    if failed is None:
        values["delivered_at"] = _now()
    else:
        values.update(failed_at=_now(), reason=failed[:1000])
    return update(_turns).where(_turns.c.id == turn_id).values(values)


def _stored(
    message_id: int, conversation_id: int, message: NewMessage, created_at: datetime
) -> StoredMessage:
    return StoredMessage(
        id=message_id,
        conversation_id=conversation_id,
        role=message.role,
        text=message.text,
        token_count=message.token_count,
        created_at=created_at,
        platform_message_id=message.platform_message_id,
        image_count=len(message.images),
    )


def usage_values(record: UsageRecord) -> dict[str, Any]:
    """A usage row's column values (shared with the job store)."""
    return {
        "user_id": record.user_id,
        "conversation_id": record.conversation_id,
        "kind": record.kind,
        "model": record.model,
        "input_tokens": record.input_tokens,
        "cached_input_tokens": record.cached_input_tokens,
        "output_tokens": record.output_tokens,
        "units": record.units,
        "unit": record.unit,
        "cost_micros": record.cost_micros,
        "prices": dict(record.prices),
        "request_id": record.request_id,
        "created_at": datetime.now(UTC),
    }


class SqliteConversationStore(SqlConversationStore):
    """The store on SQLite: the writes every turn makes (claiming the update, appending
    the two messages and the usage) run as one function in the connection's own thread.

    With SQLite's single pooled connection, a write through SQLAlchemy holds the connection
    over several hand-offs between the event loop and aiosqlite's thread (cursor, execute,
    fetch, commit); under load each hand-off waits for a turn of a busy event loop, and
    the connection, not the CPU, limits the turns per second. One hop holds it for one
    hand-off. The rows written are the same as the portable store's (the contract suite
    runs on both).
    """

    async def claim_event(self, source: str, event_id: str) -> bool:
        """True the first time an event id is seen, False for a redelivery."""
        row = {"source": source, "event_id": event_id, "created_at": datetime.now(UTC)}

        def claim(connection: sqlite3.Connection) -> bool:
            with sqlite_transaction(connection):
                inserted = _sqlite_insert(connection, _events, [row], ignore_conflict=True)
                return inserted.rowcount > 0

        return await self._write(claim)

    async def active_conversation(self, key: ConversationKey) -> Conversation:
        """The open conversation of ``key``, read as one function in the connection's
        thread (every turn reads it); created by the portable path when missing."""

        def read(connection: sqlite3.Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = connection.execute(
                _SQLITE_ACTIVE_CONVERSATION, (str(key),)
            ).fetchone()
            return row

        async with _reachable():
            row = await in_sqlite_connection(self._engine, read)
        if row is None:
            return await super().active_conversation(key)
        conversation_id, mode, model, voice, voice_talk, created_at, last = row
        return Conversation(
            conversation_id,
            key,
            mode,
            model,
            _aware(datetime.fromisoformat(created_at)),
            last,
            voice=bool(voice),
            voice_talk=bool(voice_talk),
        )

    async def accept_turn(
        self, turn: NewTurn, event_id: str | None, owner: str, until: datetime
    ) -> int | None:
        """Claim the event and record the turn as one function in the connection's thread."""
        event = {"source": turn.key.channel, "event_id": event_id, "created_at": _now()}
        values = _turn_values(turn, owner, until)

        def accept(connection: sqlite3.Connection) -> int | None:
            with sqlite_transaction(connection):
                if event_id is not None:
                    claimed = _sqlite_insert(connection, _events, [event], ignore_conflict=True)
                    if claimed.rowcount == 0:
                        return None
                inserted = _sqlite_insert(connection, _turns, [values])
                assert inserted.lastrowid is not None
                return inserted.lastrowid

        return await self._write(accept)

    async def close_turn(self, turn_id: int, *, failed: str | None = None) -> None:
        """Close the turn as one function in the connection's thread (every turn does)."""
        now = _sqlite_value(_turns.c.delivered_at, _now())
        if failed is None:
            sql = "UPDATE turns SET lease_owner = NULL, lease_until = NULL, delivered_at = ?"
            params: tuple[object, ...] = (now, turn_id)
        else:
            sql = (
                "UPDATE turns SET lease_owner = NULL, lease_until = NULL, failed_at = ?, reason = ?"
            )
            params = (now, failed[:1000], turn_id)

        def close(connection: sqlite3.Connection) -> None:
            with sqlite_transaction(connection):
                connection.execute(f"{sql} WHERE id = ?", params)

        await self._write(close)

    async def add_message(
        self,
        conversation_id: int,
        message: NewMessage,
        usage: Sequence[UsageRecord] = (),
    ) -> StoredMessage:
        """Append ``message`` and its usage rows in one transaction (messages with
        pictures take the portable path)."""
        if message.images:
            return await super().add_message(conversation_id, message, usage)
        created_at = datetime.now(UTC)
        values = _message_values(conversation_id, message, created_at)
        usage_rows = [usage_values(record) for record in usage]

        def append(connection: sqlite3.Connection) -> int:
            with sqlite_transaction(connection):
                inserted = _sqlite_insert(connection, _messages, [values])
                if usage_rows:
                    _sqlite_insert(connection, _usage_rows, usage_rows)
                assert inserted.lastrowid is not None
                return inserted.lastrowid

        message_id = await self._write(append)
        return _stored(message_id, conversation_id, message, created_at)

    async def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in the connection's thread; a broken reference raises SQLAlchemy's
        ``IntegrityError``, as on the portable path."""
        try:
            async with _reachable():
                return await in_sqlite_connection(self._engine, work)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(None, None, exc) from exc


_TURN_FIELDS = tuple(
    _turn_values(NewTurn(ConversationKey("", ""), UserRef("", ""), ""), "", _now())
)
_MESSAGE_FIELDS = tuple(_message_values(0, NewMessage(Role.USER, "", 0), _now()))
_USAGE_FIELDS = tuple(usage_values(UsageRecord(None, None, "", "")))


def _bound(table: Table, names: Sequence[str], prefix: str = "") -> dict[str, Any]:
    """``table``'s columns ``names`` as typed bind parameters (``prefix`` + name)."""
    return {name: bindparam(prefix + name, type_=table.c[name].type) for name in names}


# PostgreSQL: each of a turn's writes as one statement (data-modifying CTEs).
_CLAIMED = (
    postgresql.insert(_events)
    .values(
        source=bindparam("channel"),
        event_id=bindparam("event_id"),
        created_at=bindparam("created_at"),
    )
    .on_conflict_do_nothing()
    .returning(_events.c.event_id)
    .cte("claimed")
)
_ACCEPT_CLAIMED_TURN = (
    insert(_turns)
    .from_select(
        _TURN_FIELDS,
        select(*_bound(_turns, _TURN_FIELDS).values()).where(exists(_CLAIMED.select())),
    )
    .returning(_turns.c.id)
)
"""The event claimed and the turn recorded; no row when the event was claimed before."""
_INSERT_TURN = insert(_turns).values(_bound(_turns, _TURN_FIELDS)).returning(_turns.c.id)
_STORED = insert(_messages).values(_bound(_messages, _MESSAGE_FIELDS)).returning(_messages.c.id)
_ADD_MESSAGE_WITH_USAGE = select(_STORED.cte("stored").c.id).add_cte(
    insert(_usage_rows).values(_bound(_usage_rows, _USAGE_FIELDS, "usage_")).cte("charged")
)
"""A message and its one usage row."""


class PostgresConversationStore(SqlConversationStore):
    """The store on PostgreSQL: each write of a turn (accepting it, appending a message
    with its usage, closing it) is one statement, and reads are single statements, all
    sent in autocommit: one round trip each instead of ``BEGIN`` … ``COMMIT`` around them.
    A statement is atomic on its own, so the rows written are the same as the portable
    store's, written all or not at all (the contract suite runs on both)."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._reads = self._single = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def claim_event(self, source: str, event_id: str) -> bool:
        """True the first time an event id is seen, False for a redelivery."""
        async with self._single.connect() as connection:
            result = await connection.execute(
                postgresql.insert(ProcessedEventRow)
                .values(source=source, event_id=event_id, created_at=_now())
                .on_conflict_do_nothing()
            )
        return bool(result.rowcount)

    async def accept_turn(
        self, turn: NewTurn, event_id: str | None, owner: str, until: datetime
    ) -> int | None:
        """Claim the event and record the turn in one statement; None for a redelivery."""
        values = _turn_values(turn, owner, until)
        if event_id is None:
            statement = _INSERT_TURN
        else:
            statement, values["event_id"] = _ACCEPT_CLAIMED_TURN, event_id
        async with _reachable(), self._single.connect() as connection:
            turn_id = await connection.scalar(statement, values)
        return None if turn_id is None else int(turn_id)

    async def lease_turn(self, turn_id: int, owner: str, until: datetime, now: datetime) -> bool:
        """Take or renew an open turn's lease (one statement)."""
        async with self._single.connect() as connection:
            result = await connection.execute(_lease(turn_id, owner, until, now))
        return bool(result.rowcount)

    async def close_turn(self, turn_id: int, *, failed: str | None = None) -> None:
        """Close the turn (one statement)."""
        async with _reachable(), self._single.connect() as connection:
            await connection.execute(_close(turn_id, failed))

    async def add_message(
        self,
        conversation_id: int,
        message: NewMessage,
        usage: Sequence[UsageRecord] = (),
    ) -> StoredMessage:
        """Append ``message`` with its usage row in one statement (a message with pictures
        or several usage rows takes the portable path)."""
        if message.images or len(usage) > 1:
            return await super().add_message(conversation_id, message, usage)
        created_at = _now()
        values = _message_values(conversation_id, message, created_at)
        statement: Any = _INSERT_MESSAGE
        if usage:
            statement = _ADD_MESSAGE_WITH_USAGE
            values.update({f"usage_{k}": v for k, v in usage_values(usage[0]).items()})
        async with _reachable(), self._single.connect() as connection:
            message_id = int((await connection.execute(statement, values)).scalar_one())
        return _stored(message_id, conversation_id, message, created_at)


def conversation_store(engine: AsyncEngine) -> SqlConversationStore:
    """The store for ``engine``'s database: the SQLite one, or the PostgreSQL one."""
    if engine.dialect.name == "sqlite":
        return SqliteConversationStore(engine)
    return PostgresConversationStore(engine)


def _sqlite_insert(
    connection: sqlite3.Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    ignore_conflict: bool = False,
) -> sqlite3.Cursor:
    """Insert ``rows`` (dicts with the same keys) into ``table``, stored as SQLAlchemy
    stores them on SQLite: JSON as its text, times as ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    names = tuple(rows[0])
    sql, converters = _sqlite_insert_plan(table, names, ignore_conflict)
    params = [
        tuple(
            row[name] if convert is None else convert(row[name])
            for name, convert in zip(names, converters, strict=True)
        )
        for row in rows
    ]
    if len(params) == 1:
        return connection.execute(sql, params[0])
    return connection.executemany(sql, params)


@functools.cache
def _sqlite_insert_plan(
    table: Table, names: tuple[str, ...], ignore_conflict: bool
) -> tuple[str, tuple[Callable[[Any], object] | None, ...]]:
    """The statement inserting ``names`` into ``table``, and how each value is stored
    (None: as it is; JSON's None too is stored as ``null``, as SQLAlchemy does); made
    once per table and columns."""
    sql = (
        f"INSERT INTO {table.name} ({', '.join(names)}) "
        f"VALUES ({', '.join('?' for _ in names)})"
        + (" ON CONFLICT DO NOTHING" if ignore_conflict else "")
    )
    converters = tuple(_sqlite_converter(table.c[name]) for name in names)
    return sql, converters


def _sqlite_converter(column: Column[Any]) -> Callable[[Any], object] | None:
    if isinstance(column.type, JSON):
        return json.dumps
    if isinstance(column.type, DateTime):
        return _sqlite_time
    return None


def _sqlite_time(value: datetime | None) -> str | None:
    return None if value is None else value.strftime(_SQLITE_TIME)


def _sqlite_value(column: Column[Any], value: object) -> object:
    if isinstance(column.type, JSON):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.strftime(_SQLITE_TIME)
    return value
