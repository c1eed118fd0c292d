"""asyncio helpers the standard library gets subtly wrong on the Python versions we support."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_woken(waker: asyncio.Event, seconds: float) -> None:
    """Wait until `waker` is set or `seconds` pass, whichever is first.

    Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives just as the event is
    set, and a task stopped then goes on (a runner stopped that way acted on a stale object for ever)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await waker.wait()
