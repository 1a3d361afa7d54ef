"""An offline HTML report over runs and sweeps: curves per round, a final-round table, traces.

Clusters often have no internet and results are read on a laptop later, so the report is one file
with plotly.js inlined once: no server, no CDN. It reads run directories (metrics.jsonl and the
per-round artifacts) and, for runs made elsewhere, a wandb offline run's `.wandb` record log
(`tools.wandb_log`).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mbt_online.config import RewardWeights
from mbt_online.rundir.atomic import write_text_atomic
from mbt_online.rundir.metrics_file import METRICS_FILE, read_metrics
from mbt_online.rundir.stages import load_rows, stage_dir
from mbt_online.rundir.state import STATE_FILE
from mbt_online.scoring.round_metrics import HEADLINE
from mbt_online.tools.wandb_log import read_wandb_file, wandb_log_files

# (metric key, chart title): the round's headline; reward/* components are discovered and
# appended after these.
CURVES = HEADLINE
# every reward component the config can weight, so a new component shows up without edits here
REWARD_ORDER = ("total", *RewardWeights.model_fields)
# (metric key, column header, format, higher is better): the paper's final-round table.
TABLE = (
    ("eval/accuracy", "Acc. (%)", "pct", True),
    ("eval/em", "EM (%)", "pct", True),
    ("eval/f1", "F1 (%)", "pct", True),
    ("eval/mean_tokens", "Tokens", "int", False),
    ("eval/degeneration_rate", "Degen. (%)", "pct", False),
    ("eval/answer_inclusive_rate", "Ans.-incl. (%)", "pct", False),
    ("eval/aes", "AES", "f3", True),
    ("eval/rrp", "RRP", "f3", True),
    ("eval/mqi", "MQI", "f2", True),
)
# config keys that differ between any two runs by construction, not by design
CONFIG_NOISE = ("run.name", "run.runs_dir", "tracking.")


@dataclass
class RunData:
    """What the report knows of one run, whatever it was read from."""

    name: str
    path: Path
    source: str  # "run" (a run directory) or "wandb" (an offline wandb run)
    rows: list[dict[str, Any]]  # one per round, sorted by round
    config: dict[str, Any] = field(default_factory=dict)  # dotted keys

    @property
    def rounds(self) -> list[int]:
        return [int(r["round"]) for r in self.rows]


# ---------------------------------------------------------------------------------------------
# finding and reading runs


def find_runs(paths: list[Path]) -> list[RunData]:
    """Runs under the given paths: run dirs, sweep dirs, wandb offline runs or their parents."""
    runs: list[RunData] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"report: no such file or directory: {p}")
        found = _runs_at(p)
        if not found:
            raise FileNotFoundError(f"report: {p} holds no run (metrics.jsonl), sweep or wandb run")
        runs.extend(found)
    return _unique_names(runs)


def _runs_at(p: Path) -> list[RunData]:
    if p.is_file() and p.suffix == ".wandb":
        return [read_wandb_runs([p])[0]]
    if _is_run_dir(p):
        return [read_run_dir(p)]
    members = _sweep_members(p)
    if members:
        return [read_run_dir(m) for m in members]
    wandb_files = wandb_log_files(p)
    return read_wandb_runs(wandb_files) if wandb_files else []


def _is_run_dir(p: Path) -> bool:
    return p.is_dir() and ((p / METRICS_FILE).exists() or (p / STATE_FILE).exists())


def _sweep_members(p: Path) -> list[Path]:
    """Member run dirs in the sweep's own order (sweep.json), else every run dir below, sorted."""
    manifest = p / "sweep.json"
    if manifest.exists():
        names = [m["name"] for m in json.loads(manifest.read_text()).get("members", [])]
        listed = [p / n for n in names if _is_run_dir(p / n)]
        others = sorted(d for d in p.iterdir() if _is_run_dir(d) and d.name not in names)
        return listed + others
    return sorted(d for d in p.iterdir() if _is_run_dir(d)) if p.is_dir() else []


