"""Hostile text in the HTML report, rendered by headless Chromium: a run whose data set fields,
completions, teacher traces, DPO pairs, run name, config values and metric labels carry script,
image, attribute, JSON-breaking and plotly-markup payloads gives a page where no payload ran and
no payload element exists in the DOM, while every payload is still shown as text.

The detector itself is checked first: the same payloads pasted raw into a page are caught.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from payloads import ALL, HTML_PAYLOADS, every, inspect_dom
from report_runs import browse, eval_row, make_run_dir, needs_chromium, sample_row

from mbt_online.report import write_report
from mbt_online.report.page import render_html
from mbt_online.report.runs import find_runs

# a directory name cannot hold `/`: the run's name carries what fits in one path component
NAME = "run\"'><img src=x onerror=alert(1)>&amp;[b]"
LABEL = "bench\"'><b>x"  # a benchmark label, from a metric key in metrics.jsonl


def hostile_run(root: Path) -> Path:
    from datasets import Dataset

    payload = every()
    run = make_run_dir(
        root,
        "hostile",
        [0.5, 0.6],
        [100.0, 90.0],
        {"teacher": {"model": payload}, "loop": {"rounds": 1}},
    )
    # the schema refuses such a run.name; a config.yaml edited by hand (or a wandb run) has it
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["run"]["name"] = NAME
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for row in lines:
        row.update({f"eval/{LABEL}/accuracy": 0.5, f"eval/{LABEL}/f1": 0.4, "round": row["round"]})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for r in (0, 1):
        rows = []
        for i, (what, p) in enumerate(HTML_PAYLOADS):
            row = eval_row(NAME, r, i % 4)
            row.update(
                example_id=f"{what}:{p}",
                question=payload,
                answer=p,
                predicted=p,
                completion=f"<think>{payload}</think>",
                trace=payload,
                tier=p,
                source=LABEL,
                finish_reason=p if i % 2 else "stop",
                phases=[p],
                components=json.dumps({p: 1.0}),
            )
            rows.append(row)
        Dataset.from_list(rows).save_to_disk(str(run / f"round-{r}" / "eval"), max_shard_size="1GB")
    score = [
        sample_row(f"q:{p}", payload, k == 0, sample=k) for k, (_, p) in enumerate(HTML_PAYLOADS)
    ]
    for row in score:
        row["question"] = payload
    teach = [
        {
            "example_id": f"q:{p}",
            "mode": p,
            "draft": payload,
            "trace": payload + " rewritten",
            "verified": False,
            "reasons": [p],
            "tries": p,
            "backend": p,
        }
        for _, p in HTML_PAYLOADS
    ]
    dpo = [
        {
            "example_id": f"q:{p}",
            "prompt": [{"role": "user", "content": payload}],
            "chosen": [{"role": "assistant", "content": payload}],
            "rejected": [{"role": "assistant", "content": p}],
            "rejected_truncated": True,
            "margin": 1.0,
        }
        for _, p in HTML_PAYLOADS
    ]
    for stage, rows in (("score", score), ("teach", teach), ("build/dpo", dpo)):
        folder = run / "round-1" / stage
        shutil.rmtree(folder)
        Dataset.from_list(rows).save_to_disk(str(folder))
    return run


@needs_chromium
def test_the_detector_catches_payloads_pasted_raw(tmp_path):
    """Without escaping, the corpus runs: the check below would see it."""
    page = tmp_path / "raw.html"
    body = "".join(f'<p title="{p}">{p}</p>' for _, p in HTML_PAYLOADS)
    page.write_text(f"<html><head><title>t</title></head><body>{body}</body></html>")
    dom, _ = browse(page, tmp_path)
    found, _ = inspect_dom(dom)
    assert any("a payload ran" in f for f in found), found
    assert any(f.startswith("<img") for f in found) and any("onfocus" in f for f in found)


@needs_chromium
def test_hostile_text_is_inert_in_the_report(tmp_path):
    run = hostile_run(tmp_path / "runs")
    report = write_report([run], tmp_path / "report.html", max_samples=len(HTML_PAYLOADS))
    page = report.read_text()
    # the embedded JSON blocks (plotly's figures) hold no closing tag a payload could bring
    for block in re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)[1:]:
        assert "</script" not in block.lower() and "<!--" not in block
    # every trace set shown at once, with every trace, then the page's DOM after its scripts ran
    show_all = (
        "['trace-run','trace-round'].forEach(function (id) {"
        " var s = document.getElementById(id); s.value = 'all';"
        " s.dispatchEvent(new Event('change')); });"
    )
    dom, errors = browse(report, tmp_path, show_all)
    assert errors == [], errors
    found, text = inspect_dom(dom)
    assert found == [], found
    # shown as text, each of them: the payloads are there to read, not dropped
    for p in ALL:
        assert p.replace("\r", "\n") in text.replace("\r", "\n") or p in dom, p[:40]
    # the run name and the benchmark label as text in the table and the charts' attributes
    assert NAME in text and LABEL in text
    n_charts = int(re.search(r'data-charts="(\d+)"', dom).group(1))
    assert dom.count('class="main-svg"') >= n_charts > 0  # plotly drew every chart


def test_names_and_labels_are_plain_text_to_plotly(tmp_path):
    """Plotly reads `<a href>` and `<b>` in titles and trace names: the page's figure JSON holds
    names as entities (plotly shows them as typed), not as tags."""
    run = hostile_run(tmp_path / "runs")
    page = render_html(find_runs([run]))
    figures = "".join(re.findall(r"Plotly\.newPlot\((.*?)\)\s*\}", page, re.S))
    assert figures
    figures = re.sub(r'"legendgroup":"(\\.|[^"\\])*"', "", figures)  # an id, never shown
    decoded = figures.encode().decode("unicode_escape")
    assert "<img src=x" not in decoded and "<b>x" not in decoded
    assert "&lt;img src=x onerror=alert(1)&gt;" in decoded


@pytest.mark.parametrize("field", ["question", "tries"])
def test_a_cut_or_a_number_field_is_escaped(tmp_path, field):
    """A question is cut to 160 characters before it is escaped (never mid-entity), and a
    teacher row's `tries` is text like any other field."""
    run = hostile_run(tmp_path / "runs")
    page = render_html(find_runs([run]), max_samples=len(HTML_PAYLOADS))
    assert "<script>document" not in page
    assert re.search(r"&[a-z]{0,3}</summary>", page) is None  # no entity cut in two
