"""Flood pacing: the bucket arithmetic per chat, a group's minute, the overall second, calls
counted until their answer, 429 feedback, and the order in which waiting calls go."""

from __future__ import annotations

import asyncio
import math

import pytest

from bots.pacing import PRUNE_AT, FloodControl, FloodLimits, ProgressFlusher


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pacer(clock: ManualClock, **limits: float) -> FloodControl:
    values: dict[str, float] = {"overall_per_second": 1000, **limits}
    return FloodControl(FloodLimits(**values), clock=clock)


def test_a_chat_has_a_burst_then_one_call_a_second() -> None:
    clock = ManualClock()
    flood = pacer(clock)  # Telegram's defaults: 1 a second, bursts of 3
    assert all(flood.try_acquire(1, group=False) for _ in range(3))
    assert not flood.try_acquire(1, group=False)
    assert flood.try_acquire(2, group=False)  # another chat is not held up
    assert flood.ready_in(1) == pytest.approx(1.0)
    clock.now += 0.99
    assert not flood.try_acquire(1, group=False)
    clock.now += 0.01
    assert flood.try_acquire(1, group=False)
    assert not flood.try_acquire(1, group=False)  # sustained: one a second, no burst yet
    clock.now += 1.0
    assert flood.try_acquire(1, group=False)


def test_the_burst_comes_back_at_the_sustained_rate_and_no_further() -> None:
    clock = ManualClock()
    flood = pacer(clock)
    for _ in range(3):
        assert flood.try_acquire(1, group=False)
    clock.now += 2.0  # two calls' worth refilled
    assert flood.try_acquire(1, group=False)
    assert flood.try_acquire(1, group=False)
    assert not flood.try_acquire(1, group=False)
    clock.now += 60.0  # a long pause refills the burst, not more
    assert sum(flood.try_acquire(1, group=False) for _ in range(10)) == 3


def test_a_quiet_chat_always_has_room() -> None:
    """One question every 1.2 s, each answered by a call: none of them waits."""
    clock = ManualClock()
    flood = pacer(clock)
    for _ in range(50):
        assert flood.ready_in(1) == 0
        assert flood.try_acquire(1, group=False)
        clock.now += 1.2


def test_a_group_gets_twenty_calls_a_minute_and_a_short_burst() -> None:
    clock = ManualClock()
    flood = pacer(clock)  # 20 a minute, bursts of 3
    assert all(flood.try_acquire(-5, group=True) for _ in range(3))
    assert not flood.try_acquire(-5, group=True)
    assert flood.ready_in(-5, group=True) == pytest.approx(3.0)
    taken: list[float] = [clock.now] * 3
    for _ in range(12_000):  # every 10 ms for two minutes: take whatever is allowed
        clock.now += 0.01
        if flood.try_acquire(-5, group=True):
            taken.append(clock.now)
    start = taken[0]
    for first in taken:  # never more than 20 in any minute
        assert sum(1 for t in taken if first <= t < first + 60) <= 20
    assert sum(1 for t in taken if t < start + 60) == 20  # the minute is used, not wasted


def test_the_overall_limit_is_thirty_in_any_second() -> None:
    clock = ManualClock()
    flood = FloodControl(clock=clock)
    assert all(flood.try_acquire(chat, group=False) for chat in range(30))
    assert not flood.try_acquire(30, group=False)
    clock.now += 0.5
    assert not flood.try_acquire(30, group=False)
    assert flood.ready_in(30) == pytest.approx(0.5)
    clock.now += 0.5
    assert flood.try_acquire(30, group=False)


def test_a_call_counts_from_its_slot_until_its_answer() -> None:
    """A request that waits (for the CPU, a connection) is counted when its answer comes,
    the latest moment Telegram can have counted it: the slot's time would be too early."""
    clock = ManualClock()
    flood = pacer(clock, overall_per_second=2)
    first = flood.try_call(1, group=False)
    second = flood.try_call(2, group=False)
    assert first is not None and second is not None
    assert flood.try_call(3, group=False) is None  # both are under way
    clock.now += 5.0
    assert flood.try_call(3, group=False) is None  # still under way: still counted
    first.done()  # its answer arrives now
    second.done()
    clock.now += 0.9
    assert flood.ready_in(3) == pytest.approx(0.1)  # a second after the answers, not the slots
    clock.now += 0.1
    assert flood.try_acquire(3, group=False)


