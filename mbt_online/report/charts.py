"""The report's plotly charts: round curves with seed intervals, per-benchmark and per-tier curves,
token-length histograms, first reach against length, phase shares, training curves and timing.

Every chart is a `<div class="chart">` carrying data attributes (metric, run, rounds) that the
page's tests and a reader's browser search can address; plotly.js itself is inlined once by
`page.render_html`.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

from mbt_online.config import RewardWeights
from mbt_online.report.runs import RunData, is_number
from mbt_online.rundir.artifacts import (
    artifact_rounds,
    diagnostics,
    global_steps,
    stage_rows,
)
from mbt_online.scoring.metrics import PHASES
from mbt_online.scoring.round_metrics import HEADLINE

# (metric key, chart title): the round's headline; reward/* components are discovered and
# appended after these.
CURVES = HEADLINE
# every reward component the config can weight, so a new component shows up without edits here
REWARD_ORDER = ("total", *RewardWeights.model_fields)
# (TRL key, stage, title): the training curves, against the run's global step
TRAIN_CURVES = (
    ("loss", "sft", "SFT loss"),
    ("loss", "dpo", "DPO loss"),
    ("rewards/accuracies", "dpo", "DPO reward accuracy"),
    ("rewards/margins", "dpo", "DPO reward margin"),
)
LAYOUT = {
    "template": "plotly_white",
    "height": 330,
    "margin": {"l": 50, "r": 10, "t": 40, "b": 40},
    "legend": {"font": {"size": 10}},
}


class Charts:
    """Numbers chart divs across sections (one id space per page) and counts them."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, fig: Any, title: str, attrs: dict[str, Any]) -> str:
        """The figure as a chart div. Plotly reads a subset of HTML in titles, trace names and
        hover texts (`<a href>`, `<b>`, entities): run names, benchmark labels and question ids
        are written as text there (`plot_text`), so a name shows as typed and makes no link."""
        for trace in fig.data:
            if isinstance(trace.name, str):
                trace.name = plot_text(trace.name)
            text = getattr(trace, "text", None)
            if isinstance(text, tuple | list):
                trace.text = [plot_text(t) for t in text]
            elif isinstance(text, str):
                trace.text = plot_text(text)
        fig.update_layout(title={"text": plot_text(title), "x": 0.02}, **LAYOUT)
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"chart-{self.count}",
            config={"displaylogo": False, "responsive": True},
        )
        self.count += 1
        data = " ".join(f'data-{k}="{html.escape(str(v))}"' for k, v in attrs.items())
        return f'<div class="chart" {data}>{div}</div>'


def plot_text(text: Any) -> str:
    """Text plotly shows as it is: `&`, `<` and `>` as the entities plotly turns back into
    characters (it knows no `&quot;`, so quotes stay)."""
    return html.escape(str(text), quote=False)


def run_colors(runs: list[RunData]) -> dict[str, str]:
    """The same colour for a run in every chart."""
    from plotly.colors import qualitative

    palette = qualitative.Plotly + qualitative.D3 + qualitative.Dark24
    return {r.name: palette[i % len(palette)] for i, r in enumerate(runs)}


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

    rewards = sorted(
        (k for k in present if k.startswith("reward/") and not _is_spread(k)), key=order
    )
    wanted = [*CURVES, *[(k, title(k)) for k in rewards]]
    return [(k, t) for k, t in wanted if k in present]


def _is_spread(key: str) -> bool:
    return key.endswith(("_ci_low", "_ci_high", "_std", "_n"))


def group_labels(runs: list[RunData]) -> tuple[list[str], list[str]]:
    """(benchmarks, tiers) named in eval/<label>/<metric> keys: a benchmark has its official F1,
    a tier only accuracy and length."""
    labels: dict[str, set[str]] = {}
    for run in runs:
        for row in run.rows:
            for key in row:
                parts = key.split("/")
                if len(parts) == 3 and parts[0] == "eval":
                    labels.setdefault(parts[1], set()).add(parts[2])
    benchmarks = sorted(lb for lb, keys in labels.items() if "f1" in keys)
    tiers = sorted(lb for lb, keys in labels.items() if "f1" not in keys and "accuracy" in keys)
    return benchmarks, tiers


