"""One scheduler for the periodic passes of many objects: between passes an object holds a timer handle,
not a task with its stack, its kopf daemon record and a copy of its body.

A pass is a coroutine on the object's key that returns the seconds until the next pass, or None once the
object is gone. A key woken during its pass gets another pass right after it; a key woken between passes
gets one at once.

Passes run in a copy of the context the scheduler was made in (kopf's event queue is there, for the
events a pass posts), not in the context of whatever woke them: a task or timer holds its context, and
the context of a kopf handler holds that event's whole body.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable

from mlplatform.handlers.context import ObjectKey

Pass = Callable[[ObjectKey], Awaitable[float | None]]
logger = logging.getLogger("mlplatform.passes")
ERROR_DELAY = 5.0  # after a pass failed unexpectedly


class PassScheduler:
    def __init__(self, run_pass: Pass, concurrency: int) -> None:
        self._run_pass = run_pass
        self._slots = asyncio.Semaphore(concurrency)  # a burst queues instead of flooding the APIs
        self._timers: dict[ObjectKey, asyncio.TimerHandle] = {}
        self._woken_while_running: dict[ObjectKey, bool] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._context = contextvars.copy_context()

    def __contains__(self, key: ObjectKey) -> bool:
        return key in self._timers or key in self._woken_while_running

    def ensure(self, key: ObjectKey) -> None:
        """Start passing over `key` unless it is already scheduled."""
        if key not in self:
            self._start(key)

    def wake(self, key: ObjectKey) -> None:
        """A pass for `key` now (or right after the one running); an unknown key stays unknown."""
        if key in self._woken_while_running:
            self._woken_while_running[key] = True
        elif (timer := self._timers.pop(key, None)) is not None:
            timer.cancel()
            self._start(key)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        self._timers.clear()

    def _start(self, key: ObjectKey) -> None:
        self._timers.pop(key, None)
        self._woken_while_running[key] = False
        task = asyncio.create_task(
            self._pass(key), name=f"pass of {key[0]}/{key[1]}", context=self._context.copy()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pass(self, key: ObjectKey) -> None:
        try:
            async with self._slots:
                delay = await self._run_pass(key)
        except Exception:
            logger.exception("the pass of %s/%s failed", *key)
            delay = ERROR_DELAY
        if self._woken_while_running.pop(key, False) and delay is not None:
            delay = 0.0
        if delay is not None:
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(delay, self._start, key, context=self._context.copy())