def test_a_chat_call_under_way_uses_its_burst() -> None:
    clock = ManualClock()
    flood = pacer(clock, chat_burst=1)
    slot = flood.try_call(1, group=False)
    assert slot is not None
    clock.now += 3.0
    assert flood.try_call(1, group=False) is None  # one at a time, and it is not answered yet
    slot.done()
    assert flood.ready_in(1) == pytest.approx(1.0)  # a second after the answer
    clock.now += 1.0
    assert flood.try_acquire(1, group=False)


def test_a_429_blocks_the_chat_for_retry_after_then_one_at_a_time() -> None:
    clock = ManualClock()
    flood = pacer(clock)
    flood.blocked(1, 7)
    assert flood.ready_in(1) == pytest.approx(7)
    assert flood.try_acquire(2, group=False)  # one 429 binds only its chat
    clock.now += 6.9
    assert not flood.try_acquire(1, group=False)
    clock.now += 0.1
    assert flood.try_acquire(1, group=False)
    assert not flood.try_acquire(1, group=False)  # the burst was spent: Telegram said so
    clock.now += 1.0
    assert flood.try_acquire(1, group=False)


def test_a_429_binds_even_unlimited_rates() -> None:
    clock = ManualClock()
    flood = pacer(clock, chat_per_second=math.inf, overall_per_second=math.inf)
    assert all(flood.try_acquire(1, group=False) for _ in range(100))
    flood.blocked(1, 2)
    assert not flood.try_acquire(1, group=False)
    clock.now += 2
    assert flood.try_acquire(1, group=False)


def test_429s_in_two_chats_at_once_pause_every_chat() -> None:
    clock = ManualClock()
    flood = pacer(clock)
    flood.blocked(1, 3)
    clock.now += 0.5
    flood.blocked(2, 3)
    assert flood.ready_in(3) == pytest.approx(3)  # the limit they share: the overall one
    clock.now += 3
    assert flood.try_acquire(3, group=False)
    flood.blocked(4, 3)
    clock.now += 2  # more than a second apart: each binds its own chat only
    flood.blocked(5, 3)
    assert flood.ready_in(4) == pytest.approx(1)
    assert flood.ready_in(5) == pytest.approx(3)
    assert flood.try_acquire(6, group=False)


def test_memory_stays_bounded_and_blocks_survive_pruning() -> None:
    clock = ManualClock()
    flood = pacer(clock)
    flood.blocked(1, 1000)
    largest = 0
    for chat in range(2, 3 * PRUNE_AT):
        assert flood.try_acquire(chat, group=False)
        clock.now += 0.01
        largest = max(largest, len(flood._places))
    assert largest <= PRUNE_AT
    assert flood.ready_in(1) > 800  # the 429 block (1,000 s, 123 s ago) survived every pruning


async def test_acquire_waits_for_the_slot() -> None:
    flood = FloodControl(FloodLimits(chat_per_second=20, chat_burst=1))
    loop = asyncio.get_running_loop()
    await flood.acquire(1, group=False)
    started = loop.time()
    await flood.acquire(1, group=False)
    assert loop.time() - started >= 0.04


async def test_required_calls_go_first_come_first_served() -> None:
    flood = FloodControl(FloodLimits(chat_per_second=math.inf, overall_per_second=2))
    assert flood.try_acquire(0, group=False)
    assert flood.try_acquire(0, group=False)  # the overall second is used up
    order: list[int] = []

    async def final(chat: int) -> None:
        async with flood.call(chat, group=False):
            order.append(chat)

    tasks = []
    for chat in (5, 3, 9, 1):
        tasks.append(asyncio.create_task(final(chat)))
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == [5, 3, 9, 1]


async def test_progress_edits_yield_to_waiting_required_calls() -> None:
    flood = FloodControl(FloodLimits(chat_per_second=math.inf, overall_per_second=1))
    assert flood.try_acquire(1, group=False)  # the overall limit (1/s) is now used up
    waiting = asyncio.create_task(flood.acquire(2, group=False))
    await asyncio.sleep(0.01)
    assert not flood.try_acquire(3, group=False, optional=True)  # a final is waiting
    await asyncio.wait_for(waiting, 2)
    assert not flood.try_acquire(3, group=False, optional=True)  # limit used by the final


