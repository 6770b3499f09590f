"""The one retry policy: capped exponential backoff with jitter, and a healthy reset.

Every retry loop in dreamstate uses it: the supervisor restarting a stage, the serial reconnect
loop, the MQTT reconnect loop and the renderer restarting its dream worker.

``Backoff.delay(n)`` is the wait before the n-th retry (n >= 1):
``min(cap, base * 2**(n-1))``, minus up to ``jitter`` of itself at random (so a room full of
nodes does not retry in lockstep; "full jitter" in AWS's Architecture Blog, "Exponential
Backoff And Jitter", 2015, here bounded so a retry never comes sooner than
``(1 - jitter)`` of the plain delay). ``Retries`` keeps the count for one loop: ``failed()``
returns the next delay, and a run that lasted ``healthy_after_s`` before it failed starts the
count afresh.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HEALTHY_AFTER_S = 30.0
"""A run that lasted this long before failing starts its backoff from the beginning again."""


@dataclass
class Backoff:
    """Capped exponential backoff with jitter (seconds; see the module docstring).

    ``base`` > 0 is the first delay, ``cap`` >= ``base`` the longest, ``jitter`` in [0, 1) the
    share taken off at random. Raises ``ValueError`` for anything else.
    """

    base: float = 0.2
    cap: float = 10.0
    jitter: float = 0.3
    rng: random.Random = field(default_factory=random.Random)
    healthy_after_s: float = HEALTHY_AFTER_S

    def __post_init__(self) -> None:
        if not (self.base > 0 and self.cap >= self.base and 0 <= self.jitter < 1 and self.healthy_after_s >= 0):
            raise ValueError(f"backoff needs base > 0, cap >= base and 0 <= jitter < 1, got base={self.base}, "
                             f"cap={self.cap}, jitter={self.jitter}")

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1 = the first retry)."""
        raw = min(self.cap, self.base * (2 ** min(max(0, attempt - 1), 60)))
        return float(raw * (1.0 - self.jitter * self.rng.random()))

    def retries(self, clock: Callable[[], float] = time.monotonic) -> Retries:
        """A fresh retry count for one loop."""
        return Retries(self, clock)


class Retries:
    """The retry count of one loop. ``started()`` when a run begins; ``failed()`` when it ends
    in failure returns the delay before the next run (the count restarts when the run lasted
    ``healthy_after_s``); ``attempt`` is the number of the retry that delay is for."""

    def __init__(self, backoff: Backoff, clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff
        self.clock = clock
        self.attempt = 0
        self._started_at: float | None = None

    def started(self) -> None:
        self._started_at = self.clock()

    def failed(self) -> float:
        now = self.clock()
        if self._started_at is not None and now - self._started_at >= self.backoff.healthy_after_s:
            self.attempt = 0
        self._started_at = None
        self.attempt += 1
        return self.backoff.delay(self.attempt)

    def reset(self) -> None:
        """A success: the next failure waits ``base`` again."""
        self.attempt = 0