def _unique_names(runs: list[RunData]) -> list[RunData]:
    """Two sweeps both have a `base`: qualify clashing names with their parent directory."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.name] = counts.get(r.name, 0) + 1
    for r in runs:
        if counts[r.name] > 1:
            r.name = f"{r.path.parent.name}/{r.name}"
    seen: set[str] = set()
    for i, r in enumerate(runs):  # still equal (same parent name): number them
        if r.name in seen:
            r.name = f"{r.name}#{i + 1}"
        seen.add(r.name)
    return runs


def read_run_dir(run_dir: Path) -> RunData:
    config: dict[str, Any] = {}
    if (run_dir / "config.yaml").exists():
        config = _flatten(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    return RunData(
        name=str(config.get("run.name") or run_dir.name),
        path=run_dir,
        source="run",
        rows=merge_rounds(read_metrics(run_dir)),
        config=config,
    )


def merge_rounds(rows: list[dict[str, Any]], round_key: str = "round") -> list[dict[str, Any]]:
    """One row per round (later values win), numeric values only, sorted by round."""
    by_round: dict[int, dict[str, Any]] = {}
    for row in rows:
        if not isinstance(row.get(round_key), int | float):
            continue
        r = int(row[round_key])
        merged = by_round.setdefault(r, {"round": r})
        merged.update({k: v for k, v in row.items() if _is_number(v) and not k.startswith("_")})
        merged["round"] = r
    return [by_round[r] for r in sorted(by_round)]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def read_wandb_runs(files: list[Path]) -> list[RunData]:
    """One RunData per wandb run id: a resumed run writes one offline dir per process."""
    runs: dict[str, RunData] = {}
    raw_rows: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(files, key=lambda f: f.parent.name):  # offline-run-<date>_<time>: time order
        info, history = read_wandb_file(path)
        config = _flatten({k: v for k, v in info["config"].items() if k != "_wandb"})
        run = runs.setdefault(
            info["id"],
            RunData(
                name=str(info["name"] or info["id"]), path=path.parent, source="wandb", rows=[]
            ),
        )
        run.config.update(config)
        raw_rows.setdefault(info["id"], []).extend(history)
    for run_id, run in runs.items():
        rows = raw_rows[run_id]
        # the loop logs "round"; other writers (TRL steps) do not, and then each step is a round
        key = "round" if any("round" in r for r in rows) else "_step"
        run.rows = merge_rounds(rows, key)
    return list(runs.values())


# ---------------------------------------------------------------------------------------------
# per-round samples (run directories only)


def load_stage(run_dir: Path, round_: int, stage: str) -> list[dict[str, Any]]:
    """A stage's rows, or [] when the stage never ran."""
    folder = stage_dir(run_dir, round_, stage)
    return load_rows(folder) if (folder / "state.json").exists() else []


def artifact_rounds(run_dir: Path) -> list[int]:
    rounds = []
    for d in run_dir.glob("round-*"):
        suffix = d.name.removeprefix("round-")
        if d.is_dir() and suffix.isdigit():
            rounds.append(int(suffix))
    return sorted(rounds)


def _components(row: dict[str, Any]) -> dict[str, Any]:
    comps = row.get("components")
    if isinstance(comps, str):
        try:
            comps = json.loads(comps)
        except json.JSONDecodeError:
            return {}
    return comps if isinstance(comps, dict) else {}


# ---------------------------------------------------------------------------------------------
# rendering


def _fmt(value: Any, kind: str) -> str:
    if not _is_number(value) or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "pct":
        return f"{100 * value:.1f}"
    if kind == "int":
        return f"{value:.0f}"
    return f"{value:.{kind[1:]}f}" if kind.startswith("f") else str(value)


def curve_metrics(runs: list[RunData]) -> list[tuple[str, str]]:
    """The charts to draw: the fixed eval curves, then each reward component any run logged.

    The loop logs the reward of the eval samples as reward/eval_<component> (every round, so
    untrained baselines have it too) and of the training rollouts as reward/<component>.
    """
    present = {k for r in runs for row in r.rows for k in row}

    def order(key: str) -> tuple[int, int, str]:
        name = key.removeprefix("reward/")
        is_eval = name.startswith("eval_")
        comp = name.removeprefix("eval_")
        rank = REWARD_ORDER.index(comp) if comp in REWARD_ORDER else len(REWARD_ORDER)
        return (0 if is_eval else 1, rank, comp)

    def title(key: str) -> str:
        name = key.removeprefix("reward/")
        where = "eval" if name.startswith("eval_") else "rollouts"
        return f"Reward ({where}): {name.removeprefix('eval_').replace('_', ' ')}"

    rewards = sorted((k for k in present if k.startswith("reward/")), key=order)
    wanted = [*CURVES, *[(k, title(k)) for k in rewards]]
    return [(k, t) for k, t in wanted if k in present]


