"""Run directories built by hand for the report's tests, and headless Chromium to render a
report."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mbt_online.config import dump_config, validate

COMPONENTS = (
    "correct",
    "format",
    "degenerate",
    "answer_inclusive",
    "redundancy",
    "over_budget",
    "phases",
    "total",
)


def metrics_row(r: int, acc: float, tokens: float) -> dict:
    row = {
        "round": r,
        "eval/accuracy": acc,
        "eval/em": acc,
        "eval/f1": acc + 0.05,
        "eval/mean_tokens": tokens,
        "eval/degeneration_rate": 0.1 / (r + 1),
        "eval/answer_inclusive_rate": 0.2 / (r + 1),
        "eval/aes": 0.0 if r == 0 else acc - 0.3,
        "eval/rrp": 0.5,
        "eval/mqi": 1.0 + r,
        "timing/eval": 1.5,
        **{f"reward/eval_{c}": 0.05 * (r + 1) for c in COMPONENTS},
    }
    for b, shift in BENCHMARKS.items():  # what the loop logs when the eval mixes benchmarks
        row.update({f"eval/{b}/{k}": acc + shift for k in ("accuracy", "em", "f1")})
        row.update({f"eval/{b}/mean_tokens": tokens, f"eval/{b}/degeneration_rate": 0.1})
    row.update({"eval/2-hop/accuracy": acc, "eval/2-hop/mean_tokens": tokens})
    if r > 0:
        row.update({f"reward/{c}": 0.1 * r for c in COMPONENTS})
        row.update({"rollout/mean_tokens": tokens, "train/sft_loss": 1.0 / r})
    return row


BENCHMARKS = {"hotpotqa": 0.05, "musique": -0.05}


CAP = 64  # eval.sampling.max_tokens of the fixture runs


def eval_row(name: str, r: int, i: int) -> dict:
    """Eval row i of a round: 0 correct, 1 wrong, 2 answer-inclusive, 3 cut at the length cap;
    benchmarks alternate, and the rows are written one benchmark after the other."""
    row = sample_row(f"ev{i}", f"{name} eval trace r{r} q{i} <b>", i == 0)
    row.update(
        source=list(BENCHMARKS)[i % 2],
        tokens=CAP if i == 3 else 20 + 10 * i + r,
        finish_reason="length" if i == 3 else "stop",
        answer_inclusive=i == 2,
        diagnostics=json.dumps({"first_reach": 0.2 * (i + 1) if i in (0, 2) else None}),
    )
    return row


def sample_row(example_id: str, text: str, correct: bool, sample: int | None = None) -> dict:
    row = {
        "example_id": example_id,
        "question": f"Who directed the film in {example_id}?",
        "answer": "Paris",
        "tier": "2-hop",
        "completion": f"<think>{text}</think> <answer>Paris</answer>",
        "trace": text,
        "predicted": "Paris" if correct else "Lyon",
        "finish_reason": "stop",
        "tokens": 42,
        "correct": correct,
        "reward": 1.25 if correct else -0.5,
        "components": json.dumps({"correct": float(correct), "degenerate": 0.0}),
        "phases": ["planning", "verification"] if correct else [],
    }
    if sample is not None:
        row["sample"] = sample
    return row


def make_run_dir(
    root: Path, name: str, accs: list[float], tokens: list[float], overrides: dict | None = None
) -> Path:
    """A run directory to the loop's contract: config, state, metrics, per-round artifacts."""
    from datasets import Dataset

    run = root / name
    run.mkdir(parents=True)
    raw = {"run": {"name": name}, "eval": {"sampling": {"max_tokens": CAP}}, **(overrides or {})}
    dump_config(validate(raw), run / "config.yaml")
    (run / "state.json").write_text(json.dumps({"completed": ["round-0/eval"], "finished": True}))
    rows = [metrics_row(r, a, t) for r, (a, t) in enumerate(zip(accs, tokens, strict=True))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in range(len(accs)):
        rows = sorted((eval_row(name, r, i) for i in range(4)), key=lambda x: x["source"])
        Dataset.from_list(rows).save_to_disk(str(run / f"round-{r}" / "eval"))
        if r == 0:
            continue
        train_log(run / f"round-{r}" / "train", r)
        Dataset.from_list(
            [
                {
                    "example_id": "tr0",
                    "prompt": [{"role": "user", "content": "Who?"}],
                    "chosen": [{"role": "assistant", "content": f"{name} chosen r{r}"}],
                    "rejected": [{"role": "assistant", "content": "loop " * 8}],
                    "rejected_truncated": True,
                    "margin": 1.75,
                }
            ]
        ).save_to_disk(str(run / f"round-{r}" / "build" / "dpo"))
        Dataset.from_list(
            [
                sample_row("tr0", f"{name} student sample {k} r{r}", k == 0, sample=k)
                for k in range(2)
            ]
        ).save_to_disk(str(run / f"round-{r}" / "score"))
        Dataset.from_list(
            [
                {
                    "example_id": "tr0",
                    "mode": "mbt-r",
                    "draft": f"{name} student sample 1 r{r}",
                    "trace": f"{name} teacher r{r}: The question asks who. First, plan. Verify.",
                    "verified": True,
                    "reasons": [],
                    "tries": 1,
                    "backend": "structured",
                }
            ]
        ).save_to_disk(str(run / f"round-{r}" / "teach"))
    return run


def train_log(folder: Path, r: int) -> None:
    """round-<r>/train/log_history.jsonl to the TRAIN child's contract: 4 SFT, 2 DPO events."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"stage": "sft", "step": s, "loss": 2.0 / (s + r)} for s in range(1, 5)]
    rows += [
        {
            "stage": "dpo",
            "step": s,
            "loss": 0.6,
            "rewards/accuracies": 0.5 * s,
            "rewards/margins": s,
        }
        for s in (1, 2)
    ]
    (folder / "log_history.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))


def build_sweep(root: Path) -> Path:
    """Three members (base, MBT-S without DPO, MBT-R with DPO) and the sweep's own order."""
    make_run_dir(root, "base", [0.5], [200.0], {"loop": {"rounds": 0}})
    make_run_dir(
        root,
        "mbt-r_dpo",
        [0.5, 0.6, 0.625],
        [200.0, 120.0, 80.0],
        {"teacher": {"mode": "mbt-r"}, "loop": {"rounds": 2}},
    )
    make_run_dir(
        root,
        "mbt-s_no-dpo",
        [0.5, 0.55, 0.7],
        [200.0, 150.0, 90.0],
        {"teacher": {"mode": "mbt-s"}, "train": {"dpo": {"enabled": False}}, "loop": {"rounds": 2}},
    )
    (root / "sweep.json").write_text(
        json.dumps(
            {"name": "t", "members": [{"name": n} for n in ("mbt-s_no-dpo", "mbt-r_dpo", "base")]}
        )
    )
    return root


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (Debian: apt-get update && apt-get install -y chromium)",
)


