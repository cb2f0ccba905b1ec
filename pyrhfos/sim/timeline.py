"""The administrator's timeline: one event per line, ``SECONDS NODE EVENT [ARG]``, ``#`` comments;
parsed into steps, or a TimelineError naming the line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..core.vocab import Role

# Event -> what its argument is: None (no argument), "seconds", "service", "optional path or way".
EVENTS: dict[str, str | None] = {
    "start": None,
    "stop": None,
    "crash": None,
    "link-down": "path",
    "link-up": "path",
    "partition": "way",
    "heal": None,
    "freeze": "seconds",
    "service-fail": "service",
    "service-ok": "service",
    "release": None,
    "takeover": None,
}
PATH_ARGS = ("public", "private")
WAY_ARGS = ("one-way",)


class TimelineError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message

    def render(self, path: str) -> str:
        return f"{path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Step:
    """One timeline event at ``at`` seconds after the simulation starts."""

    at: float
    role: Role
    event: str
    arg: str | None = None
    line: int = 0

    @property
    def node(self) -> str:
        return self.role.name.lower()

    def text(self) -> str:
        return f"{self.at:g} {self.node} {self.event}" + (f" {self.arg}" if self.arg else "")


def _seconds(word: str, what: str, line: int) -> float:
    try:
        value = float(word)
    except ValueError:
        raise TimelineError(line, f"{what} {word!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise TimelineError(line, f"{what} {word!r} must be zero or more seconds")
    return value


def parse(text: str, services: Iterable[str] | None = None) -> list[Step]:
    """The steps of a timeline, in order; ``services`` (when given) are the names service-fail and
    service-ok may name."""
    known = None if services is None else set(services)
    steps: list[Step] = []
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) < 3:
            raise TimelineError(number, "expected SECONDS NODE EVENT [ARG]")
        at = _seconds(words[0], "time", number)
        if steps and at < steps[-1].at:
            raise TimelineError(number, f"time {words[0]} is before the previous line's {steps[-1].at:g}")
        node = words[1].lower()
        if node not in ("primary", "backup"):
            raise TimelineError(number, f"node {words[1]!r}: expected primary or backup")
        event = words[2].lower()
        if event not in EVENTS:
            raise TimelineError(number, f"unknown event {words[2]!r}; expected one of {', '.join(EVENTS)}")
        kind = EVENTS[event]
        rest = words[3:]
        if len(rest) > 1 or (rest and kind is None):
            raise TimelineError(number, f"{event} takes {'no argument' if kind is None else 'one argument'}")
        arg = rest[0] if rest else None
        if kind in ("seconds", "service") and arg is None:
            wanted = "SECONDS" if kind == "seconds" else "a service NAME"
            raise TimelineError(number, f"{event} needs {wanted}")
        if kind == "seconds" and arg is not None:
            arg = f"{_seconds(arg, 'freeze', number):g}"
        if kind == "service" and known is not None and arg not in known:
            names = ", ".join(sorted(known)) or "none"
            raise TimelineError(number, f"no failover service {arg!r} in the configuration (it has {names})")
        if kind == "path" and arg is not None and arg not in PATH_ARGS:
            raise TimelineError(number, f"{event} {arg!r}: expected public or private (or nothing: both)")
        if kind == "way" and arg is not None and arg not in WAY_ARGS:
            raise TimelineError(number, f"partition {arg!r}: expected one-way (or nothing: both ways)")
        steps.append(Step(at, Role[node.upper()], event, arg, number))
    return steps