def run_colors(runs: list[RunData]) -> dict[str, str]:
    """The same colour for a run in every chart."""
    from plotly.colors import qualitative

    palette = qualitative.Plotly + qualitative.D3 + qualitative.Dark24
    return {r.name: palette[i % len(palette)] for i, r in enumerate(runs)}


def render_charts(runs: list[RunData]) -> tuple[str, int]:
    """(HTML of one plotly chart per metric, how many charts)."""
    import plotly.graph_objects as go

    colors = run_colors(runs)
    parts = []
    metrics = curve_metrics(runs)
    last_round = max((r.rounds[-1] for r in runs if r.rows), default=0)
    for i, (key, title) in enumerate(metrics):
        fig = go.Figure()
        for run in runs:
            points = [(row["round"], row[key]) for row in run.rows if _is_number(row.get(key))]
            if not points:
                continue
            # an untrained baseline (round 0 only) is a reference level for every later round
            flat = len(points) == 1 and points[0][0] == 0 and last_round > 0
            if flat:
                points = [points[0], (last_round, points[0][1])]
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in points],
                    y=[p[1] for p in points],
                    mode="lines" if flat else "lines+markers",
                    name=run.name + (" (round 0)" if flat else ""),
                    legendgroup=run.name,
                    line={"color": colors[run.name], "dash": "dash" if flat else "solid"},
                    hovertemplate=html.escape(run.name) + "<br>round %{x}: %{y:.4g}<extra></extra>",
                )
            )
        fig.update_layout(
            title={"text": title, "x": 0.02},
            template="plotly_white",
            height=330,
            margin={"l": 50, "r": 10, "t": 40, "b": 40},
            legend={"font": {"size": 10}},
            xaxis={"title": {"text": "round"}, "dtick": 1},
        )
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"chart-{i}",
            config={"displaylogo": False, "responsive": True},
        )
        parts.append(f'<div class="chart" data-metric="{html.escape(key)}">{div}</div>')
    return "\n".join(parts), len(metrics)


def render_table(runs: list[RunData]) -> str:
    """The paper-style table: each run's final round, best value per column in bold."""
    finals = {r.name: (r.rows[-1] if r.rows else {}) for r in runs}
    cols = [c for c in TABLE if any(_is_number(f.get(c[0])) for f in finals.values())]
    best: dict[str, float] = {}
    for key, _, _, higher in cols:
        values = [f[key] for f in finals.values() if _is_number(f.get(key))]
        # a column where every run ties marks nothing
        if len(set(values)) > 1:
            best[key] = max(values) if higher else min(values)
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _, _ in cols)
    body = []
    for run in runs:
        final = finals[run.name]
        cells = []
        for key, _, kind, _ in cols:
            text = _fmt(final.get(key), kind)
            is_best = _is_number(final.get(key)) and final[key] == best.get(key)
            cells.append(f'<td class="{"best" if is_best else ""}">{text}</td>')
        rnd = final.get("round", "–")
        body.append(f"<tr><th>{html.escape(run.name)}</th><td>{rnd}</td>{''.join(cells)}</tr>")
    return (
        f'<table class="results" id="final-table"><thead><tr><th>Run</th><th>Round</th>{head}'
        f"</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def render_config_diff(runs: list[RunData]) -> str:
    """Only the config keys that differ between runs: what each row of the table changed."""
    keys = sorted({k for r in runs for k in r.config if not k.startswith(CONFIG_NOISE)})
    varied = [
        k for k in keys if len({json.dumps(r.config.get(k), sort_keys=True) for r in runs}) > 1
    ]
    if not varied or len(runs) < 2:
        return "<p>No config differences between the runs.</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in varied)
    body = "".join(
        f"<tr><th>{html.escape(r.name)}</th>"
        + "".join(f"<td>{html.escape(_plain(r.config.get(k)))}</td>" for k in varied)
        + "</tr>"
        for r in runs
    )
    return (
        f'<table class="results" id="config-diff"><thead><tr><th>Run</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _pre(text: Any) -> str:
    return f"<pre>{html.escape(str(text or ''))}</pre>"


def _phases(phases: Any) -> str:
    if not phases:
        return '<span class="muted">no phases found</span>'
    return " ".join(f'<span class="phase">{html.escape(str(p))}</span>' for p in phases)


def _components_table(row: dict[str, Any]) -> str:
    comps = _components(row)
    if not comps:
        return ""
    cells = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_num(v))}</td></tr>"
        for k, v in comps.items()
    )
    return f'<table class="comps"><tr><th>component</th><th>value</th></tr>{cells}</table>'


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _sample_summary(row: dict[str, Any]) -> str:
    mark = "✓" if row.get("correct") else "✗"
    bits = [mark, str(row.get("example_id", "?"))]
    if "sample" in row:
        bits.append(f"sample {row['sample']}")
    for key in ("tier", "tokens", "finish_reason"):
        if row.get(key) is not None:
            bits.append(f"{key} {row[key]}")
    if _is_number(row.get("reward")):
        bits.append(f"reward {row['reward']:.3f}")
    return " · ".join(html.escape(b) for b in bits)


