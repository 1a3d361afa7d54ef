"""The report's method sections: per-benchmark and per-tier columns, seed intervals, stratified
samples, MBT-R diffs, training curves, histograms and the trace browser's filters (in headless
Chromium, with the fixtures and page helpers of test_report)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from report_runs import (
    browse,
    build_sweep,
    check_rendered,
    make_run_dir,
    needs_chromium,
    visible_traces,
)

from mbt_online.report import (
    find_runs,
    group_curves,
    render_group_table,
    seed_groups,
    stratified_sample,
    word_diff,
    write_report,
)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    return build_sweep(tmp_path_factory.mktemp("sweep"))


# ---------------------------------------------------------------------------------------------
# the method's sections: benchmarks and tiers, intervals, samples, diffs, training


def test_stratified_sample_reaches_every_stratum_and_follows_questions():
    rows = [
        {"example_id": f"h{i}", "source": "hotpotqa", "correct": True, "finish_reason": "stop"}
        for i in range(20)
    ]
    rows += [
        {"example_id": f"m{i}", "source": "musique", "correct": False, "finish_reason": "stop"}
        for i in range(8)
    ]
    rows += [
        {"example_id": f"c{i}", "source": "musique", "correct": False, "finish_reason": "length"}
        for i in range(2)
    ]
    picked = stratified_sample(rows, 4)
    strata = {(r["source"], r["finish_reason"]) for r in picked}
    assert strata == {("hotpotqa", "stop"), ("musique", "stop"), ("musique", "length")}
    assert len(picked) == 4 and rows[:4] != picked  # not the first N
    # the same questions whatever order the rows come in: a question can be followed
    assert stratified_sample(rows[::-1], 4) == picked
    assert len(stratified_sample(rows, 100)) == len(rows)


def test_word_diff_marks_what_the_rewrite_removed_and_added():
    assert word_diff("First, plan <x>. Then loop loop.", "First, plan <x>. Verify: done.") == (
        '<div class="diff">First, plan &lt;x&gt;. <del>Then loop loop.</del>'
        "<ins>Verify: done.</ins></div>"
    )


def test_group_table_has_a_column_per_benchmark_and_tier(sweep_dir):
    table = render_group_table(find_runs([sweep_dir]))
    heads = re.findall(r'<th data-(benchmark|tier)="([^"]+)">([^<]+)</th>', table)
    assert [h[2] for h in heads] == [
        *[f"hotpotqa {c}" for c in ("Acc. (%)", "EM (%)", "F1 (%)", "Tokens", "Degen. (%)")],
        *[f"musique {c}" for c in ("Acc. (%)", "EM (%)", "F1 (%)", "Tokens", "Degen. (%)")],
        "tier 2-hop Acc. (%)",
    ]
    row = re.search(r"<tr><th>mbt-r_dpo</th>(.*?)</tr>", table).group(1)
    cells = re.findall(r'<td class="(?:best)?">([^<]*)</td>', row)
    assert cells == ["67.5", "67.5", "67.5", "80", "10.0", "57.5", "57.5", "57.5", "80", "10.0"] + [
        "62.5"
    ]
    curves = [k for k, _ in group_curves(find_runs([sweep_dir]))]
    assert curves[:3] == [
        "eval/hotpotqa/accuracy",
        "eval/hotpotqa/mean_tokens",
        "eval/hotpotqa/degeneration_rate",
    ]
    assert curves[-1] == "eval/2-hop/accuracy"


def test_eval_seed_intervals_become_error_bars_and_table_intervals(tmp_path):
    run = make_run_dir(tmp_path, "seeded", [0.5, 0.6], [100.0, 90.0])
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for row, (lo, hi) in zip(rows, [(0.4, 0.55), (0.5, 0.7)], strict=True):
        row.update({"eval/accuracy_ci_low": lo, "eval/accuracy_ci_high": hi, "eval/seeds": 3})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = write_report([run], tmp_path / "r.html").read_text()
    acc = re.search(r'data-metric="eval/accuracy">(.*?)</div>\s*</div>', page, re.S).group(1)
    bars = json.loads(re.search(r'"error_y":(\{[^}]*\})', acc).group(1))
    assert bars["array"] == pytest.approx([0.05, 0.1]) and bars["arrayminus"] == pytest.approx(
        [0.1, 0.1]
    )
    assert 'data-metric="eval/accuracy_ci_low"' not in page
    table = re.search(r'id="final-table">(.*?)</table>', page, re.S).group(1)
    assert '60.0 <span class="ci">[50.0, 70.0]</span>' in table


def test_seed_members_of_a_sweep_merge_into_one_series(tmp_path):
    pytest.importorskip("mbt_online.report.compare")  # helper D's module (issue 21)
    for seed, acc in ((1, 0.5), (2, 0.6), (3, 0.7)):
        make_run_dir(tmp_path, f"mbt-r-s{seed}", [0.4, acc], [100.0, 90.0])
    runs = find_runs([tmp_path])
    [series] = seed_groups(runs)
    assert series.name == "mbt-r (n=3)" and series.source == "seeds"
    assert [m.name for m in series.members] == ["mbt-r-s1", "mbt-r-s2", "mbt-r-s3"]
    final = series.rows[-1]
    assert final["eval/accuracy"] == pytest.approx(0.6)
    assert final["eval/accuracy_ci_low"] < 0.6 < final["eval/accuracy_ci_high"]
    page = write_report([tmp_path], tmp_path / "r.html").read_text()
    assert "<tr><th>mbt-r (n=3)</th>" in page and '<span class="ci">' in page


def test_training_curves_follow_the_global_step(sweep_dir):
    page = write_report([sweep_dir], sweep_dir.parent / "train.html").read_text()
    sft = re.search(r'data-metric="train/sft/loss">(.*?)</div>\s*</div>', page, re.S).group(1)
    # round 1: SFT steps 1-4, DPO 5-6; round 2 goes on from 7
    assert '"name":"mbt-r_dpo","x":[1,2,3,4,null,7,8,9,10]' in sft
    margins = re.search(r'data-metric="train/dpo/rewards/margins">(.*?)</div>\s*</div>', page, re.S)
    assert '"x":[5,6,null,11,12],"y":[1,2,null,1,2]' in margins.group(1)
    assert page.count('data-kind="timing"') == 3


def shown_traces(dom: str) -> list[dict[str, str]]:
    """The data attributes of every trace item the page's script left visible."""
    items = re.findall(r'<(?:details|div) class="(?:[^"]* )?trace(?: [^"]*)?" ([^>]*)>', dom)
    return [dict(re.findall(r'data-(\w+)="([^"]*)"', a)) for a in items if "hidden" not in a]


