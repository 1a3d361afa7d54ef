"""How one request's failures are classed and paced: `Retryable` (worth another try after a
pause) or `Fatal` (will not succeed), exponential backoff with jitter, and the circuit breaker
that stops sending after N consecutive connection errors or timeouts, so an endpoint that is down
costs seconds, not the stage's whole deadline."""

from __future__ import annotations

import random
import threading

from mbt_online.contracts import note_outage


class Retryable(Exception):
    """A failure worth another try after a pause."""

    def __init__(self, kind: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


class Fatal(Exception):
    """A request that will not succeed: a non-retryable status, or retries exhausted."""

    def __init__(self, kind: str, detail: str, attempts: int = 1) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.attempts = kind, detail, attempts


def backoff_delay(
    attempt: int, backoff_s: float, max_backoff_s: float, retry_after: float | None
) -> float:
    """Exponential backoff with jitter (so parallel retries do not arrive together); a server's
    Retry-After (already at most the client's ceiling) wins when it asks for longer."""
    delay = min(max_backoff_s, backoff_s * 2 ** (attempt - 1))
    delay *= random.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


class CircuitBreaker:
    """Counts consecutive outages (connection errors, timeouts); the `failures`-th opens it, and
    an open breaker refuses every further request without sending it. Thread-safe.

    It keeps the first outage of the run that opened it (the root cause: "connection refused",
    not the breaker's own refusals) and, on opening, tells `contracts.note_outage` with its
    `endpoint`, so the stage that fails on it names both (`contracts.check_failures`)."""

    def __init__(self, failures: int, endpoint: str = "") -> None:
        self.failures, self.endpoint = failures, endpoint
        self._outages = 0
        self._first = ""  # the first outage of the current run of them
        self._why = ""  # why it opened; "" while closed
        self._lock = threading.Lock()

    @property
    def why(self) -> str:
        with self._lock:
            return self._why

    def check(self) -> None:
        """Raise `Fatal("circuit_open")` (attempts 0: never sent) while the breaker is open."""
        why = self.why
        if why:
            raise Fatal("circuit_open", f"not sent: circuit breaker open ({why})", 0)

    def reset(self) -> None:
        """An answer arrived: the outages in a row start again from zero."""
        with self._lock:
            self._outages = 0

    def count_outage(self, cause: str = "") -> bool:
        """Count one outage (`cause`: its kind and detail); True exactly when this one opened the
        breaker."""
        with self._lock:
            if self._outages == 0:
                self._first = cause
            self._outages += 1
            opens = self._outages >= self.failures and not self._why
            if opens:
                self._why = f"{self._outages} consecutive connection errors or timeouts"
                self._why += f", the first: {self._first}" if self._first else ""
        if opens:
            note_outage(self.endpoint or "the endpoint", self._first or "connection errors")
        return opens