def render_student(row: dict[str, Any]) -> str:
    return (
        f'<details class="sample"><summary>{_sample_summary(row)}</summary>'
        f"<p><b>Question:</b> {html.escape(str(row.get('question', '')))}</p>"
        f"<p><b>Predicted:</b> {html.escape(str(row.get('predicted')))} · "
        f"<b>gold:</b> {html.escape(str(row.get('answer')))}</p>"
        f"<p><b>Phases:</b> {_phases(row.get('phases'))}</p>"
        f"{_components_table(row)}<p><b>Student trace</b></p>"
        f"{_pre(row.get('trace') or row.get('completion'))}"
        f"<details><summary>raw completion</summary>{_pre(row.get('completion'))}</details>"
        "</details>"
    )


def render_teacher(row: dict[str, Any]) -> str:
    verified = "verified" if row.get("verified") else "rejected"
    reasons = ", ".join(map(str, row.get("reasons") or [])) or "none"
    draft = (
        "<details><summary>draft (student trace it rewrote)</summary>"
        f"{_pre(row['draft'])}</details>"
        if row.get("draft")
        else ""
    )
    return (
        f'<div class="teacher"><p><b>Teacher ({html.escape(str(row.get("mode")))}, '
        f"{html.escape(str(row.get('backend')))})</b>: "
        f"{verified} after {row.get('tries', '?')} tries; "
        f"reasons: {html.escape(reasons)}; phases: {_phases(_teacher_phases(row))}</p>"
        f"{_pre(row.get('trace'))}{draft}</div>"
    )


def _teacher_phases(row: dict[str, Any]) -> list[str]:
    from mbt_online.scoring.metrics import detect_phases

    return detect_phases(str(row.get("trace") or ""))


def render_round_samples(run_dir: Path, round_: int, max_samples: int) -> str:
    """Eval samples, then training questions with their student samples and teacher traces."""
    evals = load_stage(run_dir, round_, "eval")[:max_samples]
    scored = load_stage(run_dir, round_, "score")
    teach = load_stage(run_dir, round_, "teach")
    parts = []
    if evals:
        parts.append(
            f"<h4>Evaluation ({len(evals)} shown)</h4>" + "".join(map(render_student, evals))
        )
    by_question: dict[str, list[dict[str, Any]]] = {}
    for row in scored:
        by_question.setdefault(str(row.get("example_id")), []).append(row)
    teachers: dict[str, list[dict[str, Any]]] = {}
    for row in teach:
        teachers.setdefault(str(row.get("example_id")), []).append(row)
    ids = list(dict.fromkeys([*by_question, *teachers]))[:max_samples]
    if ids:
        parts.append(f"<h4>Training questions ({len(ids)} shown)</h4>")
    for qid in ids:
        students = by_question.get(qid, [])
        first = (students or teachers.get(qid) or [{}])[0]
        question = html.escape(str(first.get("question", "")))
        parts.append(
            f'<details class="question"><summary>{html.escape(qid)}: {question[:160]}</summary>'
            + "".join(map(render_student, students))
            + "".join(map(render_teacher, teachers.get(qid, [])))
            + "</details>"
        )
    return "".join(parts)