@needs_chromium
def test_method_sections_and_filters_in_headless_chromium(sweep_dir, tmp_path):
    report = write_report([sweep_dir], tmp_path / "method.html")
    dom = check_rendered(report, tmp_path)
    # per-benchmark columns
    group = re.search(r'id="group-table">(.*?)</table>', dom, re.S).group(1)
    assert group.count('data-benchmark="hotpotqa"') == group.count('data-benchmark="musique"') == 5
    # the MBT-R rewrite against its draft: one diff element with insertions and deletions
    diff = re.search(r'<div class="diff">(.*?)</div>', dom, re.S).group(1)
    assert "<ins>" in diff and "<del>" in diff
    # a histogram per run, with one bar trace per round of that run
    hists = re.findall(
        r'<div class="chart" data-kind="histogram" data-run="([^"]+)" '
        r'data-rounds="([^"]+)">(.*?)</div>\s*</div>\s*</div>',
        dom,
        re.S,
    )
    runs = {r.name: [str(x) for x in r.rounds] for r in find_runs([sweep_dir])}
    assert {name: rounds.split(",") for name, rounds, _ in hists} == runs
    for name, rounds, body in hists:
        assert body.count('class="trace bars"') == len(rounds.split(",")), name
    # the truncated filter over every run and round: only completions cut at the length cap
    everything = (
        "var s = document.getElementById('trace-run'); s.value = 'all';"
        "s.dispatchEvent(new Event('change'));"
        "var r = document.getElementById('trace-round'); r.value = 'all';"
        "r.dispatchEvent(new Event('change'));"
    )
    dom, errors = browse(report, tmp_path, everything)
    assert errors == [] and {t["finish"] for t in shown_traces(dom)} == {"length", "stop", ""}
    cut = everything + (
        "var f = document.getElementById('filter-truncated'); f.checked = true;"
        "f.dispatchEvent(new Event('change'));"
    )
    dom, errors = browse(report, tmp_path, cut)
    shown = shown_traces(dom)
    assert errors == [] and len(shown) == 7  # ev3 in each of the 7 (run, round) eval sets
    assert {(t["finish"], t["qid"]) for t in shown} == {("length", "ev3")}
    # a question followed across every round and run; a text search narrows it
    follow = (
        "var q = document.getElementById('trace-question'); q.value = 'ev2';"
        "q.dispatchEvent(new Event('change'));"
    )
    dom, errors = browse(report, tmp_path, follow)
    shown = shown_traces(dom)
    assert errors == [] and len(shown) == 7 and {t["qid"] for t in shown} == {"ev2"}
    assert len(visible_traces(dom)) == 7
    search = follow + (
        "var t = document.getElementById('trace-search'); t.value = 'MBT-R_DPO EVAL TRACE R2';"
        "t.dispatchEvent(new Event('input'));"
    )
    dom, errors = browse(report, tmp_path, search)
    assert errors == [] and visible_traces(dom) == [("1", "2")]
    assert [t["qid"] for t in shown_traces(dom)] == ["ev2"]
