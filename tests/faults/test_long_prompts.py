"""A data row whose prompt cannot fit the student's context (issue 36, item 4): skipped and
counted, the run goes on; only a stage where no prompt fits fails, as a config error, unmarked.

The fake student checks its prompts with the engines' own check (`generation.requests.
check_prompt_lengths`) on lengths that make some questions too long: those whose question text
hashes to 0 mod 3, the same questions in every stage and round.
"""

from __future__ import annotations

import json
import zlib

import pytest
from fakes import FakeGenerator, tiny_config

from faults.harness import in_child, run_dir_of, start_run
from mbt_online.generation.requests import check_prompt_lengths
from mbt_online.rundir.metrics_file import read_metrics

WINDOW, MAX_TOKENS = 1000, 64  # the fake student's context and every stage's max_tokens


def too_long(prompt: str) -> bool:
    return zlib.crc32(prompt.encode()) % 3 == 0


def with_long_prompts(everything: bool = False):
    """Run in the child: the fake student refuses the long prompts as the engines do."""
    original = FakeGenerator.generate

    def generate(self, messages, **kw):
        lengths = [
            [0] * (5000 if everything or too_long(chat[-1]["content"]) else 100)
            for chat in messages
        ]
        check_prompt_lengths(lengths, WINDOW, MAX_TOKENS)
        return original(self, messages, **kw)

    def setup() -> None:
        FakeGenerator.generate = generate

    return setup


def test_a_prompt_longer_than_the_context_is_skipped_and_counted(tmp_path):
    cfg = tiny_config(tmp_path / "runs", **{"data.eval.limit": 6, "data.train.limit": 6})
    run_dir = run_dir_of(cfg)
    child = in_child(lambda: start_run(cfg), tmp_path, setup=with_long_prompts())
    assert child.code == 0, child.describe() + child.output[-3000:]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["finished"]
    log = (run_dir / "run.log").read_text()
    skips = [line for line in log.splitlines() if "whose prompt does not fit" in line]
    # counted in every stage that samples: EVAL of rounds 0..2 and ROLLOUT of rounds 1..2
    assert len(skips) >= 3, log[-3000:]
    assert all("max_model_len 1000 - max_tokens 64" in s for s in skips)
    metrics = read_metrics(run_dir)
    assert [m["round"] for m in metrics] == [0, 1, 2]
    n_eval = {m["eval/n"] for m in metrics}
    assert len(n_eval) == 1 and 0 < n_eval.pop() < 6, metrics  # over the questions sampled
    first = next(s for s in skips if "of 6 question(s)" in s)
    assert "skipped" in first and "WARNING" in first


def test_a_stage_where_no_prompt_fits_fails_unmarked(tmp_path):
    cfg = tiny_config(tmp_path / "runs")
    run_dir = run_dir_of(cfg)
    child = in_child(lambda: start_run(cfg), tmp_path, setup=with_long_prompts(everything=True))
    assert child.code != 0 and child.error == "NoPromptFits", child.describe()
    assert "no prompt fits the student's context" in child.result["message"]
    assert json.loads((run_dir / "state.json").read_text())["completed"] == []
    assert not (run_dir / "round-0" / "eval").exists()


@pytest.mark.parametrize("backend_error", ["PromptsTooLong"])
def test_the_error_names_its_prompts_across_processes(backend_error):
    """A data-parallel worker's refusal reaches the parent with the prompts it names."""
    import pickle

    from mbt_online.generation import requests

    with pytest.raises(requests.PromptsTooLong) as e:
        check_prompt_lengths([[0] * 10, [0] * 99, [0] * 10, [0] * 99], 100, 10, first=4)
    again = pickle.loads(pickle.dumps(e.value))
    assert type(again).__name__ == backend_error
    assert again.indices == (5, 7) and str(again) == str(e.value)
