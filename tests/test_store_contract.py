"""The ``ConversationStore`` contract: one suite run against every implementation.

``TestConversationStoreContract`` runs on the in-memory fake, SQLite and PostgreSQL (the last
where ``TEST_DATABASE_URL`` is set). The functions after it cover what only a database has:
several processes (engines) on one database, and a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.conversation.journal import NewTurn, TurnJournal
from core.conversation.messages import ConversationKey, NewMessage, Role, StoredMessage, UserRef
from core.conversation.store import ConversationStore, UsageRecord
from core.media.ports import PreparedImage
from core.storage.database import PING_AFTER_IDLE_SECONDS, upgrade
from core.storage.schema import ConversationRow, UserRow
from core.storage.sql_store import SqlConversationStore, conversation_store
from tests.conftest import _admin_execute, engine_for
from tests.fakes.memory_store import InMemoryConversationStore

CONCURRENCY = 20
KEY = ConversationKey("telegram", place="1001")
ALICE = UserRef("telegram", "42", username="alice", display_name="Alice")

Names = tuple[str | None, str | None]


@dataclass(frozen=True, slots=True)
class Backend:
    """A store under test plus a way to read back what ``ensure_user`` wrote."""

    store: ConversationStore
    user_names: Callable[[UserRef], Awaitable[Names]]


def _memory_backend() -> Backend:
    store = InMemoryConversationStore()

    async def user_names(user: UserRef) -> Names:
        row = store.users[(user.channel, user.user_id)]
        return row.username, row.display_name

    return Backend(store, user_names)


async def read_user_names(engine: AsyncEngine, user: UserRef) -> Names:
    """The names the database holds for ``user``."""
    query = select(UserRow.username, UserRow.display_name).where(
        UserRow.channel == user.channel, UserRow.external_id == user.user_id
    )
    async with engine.connect() as connection:
        username, display_name = (await connection.execute(query)).one()
    return username, display_name


async def count_active(engine: AsyncEngine, key: ConversationKey) -> int:
    """How many conversations of ``key`` the database holds as active."""
    query = select(func.count()).where(ConversationRow.key == str(key), ConversationRow.active)
    async with engine.connect() as connection:
        return int((await connection.execute(query)).scalar_one())


def message(
    text: str,
    role: Role = Role.USER,
    *,
    author_id: int | None = None,
    platform_message_id: str | None = None,
) -> NewMessage:
    """A message to store; the token count is the text's length, so it differs per text."""
    return NewMessage(role, text, len(text), author_id, platform_message_id)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which implementation the test runs against."""
    kind: str = request.param
    return kind


@pytest.fixture
async def backend(store_kind: str, database_url: str) -> AsyncIterator[Backend]:
    """The store under test, on a freshly migrated database for the SQL kinds."""
    if store_kind == "memory":
        yield _memory_backend()
        return
    await upgrade(database_url)
    async with engine_for(database_url) as engine:

        async def user_names(user: UserRef) -> Names:
            return await read_user_names(engine, user)

        store = (
            SqlConversationStore(engine)
            if store_kind.startswith("portable-")
            else conversation_store(engine)
        )
        yield Backend(store, user_names)


@pytest.fixture
def store(backend: Backend) -> ConversationStore:
    """The store under test."""
    return backend.store


# The memory kind is paired with the SQLite ``database_url`` (a path nothing opens) so that
# it runs once; the SQL kinds take the conftest database of their own dialect. "sqlite" is
# the store SQLite gets (SqliteConversationStore), "postgresql" the one PostgreSQL gets
# (PostgresConversationStore), "portable-…" the portable one on each.
every_store = pytest.mark.parametrize(
    ("store_kind", "database_url"),
    [
        ("memory", "sqlite"),
        ("sqlite", "sqlite"),
        ("portable-sqlite", "sqlite"),
        ("postgresql", "postgresql"),
        ("portable-postgresql", "postgresql"),
    ],
    indirect=True,
    ids=["memory", "sqlite", "portable-sqlite", "postgresql", "portable-postgresql"],
)


@every_store
class TestConversationStoreContract:
    """What every ``ConversationStore`` promises."""

    async def test_ensure_user_is_idempotent_per_channel_and_id(
        self, store: ConversationStore
    ) -> None:
        alice = await store.ensure_user(ALICE)
        bob = await store.ensure_user(UserRef("telegram", "43"))
        same_id_on_slack = await store.ensure_user(UserRef("slack", "42"))

        assert await store.ensure_user(ALICE) == alice
        assert await store.ensure_user(UserRef("telegram", "42")) == alice
        assert alice < bob < same_id_on_slack

    async def test_ensure_user_refreshes_changed_names(self, backend: Backend) -> None:
        renamed = UserRef("telegram", "42", username="alice_w", display_name="Alice W.")
        first = await backend.store.ensure_user(ALICE)

        assert await backend.store.ensure_user(renamed) == first
        assert await backend.user_names(ALICE) == ("alice_w", "Alice W.")

        assert await backend.store.ensure_user(ALICE) == first
        assert await backend.user_names(ALICE) == ("alice", "Alice")

    async def test_active_conversation_is_created_once(self, store: ConversationStore) -> None:
        created = await store.active_conversation(KEY)
        again = await store.active_conversation(KEY)

        assert again == created
        assert (created.key, created.mode, created.model) == (KEY, None, None)
        assert created.created_at.tzinfo is not None
        assert abs(datetime.now(UTC) - created.created_at) < timedelta(minutes=5)

    async def test_spending_totals_and_ranks_users_by_cost(self, store: ConversationStore) -> None:
        ben = UserRef("slack", "U0BEN", username="Ben")
        ids = {u: await store.ensure_user(u) for u in (ALICE, ben)}
        conversation = await store.active_conversation(KEY)
        for user, cost in ((ALICE, 300), (ben, 1_000), (ALICE, 500)):
            record = UsageRecord(ids[user], conversation.id, "chat", "m", cost_micros=cost)
            await store.add_message(conversation.id, message(f"paid {cost}"), [record])

        everyone = await store.spending(datetime.now(UTC) - timedelta(hours=1))
        alice_only = await store.spending(datetime.now(UTC) - timedelta(hours=1), ALICE)
        later = await store.spending(datetime.now(UTC) + timedelta(hours=1))

        assert [(s.user.user_id if s.user else None, s.cost_micros, s.calls) for s in everyone] == [
            (None, 1_800, 3),
            ("U0BEN", 1_000, 1),
            ("42", 800, 2),
        ]
        assert [(s.user, s.cost_micros) for s in alice_only] == [(None, 1_800), (ALICE, 800)]
        assert [(s.cost_micros, s.calls) for s in later] == [(0, 0)]

    async def test_users_are_found_by_username_on_any_channel(
        self, store: ConversationStore
    ) -> None:
        await store.ensure_user(ALICE)
        await store.ensure_user(UserRef("slack", "U0ALICE", username="ALICE"))
        await store.ensure_user(UserRef("slack", "U0BOB", username="bob"))

        found = await store.find_users("Alice")

        assert [(u.channel, u.user_id) for u in found] == [("telegram", "42"), ("slack", "U0ALICE")]
        assert await store.find_users("nobody") == []

    async def test_find_active_never_creates(self, store: ConversationStore) -> None:
        assert await store.find_active(KEY) is None
        assert await store.find_active(KEY) is None

        created = await store.active_conversation(KEY)
        await store.add_message(created.id, message("hello"))
        found = await store.find_active(KEY)
        restarted = await store.start_conversation(KEY)

        assert found is not None
        assert found.id == created.id
        assert found.last_message_id is not None
        assert await store.find_active(KEY) == restarted

    async def test_start_conversation_keeps_the_old_one(self, store: ConversationStore) -> None:
        old = await store.active_conversation(KEY)
        await store.set_mode(old.id, "coder")
        kept = [await store.add_message(old.id, message(f"old {i}")) for i in range(3)]

        new = await store.start_conversation(KEY)

        assert new.id > old.id
        assert (new.key, new.mode, new.model) == (KEY, None, None)
        assert await store.active_conversation(KEY) == new
        assert await store.recent_messages(new.id, limit=10) == []
        assert await store.recent_messages(old.id, limit=10) == kept[::-1]

    async def test_start_conversation_opens_one_when_none_is_active(
        self, store: ConversationStore
    ) -> None:
        started = await store.start_conversation(KEY)

        assert await store.active_conversation(KEY) == started

    @pytest.mark.parametrize(
        "other",
        [
            ConversationKey("telegram", place="1001", thread="7"),
            ConversationKey("telegram", place="1001", scope="T1"),
            ConversationKey("slack", place="1001"),
            ConversationKey("telegram", place="1002"),
        ],
        ids=["thread", "scope", "channel", "place"],
    )
    async def test_keys_that_differ_in_one_part_are_separate(
        self, store: ConversationStore, other: ConversationKey
    ) -> None:
        first = await store.active_conversation(KEY)
        second = await store.active_conversation(other)
        await store.add_message(first.id, message("only in the first"))

        restarted = await store.start_conversation(other)

        assert second.id != first.id
        assert second.key == other
        assert (await store.active_conversation(KEY)).id == first.id
        assert restarted.id not in (first.id, second.id)
        assert await store.recent_messages(second.id, limit=10) == []

    async def test_active_conversation_reports_its_newest_message(
        self, store: ConversationStore
    ) -> None:
        fresh = await store.active_conversation(KEY)
        assert fresh.last_message_id is None
        await store.add_message(fresh.id, message("a"))
        newest = await store.add_message(fresh.id, message("b"))
        elsewhere = await store.active_conversation(ConversationKey("slack", place="C9"))
        await store.add_message(elsewhere.id, message("c"))

        assert (await store.active_conversation(KEY)).last_message_id == newest.id
        assert (await store.start_conversation(KEY)).last_message_id is None
        assert (await store.active_conversation(KEY)).last_message_id is None

    async def test_mode_and_model_persist(self, store: ConversationStore) -> None:
        conversation = await store.active_conversation(KEY)
        other = await store.active_conversation(ConversationKey("slack", place="C1"))

        await store.set_mode(conversation.id, "translator")
        await store.set_model(conversation.id, "gpt-4o-mini")
        chosen = await store.active_conversation(KEY)

        assert (chosen.id, chosen.mode, chosen.model) == (
            conversation.id,
            "translator",
            "gpt-4o-mini",
        )
        assert await store.active_conversation(other.key) == other

        await store.set_mode(conversation.id, None)
        await store.set_model(conversation.id, None)
        reset = await store.active_conversation(KEY)
        assert (reset.mode, reset.model) == (None, None)

    async def test_replace_model_moves_every_conversation_that_chose_it(
        self, store: ConversationStore
    ) -> None:
        closed = await store.active_conversation(KEY)
        await store.set_model(closed.id, "old-model")
        current = await store.start_conversation(KEY)
        await store.set_model(current.id, "old-model")
        other = await store.active_conversation(ConversationKey("slack", place="C1"))
        await store.set_model(other.id, "another-model")
        default = await store.active_conversation(ConversationKey("slack", place="C2"))

        assert await store.replace_model("old-model", "new-model") == 2

        assert (await store.active_conversation(KEY)).model == "new-model"
        assert (await store.active_conversation(other.key)).model == "another-model"
        assert (await store.active_conversation(default.key)).model is None
        assert await store.replace_model("old-model", "new-model") == 0

    async def test_add_message_returns_the_stored_message(self, store: ConversationStore) -> None:
        author = await store.ensure_user(ALICE)
        conversation = await store.active_conversation(KEY)
        other = await store.active_conversation(ConversationKey("slack", place="C1"))
        before = datetime.now(UTC)

        question = await store.add_message(
            conversation.id,
            message("What is 2+2?", author_id=author, platform_message_id="m-1"),
        )
        elsewhere = await store.add_message(other.id, message("hello"))
        answer = await store.add_message(conversation.id, message("4", role=Role.ASSISTANT))

        assert question.id < elsewhere.id < answer.id
        assert question.conversation_id == conversation.id
        assert (question.role, question.text, question.token_count) == (
            Role.USER,
            "What is 2+2?",
            12,
        )
        assert question.platform_message_id == "m-1"
        assert (answer.role, answer.platform_message_id) == (Role.ASSISTANT, None)
        assert question.created_at.tzinfo is not None
        assert before - timedelta(seconds=1) <= question.created_at <= answer.created_at
        assert answer.created_at <= datetime.now(UTC) + timedelta(seconds=1)

    async def test_recent_messages_are_newest_first_and_as_stored(
        self, store: ConversationStore
    ) -> None:
        conversation = await store.active_conversation(KEY)
        other = await store.active_conversation(ConversationKey("slack", place="C1"))
        stored: list[StoredMessage] = []
        for i in range(5):
            stored.append(await store.add_message(conversation.id, message(f"turn {i}")))
            await store.add_message(other.id, message(f"noise {i}"))

        assert await store.recent_messages(conversation.id, limit=100) == stored[::-1]
        assert await store.recent_messages(conversation.id, limit=2) == stored[:2:-1]
        assert await store.recent_messages(conversation.id, limit=0) == []
        assert await store.recent_messages(12345, limit=10) == []

    async def test_recent_messages_page_back_with_before_id(self, store: ConversationStore) -> None:
        conversation = await store.active_conversation(KEY)
        other = await store.active_conversation(ConversationKey("slack", place="C1"))
        stored = []
        for i in range(47):
            stored.append(await store.add_message(conversation.id, message(f"turn {i}")))
            if i % 3 == 0:
                await store.add_message(other.id, message(f"noise {i}"))

        pages: list[list[StoredMessage]] = []
        before_id: int | None = None
        for _ in range(10):  # bounded, so a store that repeats a page fails instead of hanging
            page = await store.recent_messages(conversation.id, limit=10, before_id=before_id)
            if not page:
                break
            pages.append(page)
            before_id = page[-1].id

        assert [len(page) for page in pages] == [10, 10, 10, 10, 7]
        assert [m for page in pages for m in page] == stored[::-1]
        assert await store.recent_messages(conversation.id, limit=3, before_id=stored[20].id) == [
            stored[19],
            stored[18],
            stored[17],
        ]
        assert await store.recent_messages(conversation.id, limit=3, before_id=stored[0].id) == []

    async def test_usage_rows_are_saved_with_the_message_and_read_back_exactly(
        self, store: ConversationStore
    ) -> None:
        user = await store.ensure_user(ALICE)
        conversation = await store.active_conversation(KEY)
        other = await store.active_conversation(ConversationKey("slack", place="C1"))
        chat = UsageRecord(
            user_id=user,
            conversation_id=conversation.id,
            kind="chat",
            model="gpt-4o-mini",
            input_tokens=1_234,
            cached_input_tokens=1_024,
            output_tokens=567,
            cost_micros=12_345_678_901,  # above 2**31: the column must be 64-bit
            prices={"input": 150_000, "cached_input": 75_000, "output": 600_000},
            request_id="req_0123456789",
        )
        speech = UsageRecord(
            user_id=None, conversation_id=conversation.id, kind="transcription", model="whisper-1"
        )
        elsewhere = UsageRecord(
            user_id=user, conversation_id=other.id, kind="image", model="gpt-image-1", cost_micros=1
        )

        await store.add_message(conversation.id, message("no usage"))
        await store.add_message(conversation.id, message("answer", Role.ASSISTANT), [chat, speech])
        await store.add_message(other.id, message("picture", Role.ASSISTANT), [elsewhere])

        assert await store.usage(conversation.id) == [chat, speech]
        assert await store.usage(other.id) == [elsewhere]
        assert await store.usage(12345) == []

    async def test_a_failing_usage_row_stores_nothing(self, store: ConversationStore) -> None:
        conversation = await store.active_conversation(KEY)
        orphan = UsageRecord(
            user_id=987_654, conversation_id=conversation.id, kind="chat", model="gpt-4o-mini"
        )

        # The protocol names no error for a broken reference; each store raises its own.
        with pytest.raises((KeyError, IntegrityError)):
            await store.add_message(conversation.id, message("answer", Role.ASSISTANT), [orphan])
        with pytest.raises((KeyError, IntegrityError)):
            await store.add_message(987_654, message("nowhere"))

        assert await store.recent_messages(conversation.id, limit=10) == []
        assert await store.usage(conversation.id) == []

    async def test_claim_event_is_true_once_per_source_and_id(
        self, store: ConversationStore
    ) -> None:
        assert await store.claim_event("telegram", "update-1") is True
        assert await store.claim_event("telegram", "update-1") is False
        assert await store.claim_event("telegram", "update-1") is False
        assert await store.claim_event("slack", "update-1") is True
        assert await store.claim_event("telegram", "update-2") is True

    async def test_concurrent_active_conversation_opens_exactly_one(
        self, store: ConversationStore
    ) -> None:
        results = await asyncio.gather(
            *(store.active_conversation(KEY) for _ in range(CONCURRENCY))
        )

        assert len({c.id for c in results}) == 1
        # A second active row would make the lookup ambiguous (and the SQL store raise).
        assert await store.active_conversation(KEY) == results[0]

    async def test_concurrent_ensure_user_creates_one_user(self, store: ConversationStore) -> None:
        ids = await asyncio.gather(*(store.ensure_user(ALICE) for _ in range(CONCURRENCY)))

        assert len(set(ids)) == 1
        assert await store.ensure_user(UserRef("telegram", "42")) == ids[0]

    async def test_concurrent_claims_of_one_event_succeed_once(
        self, store: ConversationStore
    ) -> None:
        claims = await asyncio.gather(
            *(store.claim_event("slack", "Ev0123") for _ in range(CONCURRENCY))
        )

        assert claims.count(True) == 1

    async def test_concurrent_messages_all_get_distinct_ids(self, store: ConversationStore) -> None:
        conversation = await store.active_conversation(KEY)

        stored = await asyncio.gather(
            *(store.add_message(conversation.id, message(f"m{i}")) for i in range(CONCURRENCY))
        )

        assert len({m.id for m in stored}) == CONCURRENCY
        recent = await store.recent_messages(conversation.id, limit=CONCURRENCY + 1)
        assert recent == sorted(stored, key=lambda m: m.id, reverse=True)

    async def test_concurrent_resets_leave_one_active_conversation(
        self, store: ConversationStore
    ) -> None:
        first = await store.active_conversation(KEY)

        started = await asyncio.gather(*(store.start_conversation(KEY) for _ in range(5)))

        assert len({c.id for c in started}) == 5
        assert first.id not in {c.id for c in started}
        assert (await store.active_conversation(KEY)).id in {c.id for c in started}

    async def test_pictures_are_kept_with_their_message_in_order(
        self, store: ConversationStore
    ) -> None:
        conversation = await store.active_conversation(KEY)
        first = PreparedImage(b"\x89PNG first", "image/png", 10, 20)
        second = PreparedImage(b"\xff\xd8 second", "image/jpeg", 30, 40)
        plain = await store.add_message(conversation.id, message("no picture"))
        with_pictures = await store.add_message(
            conversation.id, replace(message("two pictures"), images=(first, second))
        )

        assert with_pictures.image_count == 2
        assert plain.image_count == 0
        recent = await store.recent_messages(conversation.id, limit=2)
        assert [m.image_count for m in recent] == [2, 0]
        assert await store.message_images([plain.id, with_pictures.id]) == {
            with_pictures.id: [first, second]
        }
        assert await store.latest_image(conversation.id) == second
        other = await store.active_conversation(replace(KEY, place="elsewhere"))
        assert await store.latest_image(other.id) is None

    async def test_voice_choice_is_remembered_per_conversation(
        self, store: ConversationStore
    ) -> None:
        conversation = await store.active_conversation(KEY)
        assert conversation.voice is False

        await store.set_voice(conversation.id, True)

        assert (await store.active_conversation(KEY)).voice is True
        assert (await store.start_conversation(KEY)).voice is False

    async def test_voice_talk_is_remembered_and_needs_voice_on(
        self, store: ConversationStore
    ) -> None:
        conversation = await store.active_conversation(KEY)
        assert conversation.voice_talk is False

        await store.set_voice(conversation.id, True, talk=True)
        talking = await store.active_conversation(KEY)
        assert (talking.voice, talking.voice_talk) == (True, True)

        await store.set_voice(conversation.id, True)
        assert (await store.active_conversation(KEY)).voice_talk is False
        await store.set_voice(conversation.id, False, talk=True)
        silent = await store.active_conversation(KEY)
        assert (silent.voice, silent.voice_talk) == (False, False)
        assert (await store.start_conversation(KEY)).voice_talk is False

    async def test_usage_rows_keep_their_units(self, store: ConversationStore) -> None:
        user_id = await store.ensure_user(ALICE)
        conversation = await store.active_conversation(KEY)
        heard = UsageRecord(
            user_id,
            conversation.id,
            "transcription",
            "whisper-1",
            units=61_500,
            unit="audio_ms",
            cost_micros=6_150,
            prices={"per_minute": 6_000},
            request_id="r1",
        )
        spoken = UsageRecord(
            user_id,
            conversation.id,
            "speech",
            "tts-1",
            units=120,
            unit="characters",
            cost_micros=1_800,
        )
        await store.add_message(conversation.id, message("heard"), [heard])
        await store.record_usage([spoken])

        assert await store.usage(conversation.id) == [heard, spoken]

    async def test_access_rules_are_set_replaced_and_cleared(
        self, store: ConversationStore
    ) -> None:
        assert await store.access_rules() == {}

        await store.set_access_rule("telegram:42", "block", "telegram:1")
        await store.set_access_rule("slack:U1", "allow", "telegram:1")
        await store.set_access_rule("telegram:42", "allow", "slack:UADMIN")
        assert await store.access_rules() == {"telegram:42": "allow", "slack:U1": "allow"}

        await store.set_access_rule("slack:U1", None, "telegram:1")
        await store.set_access_rule("slack:never-set", None, "telegram:1")
        assert await store.access_rules() == {"telegram:42": "allow"}


# --------------------------------------------------------------------- SQL stores only


async def test_two_processes_share_one_active_conversation(database_url: str) -> None:
    await upgrade(database_url)
    async with engine_for(database_url) as one_engine, engine_for(database_url) as two_engine:
        one, two = conversation_store(one_engine), conversation_store(two_engine)
        results = await asyncio.gather(
            *((one if i % 2 else two).active_conversation(KEY) for i in range(CONCURRENCY))
        )

        assert len({c.id for c in results}) == 1
        assert await count_active(one_engine, KEY) == 1


async def test_two_processes_claim_an_event_once(database_url: str) -> None:
    await upgrade(database_url)
    async with engine_for(database_url) as one_engine, engine_for(database_url) as two_engine:
        one, two = conversation_store(one_engine), conversation_store(two_engine)
        claims = await asyncio.gather(
            *((one if i % 2 else two).claim_event("telegram", "77") for i in range(CONCURRENCY))
        )

        assert claims.count(True) == 1


async def test_two_processes_share_one_user(database_url: str) -> None:
    await upgrade(database_url)
    async with engine_for(database_url) as one_engine, engine_for(database_url) as two_engine:
        one, two = conversation_store(one_engine), conversation_store(two_engine)
        ids = await asyncio.gather(
            *((one if i % 2 else two).ensure_user(ALICE) for i in range(CONCURRENCY))
        )

        assert len(set(ids)) == 1


async def test_a_restarted_store_sees_everything_stored_before(database_url: str) -> None:
    await upgrade(database_url)
    async with engine_for(database_url) as engine:
        before = conversation_store(engine)  # on SQLite, the one-hop writes
        user = await before.ensure_user(ALICE)
        old = await before.active_conversation(KEY)
        old_messages = [await before.add_message(old.id, message("first"))]
        current = await before.start_conversation(KEY)
        await before.set_mode(current.id, "coder")
        await before.set_model(current.id, "gpt-4o")
        record = UsageRecord(
            user_id=user,
            conversation_id=current.id,
            kind="chat",
            model="gpt-4o",
            input_tokens=10,
            output_tokens=20,
            cost_micros=225,
            prices={"input": 2_500_000, "output": 10_000_000},
            request_id="req_1",
        )
        messages = [
            await before.add_message(current.id, message("question", author_id=user)),
            await before.add_message(current.id, message("answer", Role.ASSISTANT), [record]),
        ]
        assert await before.claim_event("telegram", "update-9")

    async with engine_for(database_url) as engine:
        after = SqlConversationStore(engine)
        assert await after.ensure_user(ALICE) == user
        reopened = await after.active_conversation(KEY)
        assert (reopened.id, reopened.mode, reopened.model) == (current.id, "coder", "gpt-4o")
        assert await after.recent_messages(current.id, limit=10) == messages[::-1]
        assert await after.recent_messages(old.id, limit=10) == old_messages
        assert await after.usage(current.id) == [record]
        assert await after.claim_event("telegram", "update-9") is False


TURN_SENDER = UserRef("telegram", "42", username="ada")
TURN_NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
TURN_LATER = TURN_NOW + timedelta(seconds=30)


def asked(text: str = "hello", **options: Any) -> NewTurn:
    return NewTurn(KEY, TURN_SENDER, text, **options)


def journal(store: ConversationStore) -> TurnJournal:
    """Every store implementation keeps the journal too (the same database)."""
    return cast(TurnJournal, store)


@every_store
class TestTurnJournalContract:
    """What every store promises as the turn journal (durable turns, their leases)."""

    async def test_a_turn_is_recorded_with_its_event_once(self, store: ConversationStore) -> None:
        turns = journal(store)
        first = await turns.accept_turn(asked(), "update-1", "p1", TURN_LATER)
        again = await turns.accept_turn(asked(), "update-1", "p2", TURN_LATER)
        other = await turns.accept_turn(asked("next"), "update-2", "p1", TURN_LATER)
        no_event = await turns.accept_turn(asked("console"), None, "p1", TURN_LATER)
        assert first is not None and other is not None and no_event is not None
        assert again is None
        assert len({first, other, no_event}) == 3
        # A redelivery wrote nothing: the event stays claimed, no turn was added.
        assert not await store.claim_event("telegram", "update-1")

    async def test_a_held_lease_keeps_others_out_until_it_runs_out(
        self, store: ConversationStore
    ) -> None:
        turns = journal(store)
        turn_id = await turns.accept_turn(asked(), None, "p1", TURN_LATER)
        assert turn_id is not None
        assert await turns.open_turns(TURN_NOW) == []  # leased until TURN_LATER
        assert not await turns.lease_turn(turn_id, "p2", TURN_LATER, TURN_NOW)
        assert await turns.lease_turn(turn_id, "p1", TURN_LATER + timedelta(seconds=30), TURN_NOW)
        expired = TURN_LATER + timedelta(seconds=31)
        [left] = await turns.open_turns(expired)
        assert left.id == turn_id and left.turn == asked()
        assert not left.asked and left.reply is None
        assert await turns.lease_turn(turn_id, "p2", expired + timedelta(seconds=20), expired)
        assert await turns.open_turns(expired) == []

    async def test_recovery_sees_what_was_stored_of_a_turn(self, store: ConversationStore) -> None:
        turns = journal(store)
        unanswered = await turns.accept_turn(asked("one"), None, "p1", TURN_NOW)
        answered = await turns.accept_turn(asked("two", command="image"), None, "p1", TURN_NOW)
        with_files = await turns.accept_turn(asked("three", has_files=True), None, "p1", TURN_NOW)
        assert unanswered and answered and with_files
        user = await store.ensure_user(TURN_SENDER)
        conversation = await store.active_conversation(KEY)
        await store.add_message(
            conversation.id, NewMessage(Role.USER, "two", 1, author_id=user, turn_id=answered)
        )
        await store.add_message(
            conversation.id, NewMessage(Role.ASSISTANT, "the answer", 2, turn_id=answered)
        )
        await store.add_message(
            conversation.id, NewMessage(Role.USER, "one", 1, author_id=user, turn_id=unanswered)
        )
        found = {t.id: t for t in await turns.open_turns(TURN_LATER)}
        assert set(found) == {unanswered, answered, with_files}
        assert (found[unanswered].asked, found[unanswered].reply) == (True, None)
        assert (found[answered].asked, found[answered].reply) == (True, "the answer")
        assert found[answered].turn.command == "image"
        assert found[with_files].turn.has_files and not found[with_files].asked

    async def test_closed_turns_are_not_open_and_cannot_be_leased(
        self, store: ConversationStore
    ) -> None:
        turns = journal(store)
        delivered = await turns.accept_turn(asked("a"), None, "p1", TURN_NOW)
        failed = await turns.accept_turn(asked("b"), None, "p1", TURN_NOW)
        assert delivered and failed
        await turns.close_turn(delivered)
        await turns.close_turn(failed, failed="over budget")
        assert await turns.open_turns(TURN_LATER) == []
        assert not await turns.lease_turn(delivered, "p2", TURN_LATER, TURN_LATER)

    async def test_the_leases_of_a_dead_owner_can_be_let_go(self, store: ConversationStore) -> None:
        turns = journal(store)
        mine = await turns.accept_turn(asked("a"), None, "dead", TURN_LATER)
        other = await turns.accept_turn(asked("b"), None, "alive", TURN_LATER)
        done = await turns.accept_turn(asked("c"), None, "dead", TURN_LATER)
        assert mine and other and done
        await turns.close_turn(done)
        assert sorted(await turns.lease_owners()) == ["alive", "dead"]
        assert await turns.release_leases("dead") == 1
        assert [t.id for t in await turns.open_turns(TURN_NOW)] == [mine]
        assert await turns.lease_owners() == ["alive"]


async def test_two_processes_lease_one_turn_once(sqlite_url: str) -> None:
    """Two stores on one database (as two processes): of concurrent takeovers, one wins."""
    await upgrade(sqlite_url)
    async with engine_for(sqlite_url) as one_engine, engine_for(sqlite_url) as two_engine:
        one, two = conversation_store(one_engine), conversation_store(two_engine)
        turn_id = await one.accept_turn(asked(), None, "dead", TURN_NOW)
        assert turn_id is not None
        won = await asyncio.gather(
            *(
                store.lease_turn(turn_id, f"p{n}", TURN_LATER + timedelta(seconds=20), TURN_LATER)
                for n, store in enumerate([one, two] * 4)
            )
        )
    assert sum(won) == 1


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_pooled_connection_the_server_dropped_is_replaced_before_use(
    database_url: str,
) -> None:
    """A PostgreSQL connection that sat idle in the pool while its server side went away
    (a restart, a proxy's idle timeout) is pinged and replaced: the next turn's read works.
    Connections taken again at once are not pinged (no round trips spent on it)."""
    await upgrade(database_url)
    async with engine_for(database_url) as engine:
        store = conversation_store(engine)
        opened = await store.active_conversation(KEY)
        name = engine.url.database
        await _admin_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        await asyncio.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
        assert await store.active_conversation(KEY) == opened
