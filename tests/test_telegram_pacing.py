"""Telegram flood pacing: per-chat intervals, the overall rate and 429 blocks."""

from __future__ import annotations

import asyncio

from bots.telegram.pacing import FloodControl, FloodLimits


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


def test_forget_keeps_blocked_chats() -> None:
    clock = ManualClock()
    flood = pacer(clock)
    flood.blocked(1, 5)
    flood.forget(1)
    assert flood.ready_in(1) == 5
    clock.now += 6
    flood.forget(1)
    assert flood.ready_in(1) == 0


async def test_progress_edits_yield_to_waiting_required_calls() -> None:
    flood = FloodControl(FloodLimits(0.0, 0.0, 1))
    assert flood.try_acquire(1, group=False)  # the overall limit (1/s) is now used up
    waiting = asyncio.create_task(flood.acquire(2, group=False))
    await asyncio.sleep(0.01)
    assert not flood.try_acquire(3, group=False, optional=True)  # a final is waiting
    await asyncio.wait_for(waiting, 2)
    assert not flood.try_acquire(3, group=False, optional=True)  # limit used by the final
