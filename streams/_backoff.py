"""Backoff: how long a WebSocket source waits before its next reconnection attempt."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from querysync._exceptions import ConfigurationError

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """A capped, jittered exponential reconnection schedule (all times in seconds).

    The delay before reconnection attempt ``n`` (1 for the first attempt after a
    drop) is ``min(initial * factor ** (n - 1), max_delay)`` plus a random jitter of
    up to ``jitter`` times that value, drawn from ``rng``. The defaults follow the
    reference web client: 1 s, 1.5 s, 2.25 s, ... capped at 30 s, plus jitter, so
    that many clients of one restarted server do not all come back at once.

    ``rng`` is injectable so that a test can fix the jitter with ``random.Random(seed)``.
    """

    initial: float = 1.0
    """Delay before the first reconnection attempt, seconds (default 1.0)."""
    factor: float = 1.5
    """Growth per further attempt (default 1.5)."""
    max_delay: float = 30.0
    """Cap on the delay before jitter, seconds (default 30.0)."""
    jitter: float = 0.25
    """Upper bound of the random extra, as a fraction of the delay (default 0.25)."""
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        numbers = (self.initial, self.factor, self.max_delay, self.jitter)
        if not all(math.isfinite(x) for x in numbers):
            raise ConfigurationError(f"backoff values must be finite numbers: {self!r}")
        if self.initial < 0 or self.max_delay < self.initial:
            raise ConfigurationError(
                f"backoff needs 0 <= initial <= max_delay, got {self.initial} and {self.max_delay}"
            )
        if self.factor < 1:
            raise ConfigurationError(f"backoff factor must be >= 1, got {self.factor}")
        if self.jitter < 0:
            raise ConfigurationError(f"backoff jitter must be >= 0, got {self.jitter}")

    def base_delay(self, attempt: int) -> float:
        """The delay before attempt ``attempt`` (counted from 1), without jitter."""
        if attempt < 1:
            raise ConfigurationError(f"attempts are counted from 1, got {attempt}")
        try:
            grown = self.initial * self.factor ** (attempt - 1)
        except OverflowError:
            # After a few thousand attempts the power no longer fits a float; it is
            # long past the cap anyway.
            return self.max_delay
        return min(grown, self.max_delay)

    def delay(self, attempt: int) -> float:
        """The delay before attempt ``attempt`` (counted from 1), jitter included."""
        base = self.base_delay(attempt)
        if self.jitter == 0 or base == 0:
            return base
        return base + self.rng.uniform(0.0, self.jitter * base)
