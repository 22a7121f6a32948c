"""Failed sign-ins slow down guessing: `FailureThrottle` counts failures per key (a user
name, a client address) in a sliding window and says how long a key must wait once it
has failed too often. In memory, per process: with several instances each allows the
limit, which still bounds guessing to a few tries a minute per instance."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class FailureThrottle:
    """At most `limit` failures per key within `window` seconds."""

    def __init__(self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be at least 1 and window positive")
        self._limit = limit
        self._window = window
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def wait(self, key: str) -> float:
        """Seconds `key` must wait before trying again (0: it may try now)."""
        times = self._recent(key)
        if len(times) < self._limit:
            return 0.0
        return max(0.0, times[0] + self._window - self._clock())

    def failed(self, key: str) -> None:
        if key not in self._failures and len(self._failures) >= self._max_keys:
            self._prune()
        self._failures.setdefault(key, deque(maxlen=self._limit)).append(self._clock())

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def _recent(self, key: str) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        cutoff = self._clock() - self._window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def _prune(self) -> None:
        for key in list(self._failures):
            self._recent(key)
        while len(self._failures) >= self._max_keys:   # still full: forget the oldest
            del self._failures[next(iter(self._failures))]
