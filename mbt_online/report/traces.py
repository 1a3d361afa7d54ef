"""The trace browser: per run and round, a stratified sample of eval completions, the training
questions with their student samples and teacher traces (MBT-R drafts beside their rewrites as a
diff), and the DPO pairs; filters (truncated, answer-inclusive, wrong), a text search, and a
question picker that follows one question across every round and run.

Every shown item is an element with class `trace` and data attributes (run, round, qid, finish,
truncated, inclusive, correct) that the page's script filters on.
"""

from __future__ import annotations

import difflib
import html
import re
from pathlib import Path
from typing import Any

from mbt_online.report.charts import artifact_runs
from mbt_online.report.runs import RunData, is_number
from mbt_online.rundir.artifacts import (
    artifact_rounds,
    components,
    stage_rows,
    stratified_sample,
)


def pre(text: Any) -> str:
    return f"<pre>{html.escape(str(text or ''))}</pre>"


def word_diff(old: str, new: str) -> str:
    """`new` against `old` word by word: `<del>` what the rewrite dropped, `<ins>` what it added."""
    a, b = re.findall(r"^\s+|\S+\s*", old), re.findall(r"^\s+|\S+\s*", new)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            out.append(f"<del>{html.escape(''.join(a[i1:i2]))}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{html.escape(''.join(b[j1:j2]))}</ins>")
        if op == "equal":
            out.append(html.escape("".join(a[i1:i2])))
    return f'<div class="diff">{"".join(out)}</div>'


def _phases(phases: Any) -> str:
    if not phases:
        return '<span class="muted">no phases found</span>'
    return " ".join(f'<span class="phase">{html.escape(str(p))}</span>' for p in phases)


def _components_table(row: dict[str, Any]) -> str:
    comps = components(row)
    if not comps:
        return ""
    cells = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_num(v))}</td></tr>"
        for k, v in comps.items()
    )
    return f'<table class="comps"><tr><th>component</th><th>value</th></tr>{cells}</table>'


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _flags(row: dict[str, Any]) -> str:
    """The data attributes the filters read; `truncated` is the finish reason `length`."""
    finish = str(row.get("finish_reason") or "")
    inclusive = bool(row.get("answer_inclusive"))
    return (
        f'data-qid="{html.escape(str(row.get("example_id", "")))}" '
        f'data-finish="{html.escape(finish)}" data-truncated="{int(finish == "length")}" '
        f'data-inclusive="{int(inclusive)}" data-correct="{int(bool(row.get("correct")))}"'
    )


def _sample_summary(row: dict[str, Any]) -> str:
    mark = "✓" if row.get("correct") else "✗"
    bits = [mark, str(row.get("example_id", "?"))]
    if "sample" in row:
        bits.append(f"sample {row['sample']}")
    for key in ("source", "tier", "tokens", "finish_reason"):
        if row.get(key) not in (None, ""):
            bits.append(f"{key} {row[key]}")
    if row.get("answer_inclusive"):
        bits.append("answer-inclusive")
    if is_number(row.get("reward")):
        bits.append(f"reward {row['reward']:.3f}")
    return " · ".join(html.escape(b) for b in bits)


def render_student(row: dict[str, Any]) -> str:
    return (
        f'<details class="sample trace" {_flags(row)}><summary>{_sample_summary(row)}</summary>'
        f"<p><b>Question:</b> {html.escape(str(row.get('question', '')))}</p>"
        f"<p><b>Predicted:</b> {html.escape(str(row.get('predicted')))} · "
        f"<b>gold:</b> {html.escape(str(row.get('answer')))}</p>"
        f"<p><b>Phases:</b> {_phases(row.get('phases'))}</p>"
        f"{_components_table(row)}<p><b>Student trace</b></p>"
        f"{pre(row.get('trace') or row.get('completion'))}"
        f"<details><summary>raw completion</summary>{pre(row.get('completion'))}</details>"
        "</details>"
    )


