"""Sweeps: grid expansion, naming, precedence, skip/resume of a local sweep, the SLURM script."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import sweeps
import yaml
from paths import PAPER_SWEEP
from sweeps import PAPER_NAMES, write_sweep

from mbt_online.config import ConfigError
from mbt_online.sweeps.local import run_status, run_sweep
from mbt_online.sweeps.slurm import SUBMIT_SCRIPT
from mbt_online.sweeps.spec import expand, load_sweep, member_config, short_value

PAPER = PAPER_SWEEP


fake_loop = sweeps.fake_loop  # the stand-in for mbt_online.loop (a fixture)


def overrides_of(member) -> dict[str, object]:
    """The effective value per key (later overrides win), parsed the way config.py parses them."""
    out = {}
    for item in member.overrides:
        key, raw = item.split("=", 1)
        out[key] = yaml.safe_load(raw)
    return out


# ---------------------------------------------------------------------------------------------
# naming and expansion


@pytest.mark.parametrize(
    ("key", "value", "label"),
    [
        ("train.dpo.enabled", True, "dpo"),
        ("train.dpo.enabled", False, "no-dpo"),
        ("student.use_metacognitive_prompt", True, "metacognitive-prompt"),
        ("teacher.mode", "mbt-r", "mbt-r"),
        ("student.model", "Qwen/Qwen3-0.6B", "Qwen3-0.6B"),
        ("student.model", "/models/my model/", "my-model"),
        ("loop.rounds", 2, "rounds2"),
        ("reward.weights.degenerate", -0.5, "degenerate-0.5"),
        ("train.lora.target_modules", ["q_proj", "v_proj"], "q_proj+v_proj"),
        ("data.train.limit", None, "no-limit"),
    ],
)
def test_short_values_are_readable_and_filesystem_safe(key, value, label):
    assert short_value(key, value) == label


def test_grid_is_a_cartesian_product_in_file_order(tmp_path):
    path = write_sweep(
        tmp_path,
        {
            "name": "grid",
            "grid": {
                "teacher.mode": ["mbt-r", "mbt-s", "none"],
                "train.dpo.enabled": [False, True],
            },
        },
    )
    members = expand(path)
    assert [m.name for m in members] == [
        "mbt-r_no-dpo",
        "mbt-r_dpo",
        "mbt-s_no-dpo",
        "mbt-s_dpo",
        "none_no-dpo",
        "none_dpo",
    ]
    last = overrides_of(members[-1])
    assert last["teacher.mode"] == "none" and last["train.dpo.enabled"] is True
    assert last["run.name"] == "none_dpo"
    assert last["tracking.group"] == "grid"
    assert last["tracking.tags"] == ["grid", "none", "dpo"]
    # same file, same names: naming is stable across calls
    assert [m.name for m in expand(path)] == [m.name for m in members]


def test_grid_labels_members_and_own_grids(tmp_path):
    path = write_sweep(
        tmp_path,
        {
            "tags": ["t"],
            "grid": {"student.model": {"small": "a/one", "large": "a/two"}},
            "members": [
                {"name": "ref", "overrides": ["loop.rounds=0"], "grid": {}, "tags": ["baseline"]},
                {"overrides": {"teacher.mode": "mbt-s"}},
            ],
        },
    )
    members = expand(path)
    assert [m.name for m in members] == ["ref", "mbt-s_small", "mbt-s_large"]
    assert overrides_of(members[2])["student.model"] == "a/two"
    assert overrides_of(members[0])["tracking.tags"] == ["t", "sweep", "baseline", "ref"]
    assert "student.model" not in overrides_of(members[0])


def test_precedence_extras_beat_shared_but_not_member_pins(tmp_path, caplog):
    path = write_sweep(
        tmp_path,
        {
            "overrides": {"loop.rounds": 2, "rollout.samples": 2},
            "members": [{"name": "pinned", "overrides": {"loop.rounds": 0}}, {"name": "free"}],
        },
    )
    with caplog.at_level("INFO", logger="mbt_online"):
        pinned, free = expand(path, ["loop.rounds=1"])
    assert "member pinned keeps loop.rounds=0 over loop.rounds=1" in caplog.text
    assert overrides_of(pinned)["loop.rounds"] == 0
    assert overrides_of(free)["loop.rounds"] == 1
    assert overrides_of(free)["rollout.samples"] == 2
    assert [o for o in pinned.overrides if o.startswith("loop.rounds=")] == ["loop.rounds=0"]
    cfg = member_config(load_sweep(path), free, tmp_path / "sw")
    assert (cfg.loop.rounds, cfg.rollout.samples, cfg.run.name) == (1, 2, "free")
    assert cfg.run.runs_dir == str(tmp_path / "sw")


def test_string_values_keep_their_type(tmp_path):
    # YAML would read a bare `on` as a boolean; a sweep value must reach the config as written
    path = write_sweep(tmp_path, {"grid": {"run.seed": [1, 2], "tracking.project": ["on", "1e-4"]}})
    cfg = member_config(load_sweep(path), expand(path)[1], tmp_path)
    assert cfg.tracking.project == "1e-4" and cfg.run.seed == 1


@pytest.mark.parametrize(
    ("body", "extras", "message"),
    [
        ({"grid": {"teacher.mode": ["mbt-r"]}}, ["teacher.mode=mbt-s"], "varies teacher.mode"),
        ({"overrides": ["run.name=x"]}, [], "run.name is set by the sweep"),
        ({}, ["tracking.tags=[a]"], "tracking.tags is set by the sweep"),
        ({"members": [{"name": "a"}, {"name": "a"}]}, [], "both named 'a'"),
        ({"members": [{"name": "a/b"}]}, [], "not a safe directory name"),
        ({"grid": {"loop.rounds": []}}, [], "non-empty list"),
        ({"gird": {}}, [], "unknown sweep keys ['gird']"),
        ({"members": [{"name": "a", "overides": []}]}, [], "unknown keys ['overides']"),
    ],
)
def test_bad_sweeps_fail_with_the_key_named(tmp_path, body, extras, message):
    with pytest.raises(ConfigError, match=None) as err:
        expand(write_sweep(tmp_path, body), extras)
    assert message in str(err.value)


def test_paper_baselines_expand_to_the_papers_rows():
    if not (PAPER.parent.parent / "quickstart.yaml").exists():
        pytest.skip("configs/quickstart.yaml (the sweep's base) is not written yet")
    sweep = load_sweep(PAPER)
    members = expand(sweep)
    assert [m.name for m in members] == PAPER_NAMES
    cfgs = {m.name: member_config(sweep, m, Path("runs/x")) for m in members}
    assert cfgs["base"].loop.rounds == 0 and not cfgs["base"].student.use_metacognitive_prompt
    assert cfgs["metacog"].loop.rounds == 0 and cfgs["metacog"].student.use_metacognitive_prompt
    assert cfgs["self-distill_dpo"].teacher.mode == "none"
    assert cfgs["self-distill_dpo"].train.dpo.chosen == "student_best"
    assert cfgs["mbt-r_dpo"].teacher.mode == "mbt-r" and cfgs["mbt-r_dpo"].train.dpo.enabled
    assert not cfgs["mbt-s_no-dpo"].train.dpo.enabled and cfgs["mbt-s_no-dpo"].loop.rounds >= 1
    assert cfgs["self-distill-paper_no-dpo"].train.sft.select == "correct"
    modes = {
        n: cfgs[f"{n}_no-dpo"].teacher.mode for n in ("teacher-distill", "distill-r", "direct-r")
    }
    assert modes == {"teacher-distill": "distill", "distill-r": "distill-r", "direct-r": "direct-r"}
    assert {c.train.sft.max_rows_per_question for c in cfgs.values()} == {2}  # one budget
    assert {c.tracking.group for c in cfgs.values()} == {"paper-baselines"}
    # a smoke run shortens the trained members only
    short = {m.name: m for m in expand(sweep, ["loop.rounds=1"])}
    assert overrides_of(short["base"])["loop.rounds"] == 0
    assert overrides_of(short["mbt-r_dpo"])["loop.rounds"] == 1


# ---------------------------------------------------------------------------------------------
# running locally: skip finished members, resume the interrupted one


def three_member_sweep(tmp_path: Path) -> Path:
    return write_sweep(
        tmp_path,
        {"name": "s", "grid": {"teacher.mode": ["mbt-r", "mbt-s", "none"]}},
        base={"loop": {"rounds": 2}, "tracking": {"wandb_mode": "disabled"}},
    )


def test_interrupted_sweep_resumes_without_redoing_finished_members(tmp_path, fake_loop):
    path, out = three_member_sweep(tmp_path), tmp_path / "out"
    first = fake_loop(fail_member="mbt-s")
    with pytest.raises(KeyboardInterrupt):
        run_sweep(path, out)
    assert first.calls == [("mbt-r", False), ("mbt-s", False)]
    assert [run_status(out / n) for n in ("mbt-r", "mbt-s", "none")] == [
        "finished",
        "unfinished",
        "new",
    ]

    second = fake_loop()
    assert run_sweep(path, out) == out.resolve()
    assert second.calls == [("mbt-s", True), ("none", False)]
    state = json.loads((out / "mbt-s" / "state.json").read_text())
    assert state["completed"] == ["round-0/eval", "round-1/eval", "round-2/eval"]  # nothing twice
    manifest = json.loads((out / "sweep.json").read_text())
    assert [m["name"] for m in manifest["members"]] == ["mbt-r", "mbt-s", "none"]

    third = fake_loop()
    run_sweep(path, out)
    assert third.calls == []


def test_rerun_with_other_settings_refuses_to_skip(tmp_path, fake_loop):
    path, out = three_member_sweep(tmp_path), tmp_path / "out"
    fake_loop()
    run_sweep(path, out)
    with pytest.raises(ConfigError, match=r"loop.rounds: 2 there, 1 now"):
        run_sweep(path, out, ["loop.rounds=1"])


def test_every_member_is_validated_before_the_first_runs(tmp_path, fake_loop):
    path = write_sweep(
        tmp_path, {"members": [{"name": "ok"}, {"name": "typo", "overrides": ["loop.roundz=1"]}]}
    )
    fake = fake_loop()
    with pytest.raises(ConfigError, match=r"(?s)member .typo.*loop.roundz: unknown key"):
        run_sweep(path, tmp_path / "out")
    assert fake.calls == []


# ---------------------------------------------------------------------------------------------
# SLURM


def test_slurm_script_runs_each_member_with_mbt_online_sweep_member(tmp_path, fake_loop):
    path = write_sweep(
        tmp_path,
        {
            "name": "cl",
            "grid": {"teacher.mode": ["mbt-r", "mbt-s"], "train.dpo.enabled": [False, True]},
            "slurm": {
                "sbatch": {"partition": "gpu", "gres": "gpu:1"},
                "max_parallel": 2,
                "setup": ["export SETUP_RAN=1"],
            },
        },
    )
    out = tmp_path / "out"
    fake = fake_loop()
    submit = run_sweep(path, out, ["rollout.samples=2"], emit="slurm")
    assert fake.calls == []  # emitting runs nothing
    assert submit == out.resolve() / SUBMIT_SCRIPT
    script = out.resolve() / "sweep-0.sbatch"  # every member asks for the same resources
    assert sorted(p.name for p in out.glob("*.sbatch")) == ["sweep-0.sbatch"]
    text = script.read_text()
    assert "#SBATCH --array=0-3%2" in text
    assert "#SBATCH --job-name=mbt-cl" in text
    assert "#SBATCH --partition=gpu" in text and "#SBATCH --gres=gpu:1" in text
    assert f"#SBATCH --output={out.resolve()}/slurm/%x-%A_%a.out" in text
    assert "export SETUP_RAN=1" in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0

    # run the script as SLURM would, with a stand-in `mbt-online` that prints what it was given
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mbt-online").write_text('#!/bin/bash\nprintf "%s\\n" "$SETUP_RAN" "$@"\n')
    (bin_dir / "mbt-online").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_ARRAY_TASK_ID": "3",
        "SLURM_JOB_ID": "12",
    }
    res = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True)
    args = res.stdout.splitlines()[1:]  # after the script's own "member ... on <host>" line
    run_dir = str(out.resolve() / "mbt-s_dpo")
    assert args[:5] == ["1", "sweep-member", run_dir, "--config", str(tmp_path / "base.yaml")]
    assert 'teacher.mode="mbt-s"' in args and "train.dpo.enabled=true" in args
    assert "rollout.samples=2" in args and 'run.name="mbt-s_dpo"' in args
    assert f'run.runs_dir="{out.resolve()}"' in args
    # a CPU member: no rendezvous port, no multi-node runtime
    assert not any(a.startswith("runtime.") for a in args)
