"""LLMClient against a local server that misbehaves on purpose: retries, timeouts, cache, usage,
bounded concurrency, and the API key kept out of everything but the Authorization header."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from fake_llm_server import BlackHole, FakeLLMServer

from mbt_online.llm.client import LLMClient
from mbt_online.llm.endpoint import key_may_go_to, redact_secret, redact_url
from mbt_online.llm.wire import (
    ChatFailure,
    ChatRequest,
    ChatResult,
    LLMError,
    MalformedResponse,
    choice_token_counts,
    parse_chat_response,
)

MSG = [{"role": "user", "content": "two words"}]
SECRET = "sk-test-SECRET-4242"


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        yield s


def client_for(server: FakeLLMServer, **kw) -> LLMClient:
    kw.setdefault("backoff_s", 0.001)
    kw.setdefault("max_backoff_s", 0.01)
    kw.setdefault("api_key_env", "MBT_TEST_LLM_KEY")
    return LLMClient(server.base_url, "m", **kw)


def test_chat_returns_n_texts_and_counts_usage(server):
    with client_for(server) as client:
        res = client.chat(MSG, n=2, temperature=0.5, max_tokens=7, seed=3)
    assert res.texts == ["answer 0", "answer 1"]
    assert res.usage == {"prompt_tokens": 2, "completion_tokens": 4}
    assert (res.cached, res.attempts) == (False, 1)
    sent = server.payloads[0]
    assert (sent["n"], sent["temperature"], sent["max_tokens"], sent["seed"]) == (2, 0.5, 7, 3)
    assert sent["model"] == "m" and sent["messages"] == MSG
    u = client.usage
    assert (u["requests"], u["responses"], u["prompt_tokens"], u["completion_tokens"]) == (
        1,
        1,
        2,
        4,
    )


def test_disk_cache_serves_repeats_and_survives_a_new_client(server, tmp_path):
    with client_for(server, cache_dir=tmp_path) as client:
        first = client.chat(MSG, seed=1)
        again = client.chat(MSG, seed=1)
        other = client.chat(MSG, seed=2)
        assert client.usage["cache_hits"] == 1
        # paid tokens count only real responses; a cached answer costs nothing
        assert client.usage["completion_tokens"] == 4
    assert not first.cached and again.cached and not other.cached
    assert again.texts == first.texts and again.usage == first.usage
    assert server.chat_requests == 2
    with client_for(server, cache_dir=tmp_path) as resumed:  # a resumed run
        assert resumed.chat(MSG, seed=1).cached
        assert resumed.usage["requests"] == 0
    assert server.chat_requests == 2


def test_extra_fields_are_sent_and_token_ids_give_per_choice_counts(server, tmp_path):
    """vLLM's request fields (top_k, return_token_ids) go along; the choices' token ids become
    each completion's length (usage only sums them), cached with the answer."""
    ordinary = server.completion

    def with_ids(payload: dict) -> dict:
        body = ordinary(payload)
        for k, choice in enumerate(body["choices"]):
            choice["token_ids"] = [1] * (k + 3)
        return body

    server.completion = with_ids
    req = ChatRequest(MSG, n=2, seed=1, extra={"top_k": 5, "return_token_ids": True})
    with client_for(server, cache_dir=tmp_path) as client:
        first, again = client.complete(req), client.complete(req)
    assert server.payloads[0]["top_k"] == 5 and server.payloads[0]["return_token_ids"] is True
    assert first.completion_tokens == [3, 4] and not first.cached
    assert again.completion_tokens == [3, 4] and again.cached and server.chat_requests == 1
    assert choice_token_counts({"choices": [{"index": 0, "token_ids": [1]}, {"index": 1}]}) == []