def render_teacher(row: dict[str, Any]) -> str:
    """A teacher trace; an MBT-R rewrite also shows its draft and the diff from it."""
    verified = "verified" if row.get("verified") else "rejected"
    reasons = ", ".join(map(str, row.get("reasons") or [])) or "none"
    draft = ""
    if row.get("draft"):
        draft = (
            "<p><b>Rewrite against its draft</b> (<del>removed</del> <ins>added</ins>)</p>"
            f"{word_diff(str(row['draft']), str(row.get('trace') or ''))}"
            "<details><summary>draft (student trace it rewrote)</summary>"
            f"{pre(row['draft'])}</details>"
        )
    return (
        f'<div class="teacher trace" data-qid="{html.escape(str(row.get("example_id", "")))}" '
        f'data-finish="" data-truncated="0" data-inclusive="0" data-correct="1">'
        f"<p><b>Teacher ({html.escape(str(row.get('mode')))}, "
        f"{html.escape(str(row.get('backend')))})</b>: "
        f"{verified} after {html.escape(str(row.get('tries', '?')))} tries; "
        f"reasons: {html.escape(reasons)}; phases: {_phases(_teacher_phases(row))}</p>"
        f"{pre(row.get('trace'))}{draft}</div>"
    )


def _teacher_phases(row: dict[str, Any]) -> list[str]:
    from mbt_online.scoring.metrics import detect_phases

    return detect_phases(str(row.get("trace") or ""))


def _message_text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
    return str(value or "")


def render_pair(row: dict[str, Any]) -> str:
    """A DPO pair: chosen beside rejected, with the reward margin between them."""
    margin = row.get("margin")
    cut = " · rejected hit the length cap" if row.get("rejected_truncated") else ""
    qid = html.escape(str(row.get("example_id", "")))
    return (
        f'<details class="dpo-pair trace" data-qid="{qid}" data-finish="" data-truncated="0" '
        f'data-inclusive="0" data-correct="1"><summary>{qid} · margin '
        f"{_num(margin) if is_number(margin) else '–'}{cut}</summary>"
        f'<div class="pair"><div><b>chosen</b>{pre(_message_text(row.get("chosen")))}</div>'
        f"<div><b>rejected</b>{pre(_message_text(row.get('rejected')))}</div></div></details>"
    )


def render_round_samples(run_dir: Path, round_: int, max_samples: int) -> str:
    """Eval samples, training questions (students, teacher), DPO pairs: stratified, not first N."""
    all_evals = stage_rows(run_dir, round_, "eval")
    evals = stratified_sample(all_evals, max_samples)
    scored = stage_rows(run_dir, round_, "score")
    teach = stage_rows(run_dir, round_, "teach")
    pairs = stage_rows(run_dir, round_, "build/dpo")
    parts = []
    if evals:
        parts.append(
            f"<h4>Evaluation ({len(evals)} of {len(all_evals)}, stratified by benchmark, "
            "correct and finish reason)</h4>" + "".join(map(render_student, evals))
        )
    by_question: dict[str, list[dict[str, Any]]] = {}
    for row in scored:
        by_question.setdefault(str(row.get("example_id")), []).append(row)
    teachers: dict[str, list[dict[str, Any]]] = {}
    for row in teach:
        teachers.setdefault(str(row.get("example_id")), []).append(row)
    ids = list(
        dict.fromkeys(str(r.get("example_id")) for r in stratified_sample(scored, max_samples))
    )
    ids += [q for q in teachers if q not in by_question][: max(0, max_samples - len(ids))]
    if ids:
        parts.append(
            f"<h4>Training questions ({len(ids)} of {len(set(by_question) | set(teachers))})</h4>"
        )
    for qid in ids:
        students = by_question.get(qid, [])
        first = (students or teachers.get(qid) or [{}])[0]
        question = html.escape(str(first.get("question", ""))[:160])  # cut, then escaped
        parts.append(
            f'<details class="question" data-qid="{html.escape(qid)}">'
            f"<summary>{html.escape(qid)}: {question}</summary>"
            + "".join(map(render_student, students))
            + "".join(map(render_teacher, teachers.get(qid, [])))
            + "</details>"
        )
    if pairs:
        shown = stratified_sample(pairs, max_samples, strata=("rejected_truncated",))
        parts.append(f"<h4>DPO pairs ({len(shown)} of {len(pairs)})</h4>")
        parts.extend(map(render_pair, shown))
    return "".join(parts)


def _select(sel_id: str, label: str, options: list[str]) -> str:
    return f'<label>{label} <select id="{sel_id}">{"".join(options)}</select></label> '


