"""A client for OpenAI-compatible chat endpoints (`vllm serve`, hosted APIs): teacher and judges.

Plain `httpx` rather than the `openai` package, because the behaviour a run depends on is ours and
tested: which failures are retried (connection errors, timeouts, 408/429/5xx, malformed bodies) and
which are not (other 4xx: retrying a bad request only burns quota); how long to back off; that every
answer is cached on disk so a resumed run never pays twice for the same request; and that token
usage is counted in one place.

The API key is read from the environment at request time and only ever placed in the
`Authorization` header. It is not an attribute, not part of the cache key, not in any cache file,
and every error message is redacted before it is logged or returned, because servers and proxies
sometimes echo request headers back in their error bodies. A key with control characters is refused
before sending, and a key goes only over https or to this machine (`endpoint.py` holds these rules).

An endpoint that is down must cost little: connecting has its own short timeout, bodies are read
with a size cap, a `Retry-After` past a ceiling fails at once, and after `breaker_failures`
consecutive connection errors or timeouts the client stops sending (`circuit_open` failures), so
the calling stage can fail quickly and a resume re-sends only what failed (failures are never
cached).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from mbt_online.contracts import note_failure
from mbt_online.llm.endpoint import (
    check_base_url,
    key_may_go_to,
    key_problem,
    redact_secret,
    redact_url,
)
from mbt_online.llm.request_cache import RequestCache, cache_key
from mbt_online.llm.retries import CircuitBreaker, Fatal, Retryable, backoff_delay
from mbt_online.llm.wire import (
    RETRY_STATUSES,
    ChatFailure,
    ChatRequest,
    ChatResult,
    LLMError,
    MalformedResponse,
    choice_token_counts,
    parse_chat_response,
    retry_after,
    sampled_tokens,
)

log = logging.getLogger("mbt_online.llm.client")

# Failure kinds that say the endpoint is unreachable (not that one request was bad): the breaker
# counts the first two, and a stage may treat all three as an outage.
OUTAGE_KINDS = frozenset({"timeout", "connection", "circuit_open"})


class LLMClient:
    """Chat completions with bounded concurrency, retries with backoff, a per-request timeout, a
    disk cache and token accounting. Thread-safe: `chat` may be called from many threads."""

    def __init__(
        self,
        base_url: str,
        model: str = "",
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        cache_dir: str | Path | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        max_response_bytes: int = 8_000_000,
        max_retry_after_s: float = 60.0,
        breaker_failures: int = 5,
        allow_insecure_key: bool = False,
    ) -> None:
        """`model` "" asks the server which model it serves (a `vllm serve` has exactly one).

        `timeout_s` bounds each wait for data and `connect_timeout_s` connecting: a server that
        sends nothing for that long is treated as down and the request retried. `max_retries`
        counts retries after the first try, so a request is sent at most `max_retries + 1` times.
        A `Retry-After` is honoured up to `max_retry_after_s`; past it the request fails at once.
        ValueError when `base_url` carries credentials or a query (see `check_base_url`).
        """
        if concurrency < 1 or breaker_failures < 1 or max_response_bytes < 1:
            raise ValueError("concurrency, breaker_failures and max_response_bytes must be >= 1")
        self.base_url = check_base_url(base_url).rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_response_bytes = max_response_bytes
        self.max_retry_after_s = max_retry_after_s
        self.breaker_failures = breaker_failures
        self.allow_insecure_key = allow_insecure_key
        self._breaker = CircuitBreaker(breaker_failures, redact_url(self.base_url))
        self._cache = RequestCache(self.cache_dir)
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    def __repr__(self) -> str:
        return f"LLMClient(base_url={redact_url(self.base_url)!r}, model={self.model!r})"

    # -- public ------------------------------------------------------------------------------------

    def chat(
        self,
        messages: list[dict],
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        seed: int | None = None,
        top_p: float | None = None,
    ) -> ChatResult:
        """One request; raises LLMError when it fails for good."""
        out = self.complete(ChatRequest(messages, n, temperature, max_tokens, seed, top_p))
        if isinstance(out, ChatFailure):
            raise LLMError(out)
        return out

    def chat_many(self, requests: Sequence[ChatRequest]) -> list[ChatResult | ChatFailure]:
        """All requests, in order, at most `concurrency` in flight; failures are returned, not
        raised, so one bad request never loses the answers of the others."""
        if not requests:
            return []
        workers = min(self.concurrency, len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm") as pool:
            return list(pool.map(self.complete, requests))

    def complete(self, req: ChatRequest) -> ChatResult | ChatFailure:
        """One request through cache, retries and accounting; never raises for server trouble."""
        try:
            payload = self._payload(req)
        except ValueError as e:
            return self._failure("no_model", str(e), 1)
        except Fatal as e:
            return self._failure(e.kind, e.detail, e.attempts)
        key = cache_key(self.base_url, payload)
        hit = self._cache.get(key)
        if hit is not None:
            self._count(cache_hits=1)
            return hit
        try:
            result = self._post_with_retries(payload)
        except Fatal as e:
            return self._failure(e.kind, e.detail, e.attempts)
        self._cache.put(key, result)
        self._count(
            responses=1,
            prompt_tokens=result.usage["prompt_tokens"],
            completion_tokens=result.usage["completion_tokens"],
        )
        return result

    @property
    def breaker_open(self) -> bool:
        """Whether the circuit breaker has opened: every further request fails as circuit_open."""
        return bool(self._breaker.why)

    @property
    def usage(self) -> dict[str, int]:
        """Running totals: paid tokens, HTTP requests, retries, cache hits, failures by kind."""
        with self._lock:
            out = {k: self._counts.get(k, 0) for k in _USAGE_KEYS}
            out.update({k: v for k, v in self._counts.items() if k.startswith("failures_")})
            return out

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- request ---------------------------------------------------------------------------------

    def _payload(self, req: ChatRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self._model_name(),
            "messages": req.messages,
            "n": req.n,
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
        }
        if req.seed is not None:
            payload["seed"] = req.seed
        if req.top_p is not None:
            payload["top_p"] = req.top_p
        return {**payload, **req.extra}

    def _model_name(self) -> str:
        """The configured model, or the first one the server lists (asked once)."""
        with self._model_lock:  # not self._lock: asking the server counts and checks the breaker
            if not self.model:
                self.model = self._served_model()
            return self.model

    def _served_model(self) -> str:
        """Raises Fatal for what would fail every request alike (key refused, breaker open)."""
        try:
            status, _, body = self._send("GET", f"{self.base_url}/models", count=False)
            if status != 200:
                raise ValueError(f"HTTP {status}")
            return json.loads(body)["data"][0]["id"]
        except (Retryable, ValueError, KeyError, IndexError, TypeError, RecursionError) as e:
            msg = f"no model configured and {self.base_url}/models did not name one: {e}"
            raise ValueError(self._redact(msg)) from None

    def _key(self) -> str:
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    def _headers(self) -> dict[str, str]:
        """The Authorization header, or Fatal before anything is sent: a key httpx would reject
        (and quote in its error), or a key bound for plain http to another machine."""
        key = self._key()
        if not key:
            return {}
        problem = key_problem(key)
        if problem:
            raise Fatal("bad_key", f"the API key in ${self.api_key_env} {problem}; not sent")
        if not (self.allow_insecure_key or key_may_go_to(self.base_url)):
            raise Fatal(
                "insecure_key",
                f"not sending the API key over plain http to {redact_url(self.base_url)}: use "
                "https, a loopback address, or set teacher.allow_insecure_key",
            )
        return {"Authorization": f"Bearer {key}"}

    def _redact(self, text: str) -> str:
        return redact_url(redact_secret(text, self._key()))

    def _post_with_retries(self, payload: dict[str, Any]) -> ChatResult:
        last: Retryable | None = None
        for attempt in range(self.max_retries + 1):
            if last is not None:
                self._count(retries=1)
                delay = self._backoff(attempt, last.retry_after)
                log.warning(
                    "llm request retry %d/%d in %.2fs after %s: %s",
                    attempt,
                    self.max_retries,
                    delay,
                    last.kind,
                    last.detail,
                )
                time.sleep(delay)
            try:
                texts, reasons, usage, counts, (prompt, samples) = self._post_once(payload)
            except Retryable as e:
                last = e
                continue
            except Fatal as e:  # circuit_open: this attempt was never sent
                e.attempts = attempt + int(e.kind != "circuit_open")
                if last is not None and e.kind == "circuit_open":
                    e.detail += f"; last error: {last.kind}: {last.detail}"
                raise
            return ChatResult(texts, usage, False, reasons, attempt + 1, counts, prompt, samples)
        assert last is not None
        raise Fatal(last.kind, last.detail, self.max_retries + 1)

    def _post_once(self, payload: dict[str, Any]) -> tuple[list, list, dict, list[int], tuple]:
        with self._slots:
            status, headers, body = self._send("POST", f"{self.base_url}/chat/completions", payload)
        return self._read(status, headers, body)

    def _send(
        self, method: str, url: str, payload: dict[str, Any] | None = None, *, count: bool = True
    ) -> tuple[int, httpx.Headers, bytes]:
        """Status, headers and body (at most `max_response_bytes`), through the breaker: a
        connection error or timeout counts toward opening it, any answer closes the count.
        `count=False` for the one-off model lookup: `requests` counts chat requests, so a resumed
        stage whose replies are all cached reads 0."""
        headers = self._headers()
        self._breaker_check()
        if count:
            self._count(requests=1)
        try:
            with self._http.stream(method, url, json=payload, headers=headers) as resp:
                body = self._read_capped(resp)
                status, resp_headers = resp.status_code, resp.headers
        except httpx.TimeoutException as e:
            raise self._outage("timeout", e) from None
        except httpx.DecodingError as e:
            raise Retryable("malformed", self._redact(f"{type(e).__name__}: {e}")) from None
        except httpx.HTTPError as e:
            raise self._outage("connection", e) from None
        self._breaker.reset()
        return status, resp_headers, body

    def _read_capped(self, resp: httpx.Response) -> bytes:
        """The body, streamed, or Fatal("too_large") as soon as it passes the cap: a runaway or
        hostile server must not fill memory, and asking again would only repeat it."""
        cap = self.max_response_bytes
        declared = resp.headers.get("content-length", "")
        too_large = f"HTTP {resp.status_code}: body over teacher.max_response_bytes={cap}"
        if declared.isdigit() and int(declared) > cap:
            raise Fatal("too_large", f"{too_large} (Content-Length {declared})")
        buf = bytearray()
        for chunk in resp.iter_bytes():
            buf += chunk
            if len(buf) > cap:
                raise Fatal("too_large", too_large)
        return bytes(buf)

    def _read(
        self, status: int, headers: httpx.Headers, raw: bytes
    ) -> tuple[list[str], list[str], dict[str, int], list[int], tuple]:
        # Redacted before anything reads it: a server that echoes headers into its error or even
        # into a completion must not carry the key into logs, caches or artifacts. A completion
        # loses only the key itself: its own words ("bearer bonds", URLs) stay as written.
        text = raw.decode("utf-8", errors="replace")
        if status < 400:
            body = redact_secret(text, self._key(), bearer=False)
            try:
                data = json.loads(body)
                parsed = parse_chat_response(data)
                return (*parsed, choice_token_counts(data), sampled_tokens(data))
            except (ValueError, MalformedResponse, RecursionError) as e:
                raise Retryable("malformed", self._redact(f"{e}; body: {body[:200]}")) from None
        body = self._redact(text)
        kind, detail = f"http_{status}", f"HTTP {status}: {body[:300]}"
        retry = status in RETRY_STATUSES or status >= 500
        should = headers.get("x-should-retry", "").strip().lower()
        retry = {"true": True, "false": False}.get(should, retry)  # the server knows best
        if not retry:
            raise Fatal(kind, detail + ("; x-should-retry: false" if should == "false" else ""))
        wait = retry_after(headers)
        if wait is not None and wait > self.max_retry_after_s:
            raise Fatal(
                kind,
                f"{detail}; Retry-After {wait:.0f}s is past teacher.max_retry_after_s="
                f"{self.max_retry_after_s:g}: not waiting",
            )
        raise Retryable(kind, detail, wait)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        return backoff_delay(attempt, self.backoff_s, self.max_backoff_s, retry_after)

    # -- circuit breaker -------------------------------------------------------------------------

    def _breaker_check(self) -> None:
        self._breaker.check()

    def _outage(self, kind: str, e: Exception) -> Retryable:
        """A connection error or timeout, counted: the Nth in a row opens the breaker."""
        detail = self._redact(f"{type(e).__name__}: {e}")
        if self._breaker.count_outage(f"{kind}: {detail}"):
            log.error(
                "llm endpoint %s unreachable (%s): circuit breaker open, the remaining requests "
                "fail at once as circuit_open",
                redact_url(self.base_url),
                detail,
            )
        return Retryable(kind, detail)

    def _failure(self, kind: str, detail: str, attempts: int) -> ChatFailure:
        self._count(failures=1, **{f"failures_{kind}": 1})
        note_failure(redact_url(self.base_url), kind, detail)  # the stage's error names it
        # circuit_open is logged once, when the breaker opens, not once per refused request
        level = logging.DEBUG if kind == "circuit_open" else logging.ERROR
        msg = "llm request failed for good (%s, %d attempt(s)): %s"
        log.log(level, msg, kind, attempts, detail)
        return ChatFailure(kind, detail, attempts)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            self._counts.update(deltas)


_USAGE_KEYS = (
    "requests",
    "responses",
    "retries",
    "cache_hits",
    "failures",
    "prompt_tokens",
    "completion_tokens",
)


def make_client(teacher_cfg: Any, cache_dir: str | Path | None = None, **kw: Any) -> LLMClient:
    """A client from the `teacher` config section (endpoint, model, key variable, limits)."""
    return LLMClient(
        base_url=teacher_cfg.base_url,
        model=teacher_cfg.model,
        api_key_env=teacher_cfg.api_key_env,
        concurrency=teacher_cfg.concurrency,
        timeout_s=teacher_cfg.timeout_s,
        connect_timeout_s=teacher_cfg.connect_timeout_s,
        max_response_bytes=teacher_cfg.max_response_bytes,
        max_retry_after_s=teacher_cfg.max_retry_after_s,
        breaker_failures=teacher_cfg.breaker_failures,
        allow_insecure_key=teacher_cfg.allow_insecure_key,
        cache_dir=cache_dir,
        **kw,
    )