# Uncaught exceptions are logged as "Uncaught ..."; console.error is not marked as an error in
# Chromium's log, so a hook tags it, and resource/load errors too.
ERROR_HOOK = """<script>
window.addEventListener('error', function (e) { console.log('PAGE_ERROR ' + e.message); }, true);
(function () { var orig = console.error; console.error = function () {
  console.log('CONSOLE_ERROR ' + Array.prototype.join.call(arguments, ' '));
  return orig.apply(console, arguments); }; })();
</script>"""


def chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def browse(report: Path, tmp: Path, then: str = "") -> tuple[str, list[str]]:
    """(DOM after scripts ran, console errors) of a copy of the page with the error hook;
    `then` is JavaScript run after the page's own scripts (a user's clicks)."""
    probe = tmp / ("probe-" + report.name)
    page = report.read_text().replace("<head>", "<head>" + ERROR_HOOK, 1)
    probe.write_text(page.replace("</body>", f"<script>{then}</script></body>", 1))
    res = chromium(probe, tmp, "--dump-dom")
    console = [line for line in res.stderr.splitlines() if "CONSOLE" in line]
    errors = [line for line in console if re.search(r"Uncaught|PAGE_ERROR|CONSOLE_ERROR", line)]
    return res.stdout, errors


def visible_traces(dom: str) -> list[tuple[str, str]]:
    return re.findall(r'<div class="trace-set" data-run="(\d+)" data-round="(\d+)">', dom)


def check_rendered(report: Path, tmp: Path) -> str:
    """Every chart drew its SVG, the tables are there, nothing failed in the console; screenshot."""
    dom, errors = browse(report, tmp)
    assert errors == []
    n_charts = int(re.search(r'data-charts="(\d+)"', dom).group(1))
    assert n_charts > 0
    assert dom.count('class="plot-container plotly"') == n_charts
    assert dom.count('class="main-svg"') >= n_charts
    drawn = dom.split('class="plot-container plotly"')[1:]
    assert sum('class="trace ' in c.split('class="chart"')[0] for c in drawn) == n_charts
    assert 'id="final-table"' in dom
    assert len(visible_traces(dom)) == 1  # one run/round shows, the rest stay hidden
    shot = tmp / (report.stem + ".png")
    chromium(report, tmp, "--window-size=1400,2400", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 30_000  # charts and tables, not a blank page
    return dom
