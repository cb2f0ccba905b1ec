"""Virtual time: one asyncio loop per node whose clock only moves when the scheduler says so, and the
scheduler that steps those loops and its own events in time order (no real sleeping).

A frozen loop (SIGSTOP) is simply not stepped: on thaw its overdue timers run late, in order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import selectors
from collections.abc import Callable
from typing import Any


class _NoWaitSelector(selectors.SelectSelector):
    """The loop's self-pipe still needs a selector; waiting is what virtual time replaces."""

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        return super().select(0)


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose time() is set by the scheduler: a node's timers, tasks and datagrams."""

    def __init__(self, start: float) -> None:
        super().__init__(_NoWaitSelector())
        self.now = start

    def time(self) -> float:
        return self.now

    def next_time(self) -> float | None:
        """When this loop next has something to run, or None when it is idle for good."""
        ready: Any = self._ready  # type: ignore[attr-defined]  # asyncio's own queues: the only way to peek at them
        if ready:
            return self.now
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        while scheduled and scheduled[0].cancelled():
            heapq.heappop(scheduled)
        return max(self.now, scheduled[0].when()) if scheduled else None

    def step(self, at: float) -> None:
        """Run one iteration at ``at``: everything due by then, and what that makes ready at once."""
        self.now = max(self.now, at)
        self.call_soon(self.stop)
        self.run_forever()

    def shut(self) -> None:
        """Cancel every task (a crash or the end of the run) and close the loop without warnings."""
        tasks = asyncio.all_tasks(self)
        for task in tasks:
            task.cancel()
        for _ in range(100):
            if not any(not t.done() for t in tasks):
                break
            self.step(self.now)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a crash is no error to report
        self.close()


class Scheduler:
    """Virtual time for the whole world: its own callbacks and every node loop, earliest first.

    Ties go to world callbacks (in the order they were scheduled), then to loops in their order, so
    one timeline always gives one history.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self.loops: list[VirtualLoop] = []
        self.frozen: dict[VirtualLoop, float] = {}  # loop -> thaw time
        self.after_step: Callable[[], None] = lambda: None

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._order), callback))

    def add(self, loop: VirtualLoop) -> None:
        self.loops.append(loop)

    def remove(self, loop: VirtualLoop) -> None:
        if loop in self.loops:
            self.loops.remove(loop)
        self.frozen.pop(loop, None)

    def _next_loop(self) -> tuple[float, VirtualLoop] | None:
        best: tuple[float, VirtualLoop] | None = None
        for loop in self.loops:
            when = loop.next_time()
            if when is None:
                continue
            when = max(when, self.frozen.get(loop, when))
            if best is None or when < best[0]:
                best = (when, loop)
        return best

    def run_until(self, end: float) -> None:
        while True:
            world = self._queue[0][0] if self._queue else None
            loop = self._next_loop()
            if world is not None and (loop is None or world <= loop[0]):
                if world > end:
                    break
                when, _, callback = heapq.heappop(self._queue)
                self.now = max(self.now, when)
                callback()
            elif loop is not None:
                if loop[0] > end:
                    break
                self.now = max(self.now, loop[0])
                if self.frozen.get(loop[1], self.now) <= self.now:
                    self.frozen.pop(loop[1], None)
                loop[1].step(self.now)
            else:
                break
            self.after_step()
        self.now = max(self.now, end)
