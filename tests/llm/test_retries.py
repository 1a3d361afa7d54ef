"""Backoff pacing and the circuit breaker, without a server."""

from __future__ import annotations

import random
import threading

import pytest

from mbt_online.llm.retries import CircuitBreaker, Fatal, Retryable, backoff_delay


@pytest.mark.parametrize("attempt", [1, 2, 3, 4])
def test_backoff_is_the_exponential_times_a_jitter_in_half_to_one(attempt: int):
    base = 0.5 * 2 ** (attempt - 1)  # 0.5, 1, 2, 4: all under the ceiling
    delays = [backoff_delay(attempt, 0.5, 100.0, None) for _ in range(400)]
    assert all(0.5 * base <= d <= base for d in delays)
    # jitter, not a constant: the draws spread over most of the band
    assert max(delays) - min(delays) > 0.3 * base


def test_backoff_uses_the_jitter_draw_exactly(monkeypatch: pytest.MonkeyPatch):
    asked: list[tuple[float, float]] = []

    def uniform(lo: float, hi: float) -> float:
        asked.append((lo, hi))
        return 0.75

    monkeypatch.setattr(random, "uniform", uniform)
    assert backoff_delay(3, 1.0, 60.0, None) == pytest.approx(3.0)  # 1 * 2**2 * 0.75
    assert asked == [(0.5, 1.0)]


def test_backoff_never_exceeds_the_ceiling():
    delays = [backoff_delay(30, 1.0, 8.0, None) for _ in range(200)]
    assert all(4.0 <= d <= 8.0 for d in delays)  # 2**29 s capped to 8 before the jitter


def test_a_longer_retry_after_wins_and_a_shorter_one_does_not():
    assert backoff_delay(1, 1.0, 10.0, 7.5) == 7.5  # jittered backoff is at most 1 s
    # Retry-After 0.1 s is shorter than any draw in [0.5, 1]: the backoff stands
    delays = [backoff_delay(1, 1.0, 10.0, 0.1) for _ in range(100)]
    assert all(0.5 <= d <= 1.0 for d in delays)


def test_failures_carry_their_fields():
    r = Retryable("http_503", "busy", retry_after=2.0)
    f = Fatal("http_400", "bad request", attempts=3)
    assert (r.kind, r.detail, r.retry_after, str(r)) == ("http_503", "busy", 2.0, "busy")
    assert (f.kind, f.detail, f.attempts, str(f)) == ("http_400", "bad request", 3, "bad request")
    assert Fatal("x", "y").attempts == 1


def test_the_breaker_opens_exactly_at_the_nth_outage_and_says_so_once():
    breaker = CircuitBreaker(3)
    assert [breaker.count_outage() for _ in range(5)] == [False, False, True, False, False]
    assert breaker.why == "3 consecutive connection errors or timeouts"


def test_a_closed_breaker_lets_requests_through():
    breaker = CircuitBreaker(2)
    breaker.count_outage()
    breaker.check()  # one outage of two: still closed
    assert breaker.why == ""


def test_an_answer_restarts_the_count():
    breaker = CircuitBreaker(3)
    breaker.count_outage()
    breaker.count_outage()
    breaker.reset()
    assert [breaker.count_outage() for _ in range(3)] == [False, False, True]


def test_an_open_breaker_refuses_without_sending():
    breaker = CircuitBreaker(1)
    assert breaker.count_outage() is True
    with pytest.raises(Fatal) as err:
        breaker.check()
    assert err.value.kind == "circuit_open" and err.value.attempts == 0
    assert "circuit breaker open (1 consecutive" in str(err.value)


def test_reset_does_not_close_an_open_breaker():
    """Only outages in a row are forgotten: an opened breaker stays open for the stage."""
    breaker = CircuitBreaker(2)
    breaker.count_outage()
    breaker.count_outage()
    breaker.reset()
    with pytest.raises(Fatal):
        breaker.check()


def test_concurrent_outages_open_the_breaker_exactly_once():
    breaker = CircuitBreaker(50)
    opened: list[bool] = []
    lock = threading.Lock()

    def hit() -> None:
        for _ in range(25):
            result = breaker.count_outage()
            with lock:
                opened.append(result)

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(opened) == 200 and opened.count(True) == 1
    assert breaker.why.startswith("50 consecutive")
