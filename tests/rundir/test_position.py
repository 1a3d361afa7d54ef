"""Where a run stands (`rundir.position`): the first stage not done, the last when finished, and
the words a stopped run's line uses for it."""

from __future__ import annotations

import json

from fakes import Fakes, run, tiny_config

from mbt_online.rundir.position import position, where_stopped


def test_position_and_where_a_run_stopped(tmp_path):
    cfg = tiny_config(tmp_path / "runs")
    run_dir = tmp_path / "runs" / "flow"
    assert position(run_dir) == {"round": None, "stage": None, "finished": False}
    assert where_stopped(run_dir) == "before the run started (nothing was written)"
    run(cfg, Fakes(cfg))
    assert position(run_dir) == {"round": 2, "stage": "eval", "finished": True}
    assert where_stopped(run_dir) == f"after {run_dir} finished"
    state = json.loads((run_dir / "state.json").read_text())
    cut = state["completed"].index("round-1/teach")
    state["completed"], state["finished"] = state["completed"][:cut], False
    (run_dir / "state.json").write_text(json.dumps(state))
    assert position(run_dir) == {"round": 1, "stage": "teach", "finished": False}
    assert where_stopped(run_dir).startswith("in round 1, stage teach (not committed")
