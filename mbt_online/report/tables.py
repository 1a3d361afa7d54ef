"""The report's tables: the paper-style final round (with seed intervals), the same per benchmark
and per tier, the config keys that differ between runs, and DPO pairs."""

from __future__ import annotations

import html
import json
import math
from typing import Any

from mbt_online.report.charts import group_labels
from mbt_online.report.runs import RunData, is_number

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
# per benchmark: (metric, header, format, higher is better)
GROUP_COLUMNS = (
    ("accuracy", "Acc. (%)", "pct", True),
    ("em", "EM (%)", "pct", True),
    ("f1", "F1 (%)", "pct", True),
    ("mean_tokens", "Tokens", "int", False),
    ("degeneration_rate", "Degen. (%)", "pct", False),
)
# config keys that differ between any two runs by construction, not by design
CONFIG_NOISE = ("run.name", "run.runs_dir", "tracking.")


def fmt(value: Any, kind: str) -> str:
    if not is_number(value) or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "pct":
        return f"{100 * value:.1f}"
    if kind == "int":
        return f"{value:.0f}"
    return f"{value:.{kind[1:]}f}" if kind.startswith("f") else str(value)


def _interval(row: dict[str, Any], key: str, kind: str) -> str:
    """` [low, high]` when the row carries a seed interval for the key."""
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if not (is_number(low) and is_number(high)):
        return ""
    return f' <span class="ci">[{fmt(low, kind)}, {fmt(high, kind)}]</span>'


def _columns_table(
    runs: list[RunData], cols: list[tuple[str, str, str, bool]], table_id: str, head_attrs: list
) -> str:
    """Each run's final round, best value per column in bold (a column where all tie: none)."""
    finals = {r.name: (r.rows[-1] if r.rows else {}) for r in runs}
    keep = [i for i, c in enumerate(cols) if any(is_number(f.get(c[0])) for f in finals.values())]
    cols, head_attrs = [cols[i] for i in keep], [head_attrs[i] for i in keep]
    best: dict[str, float] = {}
    for key, _, _, higher in cols:
        values = [f[key] for f in finals.values() if is_number(f.get(key))]
        if len(set(values)) > 1:
            best[key] = max(values) if higher else min(values)
    head = "".join(
        f"<th{attrs}>{html.escape(h)}</th>"
        for (_, h, _, _), attrs in zip(cols, head_attrs, strict=True)
    )
    body = []
    for run in runs:
        final = finals[run.name]
        cells = []
        for key, _, kind, _ in cols:
            text = fmt(final.get(key), kind) + _interval(final, key, kind)
            is_best = is_number(final.get(key)) and final[key] == best.get(key)
            cells.append(f'<td class="{"best" if is_best else ""}">{text}</td>')
        rnd = html.escape(str(final.get("round", "–")))
        body.append(f"<tr><th>{html.escape(run.name)}</th><td>{rnd}</td>{''.join(cells)}</tr>")
    return (
        f'<table class="results" id="{table_id}"><thead><tr><th>Run</th><th>Round</th>{head}'
        f"</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def render_table(runs: list[RunData]) -> str:
    """The paper-style table: each run's final round (with its seed interval when it has one)."""
    return _columns_table(runs, list(TABLE), "final-table", [""] * len(TABLE))


def render_group_table(runs: list[RunData]) -> str:
    """The final round per benchmark (official EM / F1 beside published numbers) and per tier."""
    benchmarks, tiers = group_labels(runs)
    cols, attrs = [], []
    for b in benchmarks:
        for key, head, kind, higher in GROUP_COLUMNS:
            cols.append((f"eval/{b}/{key}", f"{b} {head}", kind, higher))
            attrs.append(f' data-benchmark="{html.escape(b)}"')
    for t in tiers:
        cols.append((f"eval/{t}/accuracy", f"tier {t} Acc. (%)", "pct", True))
        attrs.append(f' data-tier="{html.escape(t)}"')
    if not cols:
        return "<p>One benchmark and no tiers: nothing to split.</p>"
    return _columns_table(runs, cols, "group-table", attrs)


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
