"""Telegram flood pacing: per-chat intervals, the overall rate and 429 blocks."""

from __future__ import annotations

import asyncio

from bots.pacing import PRUNE_AT, FloodControl, FloodLimits, ProgressFlusher


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pacer(clock: ManualClock, overall: int = 1000) -> FloodControl:
    return FloodControl(FloodLimits(1.0, 3.0, overall), clock=clock)


def test_one_call_per_interval_per_chat() -> None:
    clock = ManualClock()
    flood = pacer(clock)
    assert flood.try_acquire(1, group=False)
    assert not flood.try_acquire(1, group=False)
    assert flood.try_acquire(2, group=False)  # another chat is not held up
    clock.now += 0.99
    assert not flood.try_acquire(1, group=False)
    clock.now += 0.02
    assert flood.try_acquire(1, group=False)


def test_groups_are_paced_slower() -> None:
    clock = ManualClock()
    flood = pacer(clock)
    assert flood.try_acquire(-100, group=True)
    clock.now += 2.9
    assert not flood.try_acquire(-100, group=True)
    assert round(flood.ready_in(-100), 2) == 0.1
    clock.now += 0.1
    assert flood.try_acquire(-100, group=True)


def test_the_overall_rate_spans_chats() -> None:
    clock = ManualClock()
    flood = pacer(clock, overall=2)
    assert flood.try_acquire(1, group=False)
    clock.now += 0.5
    assert flood.try_acquire(2, group=False)
    assert not flood.try_acquire(3, group=False)  # two calls in the last second already
    assert round(flood.ready_in(3), 2) == 0.5
    clock.now += 0.5
    assert flood.try_acquire(3, group=False)


def test_a_429_blocks_only_that_chat_for_retry_after() -> None:
    clock = ManualClock()
    flood = pacer(clock)
    flood.blocked(1, 7)
    assert flood.ready_in(1) == 7
    assert flood.try_acquire(2, group=False)
    clock.now += 6.9
    assert not flood.try_acquire(1, group=False)
    clock.now += 0.1
    assert flood.try_acquire(1, group=False)


async def test_acquire_waits_for_the_slot() -> None:
    flood = FloodControl(FloodLimits(0.05, 0.05, 1000))
    loop = asyncio.get_running_loop()
    await flood.acquire(1, group=False)
    started = loop.time()
    await flood.acquire(1, group=False)
    assert loop.time() - started >= 0.04


def test_memory_stays_bounded_and_blocks_survive_pruning() -> None:
    clock = ManualClock()
    flood = pacer(clock)
    flood.blocked(1, 1000)
    largest = 0
    for chat in range(2, 3 * PRUNE_AT):
        assert flood.try_acquire(chat, group=False)
        clock.now += 0.01
        largest = max(largest, len(flood._chat_next))
    assert largest <= PRUNE_AT
    assert flood.ready_in(1) > 800  # the 429 block (1,000 s, 123 s ago) survived every pruning


async def test_progress_edits_yield_to_waiting_required_calls() -> None:
    flood = FloodControl(FloodLimits(0.0, 0.0, 1))
    assert flood.try_acquire(1, group=False)  # the overall limit (1/s) is now used up
    waiting = asyncio.create_task(flood.acquire(2, group=False))
    await asyncio.sleep(0.01)
    assert not flood.try_acquire(3, group=False, optional=True)  # a final is waiting
    await asyncio.wait_for(waiting, 2)
    assert not flood.try_acquire(3, group=False, optional=True)  # limit used by the final


async def test_first_messages_go_before_other_chats_progress_edits() -> None:
    """Chats still waiting for their first message are not starved by chats whose replies
    already show and keep editing them: every slot goes to a first message until none waits."""
    flood = FloodControl(FloodLimits(0.0, 0.0, 20))
    loop = asyncio.get_running_loop()
    calls: list[tuple[str, int, float]] = []

    def editing(chat: int) -> ProgressFlusher:
        async def edit() -> bool:
            calls.append(("edit", chat, loop.time()))
            return True  # always more to show

        return ProgressFlusher(flood, chat, group=False, flush_once=edit, started=lambda: True)

    def starting(chat: int) -> ProgressFlusher:
        shown: list[bool] = []

        async def first() -> bool:
            calls.append(("first", chat, loop.time()))
            shown.append(True)
            return False

        return ProgressFlusher(
            flood, chat, group=False, flush_once=first, started=lambda: bool(shown)
        )

    editors = [editing(chat) for chat in range(20)]
    for flusher in editors:
        flusher.schedule()
    await asyncio.sleep(1.2)  # the overall limit is now used up by edits
    assert {kind for kind, _, _ in calls} == {"edit"}
    newcomers = [starting(chat) for chat in range(100, 110)]
    for flusher in newcomers:
        flusher.schedule()
    await asyncio.sleep(0.01)  # each newcomer is now waiting for a slot
    since = loop.time()
    await asyncio.sleep(1.5)
    for flusher in editors + newcomers:
        await flusher.close()
    later = [(kind, chat) for kind, chat, at in calls if at >= since]
    firsts = [chat for kind, chat in later if kind == "first"]
    assert sorted(firsts) == list(range(100, 110))
    assert [kind for kind, _ in later[:10]] == ["first"] * 10
    assert "edit" in {kind for kind, _ in later[10:]}  # edits resume afterwards
