"""LLMClient against a local server that misbehaves on purpose: retries, timeouts, cache, usage,
bounded concurrency, and the API key kept out of everything but the Authorization header."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator

import pytest
from fake_llm_server import FakeLLMServer

from mbt_online.llm.client import (
    ChatFailure,
    ChatRequest,
    ChatResult,
    LLMClient,
    LLMError,
    MalformedResponse,
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
