"""The report's page: one self-contained HTML file, plotly.js inlined once in <head>, no server
and no CDN (clusters often have no internet; results are read on a laptop later)."""

from __future__ import annotations

import html
from pathlib import Path

from mbt_online.report.charts import (
    Charts,
    curve_metrics,
    first_reach,
    group_curves,
    histograms,
    phase_charts,
    render_curves,
    timing_charts,
    training_charts,
)
from mbt_online.report.runs import RunData, find_runs, seed_groups
from mbt_online.report.tables import render_config_diff, render_group_table, render_table
from mbt_online.report.traces import TRACE_JS, render_traces
from mbt_online.rundir.artifacts import clear_cache
from mbt_online.rundir.atomic import write_text_atomic
from mbt_online.rundir.names import check_output_file

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { margin-bottom: 0.2em; } .muted { color: #888; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 12px; }
.chart { border: 1px solid #eee; border-radius: 6px; }
table.results { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 14px; }
table.results th, table.results td {
  border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
table.results th:first-child { text-align: left; } td.best { font-weight: bold; }
.ci { color: #777; font-size: 12px; font-weight: normal; }
pre { white-space: pre-wrap; background: #f7f7f7; padding: 8px; max-height: 28em; overflow: auto; }
details { margin: 4px 0; }
details.sample, details.question { border-left: 3px solid #ccd; padding-left: 8px; }
.phase { background: #e3effd; border-radius: 4px; padding: 1px 6px; font-size: 12px; }
.teacher { border-left: 3px solid #9c6; padding-left: 8px; margin: 6px 0; }
.diff { white-space: pre-wrap; background: #fbfbfb; padding: 8px; font-family: monospace;
  font-size: 13px; max-height: 28em; overflow: auto; }
del { background: #fdd; color: #900; } ins { background: #dfd; color: #060; text-decoration: none; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
details.dpo-pair { border-left: 3px solid #c9c; padding-left: 8px; }
table.comps { font-size: 12px; border-collapse: collapse; } table.comps td { padding: 1px 8px; }
.controls { margin: 0.5em 0; position: sticky; top: 0; background: #fff; padding: 4px 0; }
select, input { font-size: 14px; }
"""


def _section(title: str, body: str, note: str = "") -> str:
    if not body.strip():
        return ""
    note_html = f'<p class="muted">{note}</p>' if note else ""
    return f'<h2>{title}</h2>{note_html}<div class="charts">{body}</div>'


def _interval_note(runs: list[RunData]) -> str:
    has = any(k.endswith("_ci_low") for r in runs for row in r.rows for k in row)
    return (
        "Error bars: 95% intervals (over eval seeds, or over a member's seed runs)." if has else ""
    )


def render_html(runs: list[RunData], max_samples: int = 10) -> str:
    """The whole page. Seed members of a sweep (`<member>-s<seed>`) are one series in the tables
    and round curves (mean with its interval); the per-trace sections show each member."""
    from plotly.offline import get_plotlyjs

    clear_cache()
    series = seed_groups(runs)
    charts = Charts()
    curves = render_curves(charts, series, curve_metrics(series))
    groups = render_curves(charts, series, group_curves(series))
    sections = [
        _section("Curves per round", curves, _interval_note(series)),
        _section("Per benchmark and tier", groups),
        _section(
            "Token lengths per round",
            histograms(charts, series),
            "The spike at the length cap is the degeneration signature.",
        ),
        _section(
            "First reach against trace length",
            first_reach(charts, series),
            "Where the gold answer first appears; late or lost reaches are redundancy.",
        ),
        _section("Phases per round", phase_charts(charts, series), "Share of eval traces."),
        _section("Training", training_charts(charts, series)),
        _section("Where the time went", timing_charts(charts, series)),
    ]
    traces = render_traces(series, max_samples)
    sources = "".join(
        f"<li>{html.escape(r.name)}: {html.escape(str(r.path))} ({r.source}, "
        f"{len(r.rows)} rounds)</li>"
        for r in series
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mbt-online report</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body data-charts="{charts.count}">
<h1>mbt-online report</h1>
<p class="muted">{len(series)} runs. Rates and accuracy are fractions in the charts,
percentages in the tables.</p>
<details><summary>Sources</summary><ul>{sources}</ul></details>
<h2>Final round</h2>
{render_table(series)}
<h3>Per benchmark and tier</h3>
{render_group_table(series)}
<details><summary>Config differences</summary>{render_config_diff(series)}</details>
{"".join(sections)}
<h2>Sample traces</h2>
{traces}
<script type="text/javascript">{TRACE_JS}</script>
</body></html>
"""


def write_report(paths: list[Path], out: Path, max_samples: int = 10) -> Path:
    """Read runs/sweeps/wandb offline runs and write one self-contained HTML file."""
    out = check_output_file(Path(out), (".html", ".htm"))
    runs = find_runs([Path(p) for p in paths])
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out, render_html(runs, max_samples))
