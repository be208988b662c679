"""``ConversationStore`` on SQLAlchemy 2 async, for SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.messages import (
    Conversation,
    ConversationKey,
    NewMessage,
    Role,
    StoredMessage,
    UserRef,
)
from core.sql_models import (
    ConversationRow,
    MessageRow,
    ProcessedEventRow,
    UsageRow,
    UserRow,
)
from core.store import UsageRecord

USER_CACHE_SIZE = 10_000


class SqlConversationStore:
    """Conversation state in a relational database through an ``AsyncEngine``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._dialect = engine.dialect.name
        # Users change rarely; remembering them saves a query on every turn.
        self._users: dict[UserRef, int] = {}

    async def ensure_user(self, user: UserRef) -> int:
        """The stored id of ``user``, creating or refreshing its row."""
        cached = self._users.get(user)
        if cached is not None:
            return cached
        async with self._sessions.begin() as session:
            await session.execute(
                self._insert(UserRow)
                .values(
                    channel=user.channel,
                    external_id=user.user_id,
                    username=user.username,
                    display_name=user.display_name,
                )
                .on_conflict_do_nothing()
            )
            row = (
                await session.execute(
                    select(UserRow).where(
                        UserRow.channel == user.channel, UserRow.external_id == user.user_id
                    )
                )
            ).scalar_one()
            if (row.username, row.display_name) != (user.username, user.display_name):
                row.username, row.display_name = user.username, user.display_name
            user_id = row.id
        if len(self._users) >= USER_CACHE_SIZE:
            self._users.clear()
        self._users[user] = user_id
        return user_id

    async def active_conversation(self, key: ConversationKey) -> Conversation:
        """The open conversation of ``key``, created when missing."""
        async with self._sessions.begin() as session:
            row = await self._active_row(session, key)
            if row is None:
                await session.execute(
                    self._insert(ConversationRow)
                    .values(key=str(key), channel=key.channel, active=True)
                    .on_conflict_do_nothing()
                )
                row = await self._active_row(session, key)
            assert row is not None
            return _conversation(row, key)

    async def start_conversation(self, key: ConversationKey) -> Conversation:
        """Close the open conversation of ``key`` and open a new one."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(ConversationRow)
                .where(ConversationRow.key == str(key), ConversationRow.active)
                .values(active=False)
            )
            row = ConversationRow(key=str(key), channel=key.channel, active=True)
            session.add(row)
            await session.flush()
            await session.refresh(row)
            return _conversation(row, key)

    async def set_mode(self, conversation_id: int, mode: str | None) -> None:
        """Remember the mode chosen in a conversation."""
        await self._update_conversation(conversation_id, mode=mode)

    async def set_model(self, conversation_id: int, model: str | None) -> None:
        """Remember the model chosen in a conversation."""
        await self._update_conversation(conversation_id, model=model)

    async def add_message(
        self,
        conversation_id: int,
        message: NewMessage,
        usage: Sequence[UsageRecord] = (),
    ) -> StoredMessage:
        """Append ``message`` and its usage rows in one transaction."""
        async with self._sessions.begin() as session:
            row = MessageRow(
                conversation_id=conversation_id,
                role=message.role.value,
                text=message.text,
                parts=message.meta,
                token_count=message.token_count,
                author_id=message.author_id,
                platform_message_id=message.platform_message_id,
                created_at=datetime.now(UTC),
            )
            session.add(row)
            session.add_all(_usage_row(record) for record in usage)
            await session.flush()
            return _message(row)

    async def recent_messages(
        self, conversation_id: int, *, limit: int, before_id: int | None = None
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages before ``before_id`` (or the newest), newest first."""
        query = select(MessageRow).where(MessageRow.conversation_id == conversation_id)
        if before_id is not None:
            query = query.where(MessageRow.id < before_id)
        query = query.order_by(MessageRow.id.desc()).limit(limit)
        async with self._sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        return [_message(row) for row in rows]

    async def usage(self, conversation_id: int) -> list[UsageRecord]:
        """The usage rows of one conversation, oldest first."""
        query = (
            select(UsageRow)
            .where(UsageRow.conversation_id == conversation_id)
            .order_by(UsageRow.id)
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).scalars().all()
        return [
            UsageRecord(
                user_id=row.user_id,
                conversation_id=row.conversation_id,
                kind=row.kind,
                model=row.model,
                input_tokens=row.input_tokens,
                cached_input_tokens=row.cached_input_tokens,
                output_tokens=row.output_tokens,
                cost_micros=row.cost_micros,
                prices={str(k): int(v) for k, v in row.prices.items()},
                request_id=row.request_id,
            )
            for row in rows
        ]

    async def claim_event(self, source: str, event_id: str) -> bool:
        """True the first time an event id is seen, False for a redelivery."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                self._insert(ProcessedEventRow)
                .values(source=source, event_id=event_id)
                .on_conflict_do_nothing()
            )
            return bool(getattr(result, "rowcount", 0))

    async def _active_row(
        self, session: AsyncSession, key: ConversationKey
    ) -> ConversationRow | None:
        query = select(ConversationRow).where(
            ConversationRow.key == str(key), ConversationRow.active
        )
        return (await session.execute(query)).scalar_one_or_none()

    async def _update_conversation(self, conversation_id: int, **values: Any) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(ConversationRow)
                .where(ConversationRow.id == conversation_id)
                .values(**values)
            )

    def _insert(self, table: Any) -> Any:
        """An INSERT that supports ``on_conflict_do_nothing`` on this dialect."""
        module: Any = postgresql if self._dialect == "postgresql" else sqlite
        statement: Insert = module.insert(table)
        return statement


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _conversation(row: ConversationRow, key: ConversationKey) -> Conversation:
    return Conversation(row.id, key, row.mode, row.model, _aware(row.created_at))


def _message(row: MessageRow) -> StoredMessage:
    return StoredMessage(
        id=row.id,
        conversation_id=row.conversation_id,
        role=Role(row.role),
        text=row.text,
        token_count=row.token_count,
        created_at=_aware(row.created_at),
        platform_message_id=row.platform_message_id,
    )


def _usage_row(record: UsageRecord) -> UsageRow:
    return UsageRow(
        user_id=record.user_id,
        conversation_id=record.conversation_id,
        kind=record.kind,
        model=record.model,
        input_tokens=record.input_tokens,
        cached_input_tokens=record.cached_input_tokens,
        output_tokens=record.output_tokens,
        cost_micros=record.cost_micros,
        prices=dict(record.prices),
        request_id=record.request_id,
    )