def group_curves(runs: list[RunData]) -> list[tuple[str, str]]:
    """Accuracy and length per benchmark, then accuracy per tier."""
    benchmarks, tiers = group_labels(runs)
    out = []
    for b in benchmarks:
        out += [(f"eval/{b}/accuracy", f"Accuracy: {b}"), (f"eval/{b}/mean_tokens", f"Tokens: {b}")]
        out.append((f"eval/{b}/degeneration_rate", f"Degeneration: {b}"))
    out += [(f"eval/{t}/accuracy", f"Accuracy: tier {t}") for t in tiers]
    present = {k for r in runs for row in r.rows for k in row}
    return [(k, t) for k, t in out if k in present]


def _error_bars(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """Asymmetric error bars from `<key>_ci_low/_ci_high` (eval seeds or merged sweep seeds)."""
    lows = [row.get(f"{key}_ci_low") for row in rows]
    highs = [row.get(f"{key}_ci_high") for row in rows]
    if not any(is_number(x) for x in lows + highs):
        return None
    return {
        "type": "data",
        "symmetric": False,
        "array": [h - row[key] if is_number(h) else 0 for row, h in zip(rows, highs, strict=True)],
        "arrayminus": [
            row[key] - lo if is_number(lo) else 0 for row, lo in zip(rows, lows, strict=True)
        ],
    }


def round_chart(charts: Charts, runs: list[RunData], key: str, title: str) -> str:
    """One line per run over rounds; an untrained baseline (round 0 only) is a dashed level."""
    import plotly.graph_objects as go

    colors = run_colors(runs)
    last_round = max((r.rounds[-1] for r in runs if r.rows), default=0)
    fig = go.Figure()
    for run in runs:
        rows = [row for row in run.rows if is_number(row.get(key))]
        if not rows:
            continue
        points = [(row["round"], row[key]) for row in rows]
        flat = len(points) == 1 and points[0][0] == 0 and last_round > 0
        if flat:
            points = [points[0], (last_round, points[0][1])]
        bars = None if flat else _error_bars(rows, key)
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                mode="lines" if flat else "lines+markers",
                name=run.name + (" (round 0)" if flat else ""),
                legendgroup=run.name,
                line={"color": colors[run.name], "dash": "dash" if flat else "solid"},
                hovertemplate=plot_text(run.name).replace("%{", "%&#123;")
                + "<br>round %{x}: %{y:.4g}<extra></extra>",
                **({"error_y": bars} if bars else {}),
            )
        )
    fig.update_layout(xaxis={"title": {"text": "round"}, "dtick": 1})
    return charts.add(fig, title, {"metric": key})


def render_curves(charts: Charts, runs: list[RunData], metrics: list[tuple[str, str]]) -> str:
    return "\n".join(round_chart(charts, runs, key, title) for key, title in metrics)


# ---------------------------------------------------------------------------------------------
# charts from the per-round artifacts (run directories only)


def artifact_runs(runs: list[RunData]) -> Iterator[tuple[int, RunData]]:
    """(index, run) of the runs that have per-round artifacts: run dirs and seed members."""
    i = 0
    for run in runs:
        for r in run.members or [run]:
            if r.source == "run":
                yield i, r
                i += 1


def length_cap(run: RunData) -> int | None:
    cap = run.config.get("eval.sampling.max_tokens")
    return int(cap) if is_number(cap) else None


def histograms(charts: Charts, runs: list[RunData]) -> str:
    """Token lengths of the eval traces, one histogram per round, per run: degeneration is the
    spike at the length cap (drawn as a vertical line)."""
    import plotly.graph_objects as go

    parts = []
    for _, run in artifact_runs(runs):
        fig, rounds = go.Figure(), []
        for r in artifact_rounds(run.path):
            tokens = [row["tokens"] for row in stage_rows(run.path, r, "eval") if "tokens" in row]
            if tokens:
                rounds.append(r)
                fig.add_trace(go.Histogram(x=tokens, name=f"round {r}", opacity=0.6, nbinsx=40))
        if not rounds:
            continue
        cap = length_cap(run)
        if cap:
            fig.add_vline(x=cap, line_dash="dot", line_color="#c33", annotation_text="cap")
        fig.update_layout(barmode="overlay", xaxis={"title": {"text": "tokens"}})
        attrs = {"kind": "histogram", "run": run.name, "rounds": ",".join(map(str, rounds))}
        parts.append(charts.add(fig, f"Token lengths: {run.name}", attrs))
    return "\n".join(parts)


