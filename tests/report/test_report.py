"""The offline HTML report: reading run dirs, sweeps and wandb offline logs; table, charts, traces;
and the page rendered by headless Chromium without console errors."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
from paths import PAPER_SWEEP
from report_runs import (  # noqa: F401
    BENCHMARKS,
    CAP,
    CHROMIUM,
    COMPONENTS,
    ERROR_HOOK,
    browse,
    build_sweep,
    check_rendered,
    chromium,
    eval_row,
    make_run_dir,
    metrics_row,
    needs_chromium,
    sample_row,
    train_log,
    visible_traces,
)
from sweeps import PAPER_NAMES

from mbt_online.report import (
    REWARD_ORDER,
    curve_metrics,
    find_runs,
    read_wandb_runs,
    render_table,
    write_report,
)
from mbt_online.report.wandb_log import wandb_records


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    return build_sweep(tmp_path_factory.mktemp("sweep"))


# ---------------------------------------------------------------------------------------------
# reading


def test_sweep_dir_reads_members_in_sweep_order(sweep_dir):
    runs = find_runs([sweep_dir])
    assert [r.name for r in runs] == ["mbt-s_no-dpo", "mbt-r_dpo", "base"]
    assert runs[1].rounds == [0, 1, 2]
    assert runs[1].rows[2]["eval/accuracy"] == 0.625
    assert runs[1].config["teacher.mode"] == "mbt-r"


def test_clashing_names_from_two_sweeps_are_qualified(sweep_dir, tmp_path):
    other = tmp_path / "other"
    make_run_dir(other, "base", [0.4], [210.0])
    runs = find_runs([sweep_dir / "base", other / "base"])
    assert [r.name for r in runs] == [f"{sweep_dir.name}/base", "other/base"]
    again = find_runs([other / "base", other / "base"])
    assert [r.name for r in again] == ["other/base", "other/base#2"]


def test_torn_metrics_line_is_skipped(tmp_path):
    run = make_run_dir(tmp_path, "cut", [0.5, 0.6], [100.0, 90.0])
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"round": 2, "eval/accu')
    assert find_runs([run])[0].rounds == [0, 1]


def test_empty_stage_and_unstarted_round_do_not_break_the_traces(tmp_path):
    from datasets import Dataset

    run = make_run_dir(tmp_path, "self-distill", [0.5, 0.6], [100.0, 90.0])
    shutil.rmtree(run / "round-1" / "teach")
    Dataset.from_dict({}).save_to_disk(
        str(run / "round-1" / "teach")
    )  # what teacher.mode=none leaves
    (run / "round-2" / "rollout").mkdir(parents=True)  # a round cut before any stage finished
    page = write_report([run], tmp_path / "r.html").read_text()
    assert page.count('class="trace-set"') == 2
    assert "self-distill student sample 1 r1" in page and 'class="teacher"' not in page


def test_missing_path_or_no_run_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        find_runs([tmp_path / "nope"])
    with pytest.raises(FileNotFoundError, match="holds no run"):
        find_runs([tmp_path])


def _wandb_run(root: Path, run_id: str, rounds: range, big: str = "", name: str = "wb-run") -> None:
    import wandb

    run = wandb.init(
        mode="offline",
        dir=str(root),
        project="p",
        name=name,
        id=run_id,
        resume="allow",
        config={"teacher.mode": "mbt-s", "loop": {"rounds": 3}},
        settings=wandb.Settings(silent=True, console="off"),
    )
    for r in rounds:
        # a TRL-style step row without "round" first: it must not become a round of its own
        run.log({"train/loss": 2.0 - r})
        run.log(
            {
                "round": r,
                "eval/accuracy": 0.25 * r,
                "eval/mean_tokens": 300 - 10 * r,
                "reward/total": 0.5 * r,
                "blob": big,
                **{f"extra/k{i}": i * r for i in range(200)},
            }
        )
    run.finish()
    wait_flushed(root)


def wait_flushed(root: Path, timeout: float = 30.0) -> None:
    """wandb's core writes the last block after `finish()` returns: wait for the exit record."""
    deadline = time.monotonic() + timeout
    for path in root.rglob("run-*.wandb"):
        while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(path)):
            assert time.monotonic() < deadline, f"{path}: wandb never wrote its exit record"
            time.sleep(0.1)


