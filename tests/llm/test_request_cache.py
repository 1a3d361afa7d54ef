"""The client's disk cache: round trip, misses on a changed format or a broken file, and keys."""

from __future__ import annotations

import json
from pathlib import Path

from mbt_online.llm.request_cache import CACHE_VERSION, RequestCache, cache_key
from mbt_online.llm.wire import ChatResult

PAYLOAD = {
    "model": "m",
    "messages": [{"role": "user", "content": "Who wrote Dune?"}],
    "temperature": 0.7,
    "n": 2,
}


def result() -> ChatResult:
    return ChatResult(
        texts=["Frank Herbert", "Herbert"],
        usage={"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        cached=False,
        finish_reasons=["stop", "length"],
        attempts=3,
        completion_tokens=[3, 2],
    )


def test_put_then_get_returns_the_answer_marked_cached(tmp_path: Path):
    cache = RequestCache(tmp_path)
    key = cache_key("http://host/v1", PAYLOAD)
    assert cache.get(key) is None  # a miss before the put
    cache.put(key, result())
    got = cache.get(key)
    assert got is not None
    assert got.texts == ["Frank Herbert", "Herbert"]
    assert got.finish_reasons == ["stop", "length"]
    assert got.completion_tokens == [3, 2]
    # usage as `token_usage` reads it: the prompt and completion counts
    assert got.usage == {"prompt_tokens": 12, "completion_tokens": 5}
    assert got.cached is True and got.attempts == 0  # nothing was sent for it


def test_entries_sit_in_a_two_letter_shard_and_hold_the_version(tmp_path: Path):
    cache = RequestCache(tmp_path)
    key = cache_key("http://host/v1", PAYLOAD)
    cache.put(key, result())
    path = tmp_path / key[:2] / f"{key}.json"
    assert cache.path(key) == path and path.is_file()
    assert json.loads(path.read_text())["version"] == CACHE_VERSION
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_another_version_is_a_miss(tmp_path: Path):
    cache = RequestCache(tmp_path)
    key = cache_key("http://host/v1", PAYLOAD)
    cache.put(key, result())
    path = cache.path(key)
    entry = json.loads(path.read_text())
    entry["version"] = CACHE_VERSION + 1
    path.write_text(json.dumps(entry))
    assert cache.get(key) is None
    del entry["version"]
    path.write_text(json.dumps(entry))
    assert cache.get(key) is None


def test_a_corrupt_entry_is_a_miss(tmp_path: Path):
    cache = RequestCache(tmp_path)
    key = cache_key("http://host/v1", PAYLOAD)
    cache.put(key, result())
    path = cache.path(key)
    for broken in (
        '{"version": 1, "texts": ["cut off',  # half a file
        json.dumps({"version": CACHE_VERSION}),  # no texts
        json.dumps({"version": CACHE_VERSION, "texts": 5}),  # texts of the wrong type
        "[" * 100_000,  # nested past the recursion limit
    ):
        path.write_text(broken)
        assert cache.get(key) is None, broken[:40]
    # the fresh answer overwrites the broken one
    cache.put(key, result())
    assert cache.get(key).texts == ["Frank Herbert", "Herbert"]


def test_an_entry_that_is_not_an_object_is_a_miss(tmp_path: Path):
    cache = RequestCache(tmp_path)
    key = cache_key("http://host/v1", PAYLOAD)
    cache.put(key, result())
    cache.path(key).write_text("[1, 2]")
    assert cache.get(key) is None


def test_without_a_root_nothing_is_kept(tmp_path: Path):
    for root in (None, ""):
        cache = RequestCache(root)
        key = cache_key("http://host/v1", PAYLOAD)
        assert cache.root is None and cache.path(key) is None
        cache.put(key, result())
        assert cache.get(key) is None


def test_the_key_is_stable_and_a_sha256_hex():
    key = cache_key("http://host/v1", PAYLOAD)
    assert key == cache_key("http://host/v1", json.loads(json.dumps(PAYLOAD)))
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)


def test_the_key_ignores_dict_order_and_a_trailing_slash():
    reordered = dict(reversed(list(PAYLOAD.items())))
    assert list(reordered) != list(PAYLOAD)
    assert cache_key("http://host/v1", reordered) == cache_key("http://host/v1", PAYLOAD)
    assert cache_key("http://host/v1/", PAYLOAD) == cache_key("http://host/v1", PAYLOAD)


def test_the_key_changes_with_any_part_of_the_request():
    base = cache_key("http://host/v1", PAYLOAD)
    variants = [
        cache_key("http://other/v1", PAYLOAD),
        cache_key("http://host/v1", {**PAYLOAD, "model": "m2"}),
        cache_key("http://host/v1", {**PAYLOAD, "temperature": 0.0}),
        cache_key("http://host/v1", {**PAYLOAD, "n": 1}),
        cache_key(
            "http://host/v1",
            {**PAYLOAD, "messages": [{"role": "user", "content": "Who wrote Emma?"}]},
        ),
    ]
    assert len({base, *variants}) == 1 + len(variants)
