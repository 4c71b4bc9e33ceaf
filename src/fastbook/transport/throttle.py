"""Bounded answers to hostile repetition: log lines rate-limited per key, and a per-source backoff
for failed logins (issue 15, D6: each wrong password cost a scrypt and a WARNING; 40 threads burnt
about 1.6 cores on amqtt and a slow consumer wrote about 200 tracebacks a second)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import Any


class LogThrottle:
    """At most one line per key per `interval` seconds; the lines held back are counted and the
    count goes on the key's next line. At most `max_keys` keys are remembered (oldest dropped)."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0, *, max_keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self.clock = clock
        self._keys: dict[Hashable, list[float]] = {}  # key -> [last logged at, held back since]

    def log(self, level: int, key: Hashable, message: str, *args: Any) -> bool:
        """Log `message % args` unless this key was logged less than `interval` ago; True if logged."""
        now = self.clock()
        state = self._keys.get(key)
        if state is not None and now - state[0] < self.interval:
            state[1] += 1
            return False
        held, since = (int(state[1]), now - state[0]) if state is not None else (0, 0.0)
        if state is not None:
            del self._keys[key]  # re-inserted last: the oldest keys are the ones dropped
        elif len(self._keys) >= self.max_keys:
            del self._keys[next(iter(self._keys))]
        self._keys[key] = [now, 0]
        if held:
            message = f"{message} (and {held} more like it in the last {since:.0f} s)"
        self.logger.log(level, message, *args)
        return True


class LoginBackoff:
    """Failed logins per source address. After `free_failures` failures in a row a source is in
    backoff for `base` seconds, doubling with each further failure up to `ceiling`; a login from
    it meanwhile is refused without checking the password (no scrypt). A success clears the source.
    Sources idle for `forget_after` seconds are forgotten; at most `max_sources` are remembered."""

    def __init__(self, *, free_failures: int = 5, base: float = 1.0, ceiling: float = 60.0,
                 forget_after: float = 600.0, max_sources: int = 65536,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free_failures = free_failures
        self.base = base
        self.ceiling = ceiling
        self.forget_after = forget_after
        self.max_sources = max_sources
        self.clock = clock
        self._sources: dict[str, tuple[int, float, float]] = {}  # source -> (failures, until, last)
        self.refused_unchecked = 0  # logins refused without a password check (for tests, status)

    def blocked(self, source: str) -> float:
        """Seconds the source is still in backoff (0: check its password)."""
        entry = self._sources.get(source)
        if entry is None:
            return 0.0
        now = self.clock()
        if now - entry[2] > self.forget_after:
            del self._sources[source]
            return 0.0
        left = entry[1] - now
        if left > 0:
            self.refused_unchecked += 1
            return left
        return 0.0

    def failed(self, source: str) -> int:
        """Count a failure; the source's failures in a row."""
        now = self.clock()
        failures = self._sources.pop(source, (0, 0.0, now))[0] + 1
        if len(self._sources) >= self.max_sources:
            del self._sources[next(iter(self._sources))]
        over = failures - self.free_failures
        until = now + min(self.ceiling, self.base * 2 ** min(over, 32)) if over >= 0 else 0.0
        self._sources[source] = (failures, until, now)
        return failures

    def succeeded(self, source: str) -> None:
        self._sources.pop(source, None)