def test_wandb_offline_history_is_read_across_blocks_and_resumes(tmp_path):
    # 60 KB strings force records that span 32 KiB blocks; the second init resumes the same run id
    big = "x" * 60_000
    _wandb_run(tmp_path, "abc123", range(0, 2), big)
    _wandb_run(tmp_path, "abc123", range(2, 4), big)
    files = sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2 and files[0].stat().st_size > 3 * 32 * 1024
    runs = find_runs([tmp_path])
    assert len(runs) == 1
    run = runs[0]
    assert (run.name, run.source) == ("wb-run", "wandb")
    assert run.rounds == [0, 1, 2, 3]
    assert [row["eval/accuracy"] for row in run.rows] == [0.0, 0.25, 0.5, 0.75]
    assert run.rows[3]["eval/mean_tokens"] == 270
    assert run.rows[3]["extra/k199"] == 199 * 3
    assert "blob" not in run.rows[0]  # strings are not chartable
    assert run.config["teacher.mode"] == "mbt-s" and run.config["loop.rounds"] == 3
    # a single offline-run dir and a single .wandb file are accepted too
    assert find_runs([files[0].parent])[0].rounds == [0, 1]
    assert read_wandb_runs([files[1]])[0].rounds == [2, 3]


def test_wandb_torn_tail_keeps_the_complete_records(tmp_path):
    _wandb_run(tmp_path, "cut1", range(0, 3))
    path = next(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    data = path.read_bytes()
    full = read_wandb_runs([path])[0].rounds
    path.write_bytes(data[: len(data) // 2])
    cut = read_wandb_runs([path])[0].rounds
    assert full == [0, 1, 2] and cut == full[: len(cut)] and len(cut) < 3


# ---------------------------------------------------------------------------------------------
# rendering


def test_final_round_table_is_hand_checked(sweep_dir):
    html = render_table(find_runs([sweep_dir]))
    rows = {m.group(1): m.group(2) for m in re.finditer(r"<tr><th>([^<]+)</th>(.*?)</tr>", html)}
    cells = {
        name: re.findall(r'<td class="(best)?">([^<]*)</td>', body) for name, body in rows.items()
    }
    # columns: Round, Acc, EM, F1, Tokens, Degen, Ans-incl, AES, RRP, MQI
    assert html.count("<th>Round</th>") == 1
    assert re.search(r"<td>2</td>", rows["mbt-r_dpo"])
    assert [v for _, v in cells["mbt-r_dpo"]] == [
        "62.5",
        "62.5",
        "67.5",
        "80",
        "3.3",
        "6.7",
        "0.325",
        "0.500",
        "3.00",
    ]
    assert [v for _, v in cells["mbt-s_no-dpo"]] == [
        "70.0",
        "70.0",
        "75.0",
        "90",
        "3.3",
        "6.7",
        "0.400",
        "0.500",
        "3.00",
    ]
    assert [v for _, v in cells["base"]] == [
        "50.0",
        "50.0",
        "55.0",
        "200",
        "10.0",
        "20.0",
        "0.000",
        "0.500",
        "1.00",
    ]
    best = {name: [v for b, v in c if b] for name, c in cells.items()}
    assert best["mbt-s_no-dpo"] == ["70.0", "70.0", "75.0", "3.3", "6.7", "0.400", "3.00"]
    assert best["mbt-r_dpo"] == ["80", "3.3", "6.7", "3.00"]  # fewest tokens; ties bold
    assert best["base"] == []  # RRP is 0.5 everywhere: a column where all tie marks nothing


def test_curves_cover_eval_metrics_and_each_reward_component(sweep_dir):
    charts = curve_metrics(find_runs([sweep_dir]))
    components = [c.replace("_", " ") for c in REWARD_ORDER]
    assert [k for k, _ in charts] == [
        "eval/accuracy",
        "eval/mean_tokens",
        "eval/degeneration_rate",
        "eval/answer_inclusive_rate",
        "eval/aes",
        *[f"reward/eval_{c}" for c in REWARD_ORDER],
        *[f"reward/{c}" for c in REWARD_ORDER],
    ]
    assert [t for _, t in charts[5:]] == [
        *[f"Reward (eval): {c}" for c in components],
        *[f"Reward (rollouts): {c}" for c in components],
    ]


def test_report_is_self_contained_with_traces(sweep_dir, tmp_path):
    out = write_report([sweep_dir], tmp_path / "r" / "report.html")
    page = out.read_text()
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", page)  # nothing fetched
    # 21 round curves, 7 per benchmark (3 each) and tier, 3 histograms, 3 first-reach, 5 phases,
    # 4 training curves, 3 timing
    assert page.count("Plotly.newPlot") == 46 and 'data-charts="46"' in page
    assert len(re.findall(r"<script type=\"text/javascript\">/\*\*\s*\n\* plotly\.js", page)) == 1
    # one line per run in the accuracy chart, with its points
    acc = re.search(r'data-metric="eval/accuracy">(.*?)</div>\s*</div>', page, re.S).group(1)
    assert acc.count('"name":"') == 3 and '"y":[0.5,0.6,0.625]' in acc
    # the untrained base run is a dashed reference level across all rounds
    assert '"dash":"dash"},"mode":"lines","name":"base (round 0)","x":[0,2],"y":[0.5,0.5]' in acc
    # trace browser: student traces (escaped), teacher traces, components, phases
    assert page.count('class="trace-set"') == 1 + 3 + 3  # one block per run and round with samples
    assert "mbt-r_dpo eval trace r2 q0 &lt;b&gt;" in page and "<b>\n" not in page
    assert "&lt;think&gt;" in page  # raw completion shown escaped
    assert "mbt-r_dpo teacher r2: The question asks who." in page
    assert "mbt-r_dpo student sample 1 r2" in page
    assert '<span class="phase">verification</span>' in page
    assert (
        "<td>correct</td><td>1</td><td>" not in page and "<td>correct</td><td>1</td></tr>" in page
    )
    assert "<td>degenerate</td><td>0</td></tr>" in page
    # the config differences show what each run changed
    diff = re.search(r'id="config-diff">(.*?)</table>', page, re.S).group(1)
    assert "<th>teacher.mode</th>" in diff and "<th>loop.rounds</th>" in diff
    assert "<th>mbt-s_no-dpo</th><td>2</td><td>mbt-s</td><td>false</td>" in diff
    assert "<th>student.model</th>" not in diff  # same in every run: not a difference


# ---------------------------------------------------------------------------------------------
# headless Chromium: the page renders its charts and tables without console errors


@needs_chromium
def test_error_hook_catches_broken_pages(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><head></head><body><script>console.error('boom'); null.x;</script></body></html>"
    )
    _, errors = browse(page, tmp_path)
    assert "CONSOLE_ERROR boom" in errors[0]
    assert any("Uncaught TypeError" in e for e in errors[1:])
    assert any("PAGE_ERROR" in e for e in errors[1:])


@needs_chromium
def test_report_renders_in_headless_chromium(sweep_dir, tmp_path):
    report = write_report([sweep_dir], tmp_path / "report.html")
    dom = check_rendered(report, tmp_path)
    assert visible_traces(dom) == [("0", "2")]  # first run, its latest round
    # picking the base run (index 2, round 0 only) jumps to its round; then round 1 has none
    pick = (
        "var s = document.getElementById('trace-run'); s.value = '2';"
        "s.dispatchEvent(new Event('change'));"
    )
    dom, errors = browse(report, tmp_path, pick)
    assert errors == [] and visible_traces(dom) == [("2", "0")]
    assert '<p id="trace-none" class="muted" hidden="">' in dom
    pick += "var r = document.getElementById('trace-round'); r.value = '1';"
    pick += "r.dispatchEvent(new Event('change'));"
    dom, errors = browse(report, tmp_path, pick)
    assert errors == [] and visible_traces(dom) == []
    assert '<p id="trace-none" class="muted">No samples' in dom


@needs_chromium
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_paper_baselines_sweep_then_report_in_chromium(tmp_path, monkeypatch, tiny_model_dir):
    """The issue's check: run the paper-baselines sweep, report it, render the page. Sized for CI:
    one round, a handful of world questions, and the tiny test student instead of the bootstrap
    (the sweep's own config is unchanged; these are command-line extras as a user would pass)."""
    pytest.importorskip("vllm")
    from mbt_online.sweeps.local import run_sweep

    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = PAPER_SWEEP
    smaller = [
        "loop.rounds=1",
        "data.train.limit=4",
        "data.eval.limit=4",
        "rollout.samples=2",
        "rollout.max_tokens=24",
        "eval.sampling.max_tokens=24",
        f"student.model={tiny_model_dir}",
        "student.max_model_len=1024",
        "train.sft.max_length=1024",
        "train.dpo.max_length=1024",
        "teacher.budget_tokens=4000",
        "train.dpo.margin=0.05",
    ]
    out = run_sweep(sweep, tmp_path / "sweep", [*smaller, "tracking.wandb_mode=offline"])
    runs = find_runs([out])
    assert [r.name for r in runs] == PAPER_NAMES  # every row of the paper, in the sweep's order
    assert [r.rounds[-1] for r in runs] == [0, 0] + [1] * (len(PAPER_NAMES) - 2)
    assert all(json.loads((r.path / "state.json").read_text())["finished"] for r in runs)
    report = write_report([out], tmp_path / "report.html")
    check_rendered(report, tmp_path)
    # a wandb offline copy of a member reads back with the same accuracy curve
    wait_flushed(out / "mbt-r_dpo" / "wandb")
    wandb_runs = find_runs([out / "mbt-r_dpo" / "wandb"])
    mbt_r_dpo = next(r for r in runs if r.name == "mbt-r_dpo")
    assert [r["eval/accuracy"] for r in wandb_runs[0].rows] == [
        r["eval/accuracy"] for r in mbt_r_dpo.rows
    ]
