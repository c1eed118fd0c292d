"""Waiting for a wake-up or a resync: a runner or pod worker stopped just as it is woken must stop (Python
3.11's asyncio.wait_for swallowed that cancellation, and a stopped TrainingRun runner lived on)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from mlplatform.aio import wait_woken


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_wait_stopped_as_it_is_woken_stops() -> None:
    async def scenario() -> None:
        waker = asyncio.Event()
        passes = 0

        async def loop() -> None:
            nonlocal passes
            while True:
                passes += 1
                waker.clear()
                await wait_woken(waker, 60)

        task = asyncio.create_task(loop())
        await settle()
        waker.set()
        await asyncio.sleep(0)  # the wait has its wake-up, its task not yet resumed
        task.cancel()
        await settle()
        assert task.done() and task.cancelled(), f"the loop went on after its cancellation ({passes} passes)"

    asyncio.run(scenario())


def test_a_wait_ends_when_woken_or_when_due() -> None:
    async def scenario() -> None:
        waker = asyncio.Event()
        waiting = asyncio.create_task(wait_woken(waker, 60))
        await settle()
        assert not waiting.done()
        waker.set()
        await asyncio.wait_for(waiting, 1)

        began = time.monotonic()
        await wait_woken(asyncio.Event(), 0.05)  # nobody wakes it: it ends when due, without an error
        assert 0.04 <= time.monotonic() - began < 1

    asyncio.run(scenario())


def test_a_wait_cancelled_while_idle_is_cancelled() -> None:
    async def scenario() -> None:
        waiting = asyncio.create_task(wait_woken(asyncio.Event(), 60))
        await settle()
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        assert waiting.cancelled()

    asyncio.run(scenario())