def first_reach(charts: Charts, runs: list[RunData]) -> str:
    """Where the gold answer first appears (relative position) against the trace length, per
    round: correct traces reach early; answer-inclusive ones found it, then lost it."""
    import plotly.graph_objects as go

    parts = []
    for _, run in artifact_runs(runs):
        fig, n = go.Figure(), 0
        for r in artifact_rounds(run.path):
            pts = [
                (row.get("tokens"), diagnostics(row).get("first_reach"), row)
                for row in stage_rows(run.path, r, "eval")
            ]
            pts = [p for p in pts if is_number(p[0]) and is_number(p[1])]
            if not pts:
                continue
            n += 1
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in pts],
                    y=[p[1] for p in pts],
                    mode="markers",
                    name=f"round {r}",
                    marker={"symbol": ["circle" if p[2].get("correct") else "x" for p in pts]},
                    text=[str(p[2].get("example_id")) for p in pts],
                )
            )
        if n:
            fig.update_layout(
                xaxis={"title": {"text": "trace tokens"}},
                yaxis={"title": {"text": "first reach (0..1)"}, "range": [0, 1.05]},
            )
            parts.append(
                charts.add(fig, f"First reach vs length: {run.name} (x = wrong)", {"run": run.name})
            )
    return "\n".join(parts)


def phase_rows(runs: list[RunData]) -> list[RunData]:
    """Per run, one row per round with `phase/<name>`: the share of eval traces showing it."""
    out = []
    for _, run in artifact_runs(runs):
        rows = []
        for r in artifact_rounds(run.path):
            evals = stage_rows(run.path, r, "eval")
            if evals:
                share = {
                    f"phase/{p}": sum(p in (x.get("phases") or []) for x in evals) / len(evals)
                    for p in PHASES
                }
                rows.append({"round": r, **share})
        if rows:
            out.append(RunData(run.name, run.path, run.source, rows, run.config))
    return out


def phase_charts(charts: Charts, runs: list[RunData]) -> str:
    shares = phase_rows(runs)
    if not shares:
        return ""
    return "\n".join(
        round_chart(charts, shares, f"phase/{p}", f"Traces with {p.replace('_', ' ')}")
        for p in PHASES
    )


def training_charts(charts: Charts, runs: list[RunData]) -> str:
    """SFT and DPO loss, DPO reward accuracy and margin against the run's global step."""
    import plotly.graph_objects as go

    colors = run_colors([r for _, r in artifact_runs(runs)])
    logs = {
        run.name: global_steps(run.path, [r for r in artifact_rounds(run.path) if r > 0])
        for _, run in artifact_runs(runs)
    }
    parts = []
    for key, stage, title in TRAIN_CURVES:
        fig, n = go.Figure(), 0
        for name, rows in logs.items():
            mine = [x for x in rows if x["stage"] == stage and key in x]
            pts: list[tuple[Any, Any]] = []
            for j, x in enumerate(mine):  # a gap between rounds: the other stage trained there
                if j and x["round"] != mine[j - 1]["round"]:
                    pts.append((None, None))
                pts.append((x["global_step"], x[key]))
            if pts:
                n += 1
                fig.add_trace(
                    go.Scatter(
                        x=[p[0] for p in pts],
                        y=[p[1] for p in pts],
                        mode="lines",
                        name=name,
                        line={"color": colors[name]},
                    )
                )
        if n:
            fig.update_layout(xaxis={"title": {"text": "global step (SFT, then DPO, per round)"}})
            parts.append(charts.add(fig, title, {"metric": f"train/{stage}/{key}"}))
    return "\n".join(parts)


def timing_charts(charts: Charts, runs: list[RunData]) -> str:
    """Where each round's time went: a stacked bar per round of its `timing/*` seconds."""
    import plotly.graph_objects as go

    parts = []
    for run in runs:
        keys = sorted({k for row in run.rows for k in row if k.startswith("timing/")})
        keys = [k for k in keys if not _is_spread(k)]
        if not keys:
            continue
        fig = go.Figure()
        for k in keys:
            fig.add_trace(
                go.Bar(
                    x=[row["round"] for row in run.rows],
                    y=[row.get(k, 0) for row in run.rows],
                    name=k.removeprefix("timing/"),
                )
            )
        fig.update_layout(
            barmode="stack",
            xaxis={"title": {"text": "round"}, "dtick": 1},
            yaxis={"title": {"text": "seconds"}},
        )
        parts.append(charts.add(fig, f"Time per round: {run.name}", {"kind": "timing"}))
    return "\n".join(parts)