def test_cache_key_ignores_the_api_key_and_cache_files_never_hold_it(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MBT_TEST_LLM_KEY", SECRET)
    with client_for(server, cache_dir=tmp_path) as client:
        client.chat(MSG)
    assert server.auth == [f"Bearer {SECRET}"]
    monkeypatch.setenv("MBT_TEST_LLM_KEY", "sk-rotated")
    with client_for(server, cache_dir=tmp_path) as client:
        assert client.chat(MSG).cached
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(SECRET not in p.read_text() and SECRET not in str(p) for p in files)
    assert SECRET not in repr(client) and SECRET not in json.dumps(vars(client), default=str)


def test_no_key_in_environment_sends_no_authorization(server, monkeypatch):
    monkeypatch.delenv("MBT_TEST_LLM_KEY", raising=False)
    with client_for(server) as client:
        client.chat(MSG)
    assert server.auth == [""]


def test_retries_5xx_429_and_malformed_bodies_then_succeeds(server):
    server.plan = ["500", "429", "malformed", "no_choices"]
    with client_for(server, max_retries=4) as client:
        res = client.chat(MSG)
        assert client.usage["retries"] == 4 and client.usage["requests"] == 5
    assert res.texts == ["answer 0"] and res.attempts == 5


def test_gives_up_after_max_retries_with_the_failure_kind(server):
    server.plan = ["503"] * 3
    with client_for(server, max_retries=2) as client:
        out = client.chat_many([ChatRequest(MSG)])[0]
        assert isinstance(out, ChatFailure)
        assert (out.kind, out.attempts) == ("http_503", 3)
        assert client.usage["failures"] == 1 and client.usage["failures_http_503"] == 1
        server.plan = ["503"] * 3
        with pytest.raises(LLMError, match="http_503 after 3 attempt"):
            client.chat(MSG)


def test_client_errors_are_not_retried(server):
    server.plan = ["400"]
    with client_for(server, max_retries=5) as client:
        out = client.complete(ChatRequest(MSG))
    assert isinstance(out, ChatFailure) and (out.kind, out.attempts) == ("http_400", 1)
    assert server.chat_requests == 1


def test_slower_than_timeout_is_retried_and_then_fails_as_timeout(server):
    server.slow_s = 1.0
    server.plan = ["slow"]
    with client_for(server, timeout_s=0.2, max_retries=1) as client:
        ok = client.chat(MSG)
        server.plan = ["slow", "slow"]
        bad = client.complete(ChatRequest(MSG, seed=9))
    assert ok.attempts == 2 and ok.texts == ["answer 0"]
    assert isinstance(bad, ChatFailure) and (bad.kind, bad.attempts) == ("timeout", 2)


def test_dropped_connection_is_retried(server):
    server.plan = ["drop"]
    with client_for(server) as client:
        assert client.chat(MSG).attempts == 2


def test_unreachable_server_fails_as_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free now, nobody listens after the with-block
    with LLMClient(f"http://127.0.0.1:{port}/v1", "m", max_retries=2, backoff_s=0.001) as client:
        out = client.complete(ChatRequest(MSG))
    assert isinstance(out, ChatFailure) and (out.kind, out.attempts) == ("connection", 3)


def test_concurrency_is_bounded_and_order_kept():
    def echo(payload, i):
        return payload["messages"][0]["content"].upper()

    with FakeLLMServer(responder=echo, delay_s=0.15) as server:
        reqs = [ChatRequest([{"role": "user", "content": f"q{k}"}]) for k in range(9)]
        with client_for(server, concurrency=3) as client:
            outs = client.chat_many(reqs)
    assert [o.texts[0] for o in outs] == [f"Q{k}" for k in range(9)]
    assert 2 <= server.max_inflight <= 3


def test_one_failure_does_not_lose_the_other_answers(server):
    server.plan = ["400"]
    reqs = [ChatRequest([{"role": "user", "content": f"q{k}"}]) for k in range(3)]
    with client_for(server, concurrency=1) as client:
        outs = client.chat_many(reqs)
    assert isinstance(outs[0], ChatFailure)
    assert all(isinstance(o, ChatResult) for o in outs[1:])


def test_api_key_is_redacted_from_errors_and_logs(server, monkeypatch, caplog):
    monkeypatch.setenv("MBT_TEST_LLM_KEY", SECRET)
    server.plan = ["echo401"]
    with caplog.at_level(logging.DEBUG), client_for(server) as client:
        out = client.complete(ChatRequest(MSG))
    assert server.auth == [f"Bearer {SECRET}"]  # it was sent...
    assert isinstance(out, ChatFailure) and out.kind == "http_401"
    assert "Bearer ***" in out.error and SECRET not in out.error  # ...and never repeated
    assert caplog.records and SECRET not in caplog.text


def test_model_is_asked_from_the_server_when_not_configured(server):
    with LLMClient(server.base_url, "", backoff_s=0.001) as client:
        client.chat(MSG)
        assert client.model == "fake-model"
    assert server.payloads[0]["model"] == "fake-model"


def test_corrupt_cache_entry_is_a_miss_and_gets_rewritten(server, tmp_path):
    with client_for(server, cache_dir=tmp_path) as client:
        client.chat(MSG)
        (entry,) = list(tmp_path.rglob("*.json"))
        entry.write_text("{half")
        assert not client.chat(MSG).cached
        assert client.chat(MSG).cached
    assert server.chat_requests == 2


def test_parse_chat_response_reads_choices_in_index_order_and_null_content():
    body = {
        "choices": [
            {"index": 1, "message": {"content": None}, "finish_reason": "length"},
            {"index": 0, "message": {"content": "a"}, "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 9},
    }
    assert parse_chat_response(body) == (
        ["a", ""],
        ["stop", "length"],
        {"prompt_tokens": 3, "completion_tokens": 9},
    )
    for bad in ([], {"choices": []}, {"choices": [{"text": "x"}]}, {"error": "overloaded"}):
        with pytest.raises(MalformedResponse):
            parse_chat_response(bad)


# -- hardening: size cap, keys, URLs, Retry-After, x-should-retry, timeouts, circuit breaker ---


@pytest.mark.parametrize("mode", ["huge", "huge_chunked"])
def test_body_over_the_cap_fails_as_too_large_not_retried_not_cached(server, tmp_path, mode):
    server.plan = [mode]
    with client_for(server, cache_dir=tmp_path, max_retries=3, max_response_bytes=50_000) as c:
        out = c.complete(ChatRequest(MSG))
        assert isinstance(out, ChatFailure) and (out.kind, out.attempts) == ("too_large", 1)
        assert "max_response_bytes=50000" in out.error and c.usage["failures_too_large"] == 1
        assert server.chat_requests == 1 and not list(tmp_path.rglob("*.json"))
        assert not c.chat(MSG).cached  # asked again (nothing cached), the normal answer fits


@pytest.mark.parametrize("bad_key", [SECRET + "\r", SECRET + "\n", "sk-te\x1bst-" + SECRET])
def test_api_key_with_control_characters_is_refused_before_sending(
    server, monkeypatch, caplog, bad_key
):
    monkeypatch.setenv("MBT_TEST_LLM_KEY", bad_key)
    with caplog.at_level(logging.DEBUG), client_for(server, max_retries=2) as client:
        out = client.complete(ChatRequest(MSG))
    assert isinstance(out, ChatFailure) and (out.kind, out.attempts) == ("bad_key", 1)
    assert "MBT_TEST_LLM_KEY" in out.error and "position" in out.error
    assert server.chat_requests == 0
    assert SECRET not in out.error and SECRET not in caplog.text


def test_redaction_does_not_need_an_exact_match():
    key = SECRET + "\r"
    for leak in (
        f"Illegal header value b'Bearer {SECRET}\\r'",  # httpx's error: the \\r escaped
        f"token={SECRET} was rejected",  # the key without its control character
        f'{{"error": "bad key {json.dumps(key)}"}}',  # JSON-escaped echo
        f"Authorization: bearer {SECRET[:-2]}",  # a truncated echo after "Bearer"
    ):
        assert SECRET[:10] not in redact_secret(leak, key), leak
    assert redact_secret("nothing secret here", key) == "nothing secret here"


@pytest.mark.parametrize(
    "url", ["http://user:pw-777@127.0.0.1:8000/v1", "https://h/v1?api_key=pw-777", "ftp://h/v1"]
)
def test_base_url_with_credentials_or_a_query_is_refused(url):
    from mbt_online.config import ConfigError, load_config

    with pytest.raises(ValueError, match="base_url") as err:
        LLMClient(url, "m")
    with pytest.raises(ConfigError, match="teacher.base_url") as cfg_err:
        load_config(None, [f"teacher.base_url={url}"])
    assert "pw-777" not in str(err.value) and "pw-777" not in str(cfg_err.value)
    assert redact_url(f"see {url} now").count("pw-777") == 0


def test_key_goes_only_over_https_or_to_loopback(monkeypatch):
    for url, ok in [
        ("https://api.example.com/v1", True),
        ("http://127.0.0.1:8000/v1", True),
        ("http://127.9.9.9/v1", True),
        ("http://localhost:8000/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://10.0.0.1/v1", False),
        ("http://127.example.com/v1", False),
    ]:
        assert key_may_go_to(url) is ok, url
    monkeypatch.setenv("MBT_TEST_LLM_KEY", SECRET)
    seen: list[str] = []

    def remote(request: httpx.Request) -> httpx.Response:  # a plain-http host, no network
        seen.append(request.headers.get("authorization", ""))
        return httpx.Response(200, json={"choices": [{"message": {"content": "hi"}}]})

    outs = []
    for allow in (False, True):
        client = LLMClient("http://10.1.2.3/v1", "m", api_key_env="MBT_TEST_LLM_KEY",
                           allow_insecure_key=allow)  # fmt: skip
        client._http = httpx.Client(transport=httpx.MockTransport(remote))
        with client:
            outs.append(client.complete(ChatRequest(MSG)))
    refused, allowed = outs
    assert isinstance(refused, ChatFailure) and refused.kind == "insecure_key"
    assert "allow_insecure_key" in refused.error and SECRET not in refused.error
    assert isinstance(allowed, ChatResult) and seen == [f"Bearer {SECRET}"]  # sent once: allowed


def test_retry_after_past_the_ceiling_fails_at_once(server):
    server.plan = ["429;Retry-After=3600"]
    start = time.monotonic()
    with client_for(server, max_retries=3, max_retry_after_s=60) as client:
        out = client.complete(ChatRequest(MSG))
    assert isinstance(out, ChatFailure) and (out.kind, out.attempts) == ("http_429", 1)
    assert "Retry-After 3600s" in out.error and "max_retry_after_s" in out.error
    assert server.chat_requests == 1 and time.monotonic() - start < 2


def test_retry_after_below_the_ceiling_is_honoured_beyond_max_backoff(server):
    server.plan = ["503;Retry-After=0.4"]
    start = time.monotonic()
    with client_for(server, max_backoff_s=0.01, max_retry_after_s=5) as client:
        assert client.chat(MSG).attempts == 2
    assert time.monotonic() - start >= 0.4


def test_x_should_retry_is_obeyed(server):
    server.plan = ["503;x-should-retry=false"]
    with client_for(server, max_retries=3) as client:
        out = client.complete(ChatRequest(MSG))
        assert isinstance(out, ChatFailure) and (out.kind, out.attempts) == ("http_503", 1)
        assert server.chat_requests == 1
        server.plan = ["400;x-should-retry=true"]  # not retried by status, but the server says so
        assert client.chat(MSG, seed=1).attempts == 2


def test_junk_and_deeply_nested_bodies_are_malformed_and_retried(server):
    server.plan = ["junk", "nested"]
    with client_for(server, max_retries=2) as client:
        assert client.chat(MSG).attempts == 3
        server.plan = ["nested"] * 3
        out = client.complete(ChatRequest(MSG, seed=1))
    assert isinstance(out, ChatFailure) and (out.kind, out.attempts) == ("malformed", 3)


def test_connect_timeout_is_separate_from_the_read_timeout():
    start = time.monotonic()
    kw = {"timeout_s": 30, "connect_timeout_s": 0.2, "max_retries": 1, "backoff_s": 0.001}
    with BlackHole() as hole, LLMClient(hole.base_url, "m", **kw) as client:
        out = client.complete(ChatRequest(MSG))
    assert isinstance(out, ChatFailure) and (out.kind, out.attempts) == ("timeout", 2)
    assert "ConnectTimeout" in out.error and time.monotonic() - start < 3


def test_circuit_breaker_fails_the_rest_at_once_and_a_resume_sends_only_the_failed(
    server, tmp_path, caplog
):
    server.plan = ["ok", "ok", "hang", "hang"]
    reqs = [ChatRequest([{"role": "user", "content": f"q{k}"}]) for k in range(8)]
    kw = {"cache_dir": tmp_path, "concurrency": 1, "timeout_s": 0.2, "breaker_failures": 2}
    start = time.monotonic()
    with caplog.at_level(logging.DEBUG), client_for(server, max_retries=3, **kw) as client:
        outs = client.chat_many(reqs)
        assert client.breaker_open and client.usage["failures_circuit_open"] == 6
    assert time.monotonic() - start < 2
    assert [o.kind if isinstance(o, ChatFailure) else "ok" for o in outs] == (
        ["ok", "ok", "circuit_open"] + ["circuit_open"] * 5
    )
    assert outs[2].attempts == 2 and "last error: timeout" in outs[2].error
    assert outs[3].attempts == 0 and server.chat_requests == 4
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "circuit breaker open" in errors[0]  # once, not per request
    with client_for(server, max_retries=3, **kw) as resumed:  # the endpoint is back
        assert all(isinstance(o, ChatResult) for o in resumed.chat_many(reqs))
        assert resumed.usage["requests"] == 6 and resumed.usage["cache_hits"] == 2


def test_a_success_resets_the_breaker(server):
    server.plan = ["hang", "ok", "hang", "ok", "hang"]
    reqs = [ChatRequest([{"role": "user", "content": f"q{k}"}]) for k in range(5)]
    with client_for(server, concurrency=1, timeout_s=0.2, max_retries=0, breaker_failures=2) as c:
        kinds = [o.kind if isinstance(o, ChatFailure) else "ok" for o in c.chat_many(reqs)]
        assert not c.breaker_open
    assert kinds == ["timeout", "ok", "timeout", "ok", "timeout"]


def test_completions_keep_their_own_words_only_the_key_is_redacted(monkeypatch):
    monkeypatch.setenv("MBT_TEST_LLM_KEY", SECRET)
    said = f"Bearer bonds, see https://x.org/a?q=1 and {SECRET}"
    with FakeLLMServer(responder=lambda payload, i: said) as server, client_for(server) as client:
        text = client.chat(MSG).texts[0]
    assert text == "Bearer bonds, see https://x.org/a?q=1 and ***"