def render_traces(runs: list[RunData], max_samples: int) -> str:
    """A trace browser: pick a run and a round; one pre-rendered block per (run, round).

    Choosing a run jumps to its latest round with samples: that is what a reader looks at first.
    """
    blocks, latest, rounds = [], {}, set()
    for i, run in enumerate(runs):
        if run.source != "run":
            continue
        for r in artifact_rounds(run.path):
            content = render_round_samples(run.path, r, max_samples)
            if content:
                latest[i] = r
                rounds.add(r)
                blocks.append(
                    f'<div class="trace-set" data-run="{i}" data-round="{r}" hidden>{content}</div>'
                )
    if not blocks:
        return "<p>No per-round samples (only run directories carry them).</p>"
    run_opts = "".join(
        f'<option value="{i}" data-latest="{r}">{html.escape(runs[i].name)}</option>'
        for i, r in latest.items()
    )
    first = latest[next(iter(latest))]
    round_opts = "".join(
        f'<option value="{r}"{" selected" if r == first else ""}>round {r}</option>'
        for r in sorted(rounds)
    )
    return (
        f'<div class="controls"><label>Run <select id="trace-run">{run_opts}</select></label> '
        f'<label>Round <select id="trace-round">{round_opts}</select></label></div>'
        f'<p id="trace-none" class="muted" hidden>No samples for this run and round.</p>'
        + "".join(blocks)
    )


TRACE_JS = """
(function () {
  var run = document.getElementById('trace-run'), rnd = document.getElementById('trace-round');
  if (!run || !rnd) return;
  function show() {
    var any = false;
    document.querySelectorAll('.trace-set').forEach(function (d) {
      var on = d.dataset.run === run.value && d.dataset.round === rnd.value;
      d.hidden = !on; any = any || on;
    });
    document.getElementById('trace-none').hidden = any;
  }
  run.addEventListener('change', function () {
    rnd.value = run.options[run.selectedIndex].dataset.latest; show();
  });
  rnd.addEventListener('change', show); show();
})();
"""

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { margin-bottom: 0.2em; } .muted { color: #888; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 12px; }
.chart { border: 1px solid #eee; border-radius: 6px; }
table.results { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 14px; }
table.results th, table.results td {
  border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
table.results th:first-child { text-align: left; } td.best { font-weight: bold; }
pre { white-space: pre-wrap; background: #f7f7f7; padding: 8px; max-height: 28em; overflow: auto; }
details { margin: 4px 0; }
details.sample, details.question { border-left: 3px solid #ccd; padding-left: 8px; }
.phase { background: #e3effd; border-radius: 4px; padding: 1px 6px; font-size: 12px; }
.teacher { border-left: 3px solid #9c6; padding-left: 8px; margin: 6px 0; }
table.comps { font-size: 12px; border-collapse: collapse; } table.comps td { padding: 1px 8px; }
.controls { margin: 0.5em 0; } select { font-size: 14px; }
"""


def render_html(runs: list[RunData], max_samples: int = 10) -> str:
    """The whole page; plotly.js is inlined once in <head>, every chart reuses it."""
    from plotly.offline import get_plotlyjs

    charts, n_charts = render_charts(runs)
    sources = "".join(
        f"<li>{html.escape(r.name)}: {html.escape(str(r.path))} ({r.source}, "
        f"{len(r.rows)} rounds)</li>"
        for r in runs
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mbt-online report</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body data-charts="{n_charts}">
<h1>mbt-online report</h1>
<p class="muted">{len(runs)} runs. Rates and accuracy are fractions in the charts,
percentages in the table.</p>
<details><summary>Sources</summary><ul>{sources}</ul></details>
<h2>Final round</h2>
{render_table(runs)}
<details><summary>Config differences</summary>{render_config_diff(runs)}</details>
<h2>Curves per round</h2>
<div class="charts">{charts}</div>
<h2>Sample traces</h2>
{render_traces(runs, max_samples)}
<script type="text/javascript">{TRACE_JS}</script>
</body></html>
"""


def write_report(paths: list[Path], out: Path, max_samples: int = 10) -> Path:
    """Read runs/sweeps/wandb offline runs and write one self-contained HTML file."""
    runs = find_runs([Path(p) for p in paths])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out, render_html(runs, max_samples))