async def test_a_required_call_waiting_for_its_own_chat_holds_up_no_other_chat() -> None:
    flood = FloodControl(FloodLimits(chat_burst=1, overall_per_second=1000))
    flood.blocked(1, 30)
    waiting = asyncio.create_task(flood.acquire(1, group=False))
    await asyncio.sleep(0.01)
    assert flood.try_acquire(2, group=False, optional=True)  # other chats' edits go on
    waiting.cancel()


async def test_first_messages_go_before_other_chats_progress_edits() -> None:
    """Chats still waiting for their first message are not starved by chats whose replies
    already show and keep editing them: every slot goes to a first message until none waits."""
    flood = FloodControl(FloodLimits(chat_per_second=math.inf, overall_per_second=20))
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
    await asyncio.sleep(2.5)
    for flusher in editors + newcomers:
        await flusher.close()
    later = [(kind, chat, at) for kind, chat, at in calls if at >= since]
    firsts = [at for kind, _, at in later if kind == "first"]
    assert sorted(chat for kind, chat, _ in later if kind == "first") == list(range(100, 110))
    # The first slots after the window rolls over go to them: none waits another second.
    assert max(firsts) - min(firsts) < 0.5
    assert max(firsts) - since < 1.1
    assert "edit" in {kind for kind, _, at in later if at > max(firsts)}  # edits resume


async def test_the_first_message_waits_a_moment_and_a_reply_done_by_then_needs_none() -> None:
    flood = FloodControl()
    loop = asyncio.get_running_loop()
    made: list[float] = []

    async def show() -> bool:
        made.append(loop.time())
        return False

    quick = ProgressFlusher(
        flood, 1, group=False, flush_once=show, started=lambda: bool(made), first_after=0.2
    )
    quick.schedule()
    await asyncio.sleep(0.1)
    await quick.close()  # the reply finished: its final message is the only one
    assert made == []

    began = loop.time()
    slow = ProgressFlusher(
        flood, 2, group=False, flush_once=show, started=lambda: bool(made), first_after=0.2
    )
    slow.schedule()
    await asyncio.sleep(0.1)
    slow.schedule()  # more text: the moment is counted from the first
    await asyncio.sleep(0.3)
    await slow.close()
    assert len(made) == 1 and 0.19 <= made[0] - began < 0.3


async def test_no_slot_is_taken_when_there_is_nothing_new() -> None:
    flood = FloodControl(FloodLimits(chat_burst=1))
    calls: list[int] = []

    async def show() -> bool:
        calls.append(1)
        return True

    flusher = ProgressFlusher(
        flood, 1, group=False, flush_once=show, started=lambda: True, pending=lambda: False
    )
    flusher.schedule()
    await asyncio.sleep(0.05)
    await flusher.close()
    assert calls == []
    assert flood.try_acquire(1, group=False)  # the chat's one call is still there


def test_progress_edits_leave_room_in_the_burst_for_the_final_message() -> None:
    clock = ManualClock()
    flood = pacer(clock)  # bursts of 3
    assert flood.try_acquire(1, group=False)  # the first message
    assert flood.try_acquire(1, group=False, optional=True)  # an edit
    assert not flood.try_acquire(1, group=False, optional=True)  # the last one is kept
    assert flood.ready_in(1, optional=True) == pytest.approx(1.0)
    assert flood.ready_in(1) == 0
    assert flood.try_acquire(1, group=False)  # the final message goes at once
    slack = pacer(clock, chat_burst=1)  # no burst: nothing to keep back
    assert slack.try_acquire(2, group=False, optional=True)


def test_progress_edits_leave_room_for_first_messages_about_to_go() -> None:
    """Replies in their first moment will soon need slots: other chats' edits leave them
    the room in the overall second, and take it again once those messages went."""
    clock = ManualClock()
    flood = pacer(clock, chat_per_second=math.inf, overall_per_second=5)
    flood.coming(3)
    assert flood.try_acquire(1, group=False, optional=True)
    assert flood.try_acquire(2, group=False, optional=True)
    assert not flood.try_acquire(3, group=False, optional=True)  # 3 left for the 3 coming
    for chat in (10, 11, 12):
        assert flood.try_acquire(chat, group=False)
        flood.coming(-1)
    clock.now += 1
    assert all(flood.try_acquire(chat, group=False, optional=True) for chat in range(5))