def render_traces(runs: list[RunData], max_samples: int) -> str:
    """The browser: one pre-rendered block per (run, round); choosing a run jumps to its latest
    round (what a reader looks at first), choosing a question shows it in every round and run."""
    blocks, latest, rounds, qids = [], {}, set(), set()
    names = {}
    for i, run in artifact_runs(runs):
        names[i] = run.name
        for r in artifact_rounds(run.path):
            content = render_round_samples(run.path, r, max_samples)
            if content:
                latest[i] = r
                rounds.add(r)
                qids.update(re.findall(r'data-qid="([^"]*)"', content))
                blocks.append(
                    f'<div class="trace-set" data-run="{i}" data-round="{r}" hidden>{content}</div>'
                )
    if not blocks:
        return "<p>No per-round samples (only run directories carry them).</p>"
    first = latest[next(iter(latest))]
    run_opts = ['<option value="all" data-latest="all">all runs</option>'] + [
        f'<option value="{i}" data-latest="{r}"{" selected" if j == 0 else ""}>'
        f"{html.escape(names[i])}</option>"
        for j, (i, r) in enumerate(latest.items())
    ]
    round_opts = ['<option value="all">all rounds</option>'] + [
        f'<option value="{r}"{" selected" if r == first else ""}>round {r}</option>'
        for r in sorted(rounds)
    ]
    q_opts = ['<option value="all" selected>all questions</option>'] + [
        f'<option value="{q}">{q}</option>' for q in sorted(qids) if q
    ]
    filters = "".join(
        f'<label><input type="checkbox" id="filter-{k}"> {t}</label> '
        for k, t in (
            ("truncated", "truncated"),
            ("inclusive", "answer-inclusive"),
            ("wrong", "wrong"),
        )
    )
    return (
        '<div class="controls">'
        + _select("trace-run", "Run", run_opts)
        + _select("trace-round", "Round", round_opts)
        + _select("trace-question", "Question", q_opts)
        + filters
        + '<input type="search" id="trace-search" placeholder="search the traces"> '
        + '<span id="trace-count" class="muted"></span></div>'
        + '<p id="trace-none" class="muted" hidden>No samples for this run and round.</p>'
        + "".join(blocks)
    )


TRACE_JS = """
(function () {
  var run = document.getElementById('trace-run'), rnd = document.getElementById('trace-round');
  if (!run || !rnd) return;
  var q = document.getElementById('trace-question');
  var search = document.getElementById('trace-search');
  function on(id) { return document.getElementById('filter-' + id).checked; }
  function keep(t, setOn) {
    if (!setOn) return false;
    if (q.value !== 'all' && t.dataset.qid !== q.value) return false;
    var filtered = on('truncated') || on('inclusive') || on('wrong');
    if (filtered && t.dataset.finish === '') return false;  // teacher traces, DPO pairs
    if (on('truncated') && t.dataset.truncated !== '1') return false;
    if (on('inclusive') && t.dataset.inclusive !== '1') return false;
    if (on('wrong') && t.dataset.correct !== '0') return false;
    var s = search.value.trim().toLowerCase();
    return !s || t.textContent.toLowerCase().indexOf(s) >= 0;
  }
  function show() {
    var any = false, shown = 0;
    document.querySelectorAll('.trace-set').forEach(function (d) {
      var setOn = (run.value === 'all' || d.dataset.run === run.value) &&
                  (rnd.value === 'all' || d.dataset.round === rnd.value);
      var n = 0;
      d.querySelectorAll('.trace').forEach(function (t) {
        var k = keep(t, setOn); t.hidden = !k; if (k) n++;
      });
      d.querySelectorAll('details.question').forEach(function (g) {
        g.hidden = !g.querySelector('.trace:not([hidden])');
      });
      d.hidden = n === 0; any = any || n > 0; shown += n;
    });
    document.getElementById('trace-none').hidden = any;
    document.getElementById('trace-count').textContent = shown + ' shown';
  }
  run.addEventListener('change', function () {
    rnd.value = run.options[run.selectedIndex].dataset.latest; show();
  });
  q.addEventListener('change', function () {
    if (q.value !== 'all') { run.value = 'all'; rnd.value = 'all'; } show();
  });
  [rnd, search].forEach(function (e) { e.addEventListener('input', show); });
  rnd.addEventListener('change', show);
  ['truncated', 'inclusive', 'wrong'].forEach(function (k) {
    document.getElementById('filter-' + k).addEventListener('change', show);
  });
  show();
})();
"""
