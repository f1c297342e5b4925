"""A whole prompt file across processes (fastalign.distributed, ``align --out``): sharding, input order,
results identical to a single-process run, kill-and-resume, truncated/corrupt lines, bad input, the
torchrun-safe spellings of --n, and models whose head sits on another device than their embeddings.

The multi-process tests start real jobs with ``python -m torch.distributed.run`` (2 gloo processes on
CPU) on the tiny model of the suite saved to disk."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import _tiny
from fastalign import cli, distributed, engine
import fastalign.cli.align, fastalign.cli.bench, fastalign.cli.info  # noqa: E401,F401 (cli.align, ... below)
from fastalign.scoring import models
from fastalign.methods.aisp import aisp_generate
from fastalign.methods.bon import bon_generate
from fastalign.methods.sea import sea_generate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"seconds"}  # fields that differ between runs of the same command
LINES = ['{"prompt": "w1 w2 w3"}', '"w4"', "", '{"prompt": "w5 w6", "target": "w9 w10"}',
         '{"prompt": "w7 w8 w9", "target": "w9 w10"}', '{"prompt": "w11", "target": "w9 w10"}',
         '{"prompt": "w12 w13"}', '{"prompt": "w14 w15 w16", "id": "kept"}', '{"prompt": "w17"}']
PROMPTS = [json.loads(x)["prompt"] if x.startswith("{") else json.loads(x) for x in LINES if x]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    _tiny.model("llama").save_pretrained(path)
    _tiny.tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "in.jsonl"
    path.write_text("\n".join(LINES) + "\n")
    return path


def align_args(prompts_file, tiny_dir, *extra):
    return ["align", "--prompts-file", str(prompts_file), "--model", str(tiny_dir), "--rollouts", "2",
            "--iterations", "2", "--max-new-tokens", "4", "--backend", "torch", "--threads", "1",
            "--batch-size", "2", *extra]


def records(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def without_timing(recs):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in recs]


@pytest.fixture(scope="module")
def reference(prompts_file, tiny_dir, tmp_path_factory):
    """The single-process run of the prompt file: ``align --out`` without torchrun."""
    out = tmp_path_factory.mktemp("ref") / "ref.jsonl"
    rc = cli.main(align_args(prompts_file, tiny_dir, "--out", str(out), "--quiet"))
    assert rc == 0
    return records(out)


def torchrun(*args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw)


# ------------------------------------------------------------------------------ single process
def test_out_file_is_in_input_order_with_every_result_field_and_the_index(reference, tmp_path, capsys, prompts_file,
                                                                         tiny_dir):
    assert [r["index"] for r in reference] == list(range(len(PROMPTS)))
    assert [r["prompt"] for r in reference] == PROMPTS
    assert [r["target"] for r in reference] == [models.DEFAULT_TARGET] * 2 + ["w9 w10"] * 3 + [models.DEFAULT_TARGET] * 3
    # the same records as the JSON lines on stdout (the path without --out), plus the index
    rc = cli.main(align_args(prompts_file, tiny_dir, "--json", "--quiet"))
    out, err = capsys.readouterr()
    assert rc == 0, err
    stdout = [json.loads(line) for line in out.splitlines()]
    assert without_timing(stdout) == without_timing([{k: v for k, v in r.items() if k != "index"} for r in reference])
    assert all(r["reward_calls"] == 4 and r["method"] == "aisp" for r in reference)


def test_batch_size_does_not_change_a_prompts_result(reference, prompts_file, tiny_dir, tmp_path):
    """Per-prompt seeds: batches of 1 give the same tokens as batches of 2 (rewards up to the reward
    model's float rounding over differently padded batches)."""
    out = tmp_path / "b1.jsonl"
    assert cli.main(align_args(prompts_file, tiny_dir, "--out", str(out), "--quiet", "--batch-size", "1")) == 0
    alone = records(out)
    assert [r["response_ids"] for r in alone] == [r["response_ids"] for r in reference]
    assert [r["response"] for r in alone] == [r["response"] for r in reference]
    assert [r["reward"] for r in alone] == pytest.approx([r["reward"] for r in reference], abs=1e-5)


def test_device_map_auto_on_cpu_gives_the_same_file(reference, prompts_file, tiny_dir, tmp_path):
    out = tmp_path / "auto.jsonl"
    assert cli.main(align_args(prompts_file, tiny_dir, "--out", str(out), "--quiet", "--device-map", "auto")) == 0
    assert without_timing(records(out)) == without_timing(reference)


def test_interrupted_run_resumes_and_redoes_truncated_and_corrupt_lines(reference, prompts_file, tiny_dir, tmp_path,
                                                                        capsys, monkeypatch):
    out = tmp_path / "r.jsonl"
    argv = align_args(prompts_file, tiny_dir, "--out", str(out), "--quiet", "--json")
    real, calls = cli.align._align_batch, []

    def crash_after_two_batches(*a, **k):
        calls.append(a[4])
        if len(calls) > 2:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(cli.align, "_align_batch", crash_after_two_batches)
    assert cli.main(argv) == 1
    monkeypatch.setattr(cli.align, "_align_batch", real)
    capsys.readouterr()
    folder = distributed.parts_dir(out)
    assert not out.exists() and (folder / "manifest.json").is_file()
    part = folder / "part-00000.jsonl"
    lines = part.read_bytes().splitlines(keepends=True)
    assert [json.loads(x)["index"] for x in lines] == [0, 1, 2, 3]  # batches [0, 1] and [2, 3]
    # keep line 1, then a corrupt complete line, then line 2 cut short (a kill in mid-write)
    part.write_bytes(lines[0] + b'{"index": 1, "prompt": "w4", "resp\n' + lines[1][:25])

    # other settings are refused, naming what differs, before any model loads
    rc = cli.main([*argv[:argv.index("--iterations") + 1], "3", *argv[argv.index("--iterations") + 2:]])
    _, err = capsys.readouterr()
    assert rc == 2 and "different run" in err and "iterations" in err and len(err.strip().splitlines()) == 1

    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["resumed"] == 1 and summary["aligned"] == len(PROMPTS) - 1
    assert without_timing(records(out)) == without_timing(reference)
    assert not folder.exists()


def test_bad_lines_are_all_reported_with_their_numbers_before_any_model_loads(tmp_path, capsys, monkeypatch, tiny_dir):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "ok"}\n{not json\n\n{"text": "no prompt"}\n{"prompt": "  "}\n[1, 2]\n'
                 '{"prompt": "ok", "target": ""}\n"fine"\n{"prompt": 3}\n')

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", no_loading)
    monkeypatch.setattr(models, "load_embedding_model", no_loading)
    rc = cli.main(["align", "--prompts-file", str(f), "--out", str(tmp_path / "o.jsonl"), "--model", str(tiny_dir)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert "6 bad lines" in line
    for n, why in [(2, "not JSON"), (4, 'no "prompt"'), (5, 'empty "prompt"'), (6, "expected a JSON object or string, got list"),
                   (7, '"target" is empty'), (9, '"prompt" is not a string')]:
        assert f"line {n}: {why}" in line, (n, line)
    assert "line 1:" not in line and "line 8:" not in line and not (tmp_path / "o.jsonl.parts").exists()


def test_read_prompts_counts_lines_like_an_editor(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_bytes('\ufeff{"prompt": "a\u2028b"}\r\n\r\n"c"\r\n{"prompt": ""}\n'.encode())
    with pytest.raises(distributed.BadPromptsFile) as info:
        distributed.read_prompts(f)
    assert info.value.bad_lines == [(4, 'empty "prompt"')]
    f.write_bytes('\ufeff{"prompt": "a\u2028b"}\r\n\r\n"c"\r\n'.encode())
    assert distributed.read_prompts(f) == [{"prompt": "a\u2028b"}, {"prompt": "c"}]


def test_make_batches_cut_at_the_size_and_at_each_target_change():
    items = [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}, {"prompt": "d", "target": "t"},
             {"prompt": "e", "target": "t"}, {"prompt": "f"}]
    assert distributed.make_batches(items, 2) == [[0, 1], [2], [3, 4], [5]]
    assert distributed.make_batches(items, 5) == [[0, 1, 2], [3, 4], [5]]
    with pytest.raises(ValueError, match="batch_size"):
        distributed.make_batches(items, 0)


def test_rollouts_spellings_and_torchrun_passes_every_align_option():
    parser = cli.build_parser()
    for spelling in (["-n", "3"], ["--rollouts", "3"], ["--n", "3"], ["-n3"]):
        assert parser.parse_args(["align", "hi", *spelling]).n == 3
    from torch.distributed.run import get_args_parser

    align = next(a for a in parser._actions if a.dest == "command").choices["align"]
    options = [o for a in align._actions for o in a.option_strings if o != "--n"]
    assert {"-n", "--rollouts", "--out", "--device-map"} <= set(options)
    for option in options:  # torchrun leaves them to the script (it rejects --n as ambiguous)
        ns = get_args_parser().parse_args(["--nproc-per-node", "2", "-m", "fastalign", "align", option, "1"])
        assert ns.training_script_args == ["align", option, "1"], option


def test_several_processes_need_out(capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    rc = cli.main(["align", "hi"])
    assert rc == 2 and "--out" in capsys.readouterr().err


def test_align_file_python_api_resumes_only_the_missing_batches(tmp_path):
    items = [{"prompt": f"p{i}"} for i in range(7)]
    seen: list[list[str]] = []

    def align_batch(batch):
        seen.append([it["prompt"] for it in batch])
        if len(seen) == 3 and not (tmp_path / "crashed").exists():
            (tmp_path / "crashed").touch()
            raise KeyboardInterrupt
        return [{"prompt": it["prompt"], "method": "echo", "reward": float(len(it["prompt"])), "reward_calls": 2,
                 "extra": {"tensor": torch.tensor([0.5, 1.0])}} for it in batch]

    out = tmp_path / "o.jsonl"
    with pytest.raises(KeyboardInterrupt):
        distributed.align_file(items, out, align_batch, batch_size=2, progress=False)
    summary = distributed.align_file(items, out, align_batch, batch_size=2, progress=False)
    assert seen == [["p0", "p1"], ["p2", "p3"], ["p4", "p5"], ["p4", "p5"], ["p6"]]
    assert [r["index"] for r in records(out)] == list(range(7))
    assert all(r["extra"] == {"tensor": [0.5, 1.0]} for r in records(out))  # tensors become lists
    assert summary["resumed"] == 4 and summary["aligned"] == 3
    assert summary["methods"] == {"echo": {"prompts": 7, "mean_reward": 2.0, "mean_base_reward": None, "reward_calls": 14}}
    with pytest.raises(ValueError, match="expected 1 results .* got 2"):  # one result per prompt
        distributed.align_file(items, tmp_path / "x.jsonl", lambda b: [{}] * (len(b) + 1), batch_size=1,
                               progress=False)


# ------------------------------------------------------------------------------ two processes
SHARD_SCRIPT = """
import json, sys
from fastalign import distributed
items = [{"prompt": f"p{i}", **({"target": "t"} if 3 <= i < 6 else {})} for i in range(11)]
d = distributed.init()
def align_batch(batch):
    return [{"prompt": it["prompt"], "method": "echo", "reward": float(i), "reward_calls": 1, "rank": d.rank,
             "device": str(d.device), "batch": [x["prompt"] for x in batch]} for i, it in enumerate(batch)]
summary = distributed.align_file(items, sys.argv[1], align_batch, batch_size=2, dist=d, progress=d.rank == 0)
distributed.close(d)
if summary is not None:
    print(json.dumps(summary))
"""


def test_torchrun_python_api_shards_every_batch_to_exactly_one_rank(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SHARD_SCRIPT)
    out = tmp_path / "o.jsonl"
    proc = torchrun(str(script), str(out), cwd=tmp_path)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    recs = records(out)
    batches = [[0, 1], [2], [3, 4], [5], [6, 7], [8, 9], [10]]
    assert [r["index"] for r in recs] == list(range(11)) and [r["prompt"] for r in recs] == [f"p{i}" for i in range(11)]
    for b, idx in enumerate(batches):
        for i in idx:
            assert recs[i]["rank"] == b % 2 and recs[i]["batch"] == [f"p{j}" for j in idx]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert [(s["rank"], s["prompts"], s["batches"], s["device"]) for s in summary["ranks"]] == [(0, 7, 4, "cpu"),
                                                                                              (1, 4, 3, "cpu")]
    assert summary["aligned"] == 11 and summary["methods"]["echo"]["reward_calls"] == 11
    assert "11/11" in stderr and "rank 1 (cpu): 4 prompts in 3 batches" in stderr
    assert not distributed.parts_dir(out).exists()


def _complete_lines(folder: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in folder.glob("part-*.jsonl"))


def _kill_tree(pid: int) -> None:
    """SIGKILL torchrun and its workers (they run in sessions of their own)."""
    import psutil

    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def test_torchrun_killed_mid_way_and_restarted_equals_the_single_process_run(reference, prompts_file, tiny_dir,
                                                                             tmp_path):
    out = tmp_path / "k.jsonl"
    folder = distributed.parts_dir(out)
    argv = ["-m", "fastalign", *align_args(prompts_file, tiny_dir, "--out", str(out), "--json")]
    proc = torchrun(*argv)
    deadline = time.monotonic() + 300
    while _complete_lines(folder) == 0:  # until the first result line is on disk
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    _kill_tree(proc.pid)
    proc.communicate(timeout=60)
    done = _complete_lines(folder)
    assert not out.exists() and 0 < done < len(PROMPTS)
    # a kill in mid-write leaves a partial last line: the restart cuts it off and redoes that prompt
    part = next(p for p in sorted(folder.glob("part-*.jsonl")) if p.read_bytes())
    first = part.read_bytes().splitlines(keepends=True)[0]
    with open(part, "ab") as f:
        f.write(first[: len(first) // 2])

    proc = torchrun(*argv)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    result = records(out)
    assert [r["index"] for r in result] == list(range(len(PROMPTS)))
    assert without_timing(result) == without_timing(reference)
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["resumed"] == done and summary["resumed"] + summary["aligned"] == len(PROMPTS)
    assert [s["rank"] for s in summary["ranks"]] == [0, 1]
    assert sum(s["prompts"] for s in summary["ranks"]) == summary["aligned"]
    mean = sum(r["reward"] for r in reference) / len(reference)
    assert summary["methods"]["aisp"]["mean_reward"] == pytest.approx(mean, rel=1e-12)
    assert summary["methods"]["aisp"]["reward_calls"] == 4 * len(PROMPTS)
    assert f"{len(PROMPTS)}/{len(PROMPTS)}" in stderr and "prompts/s" in stderr
    assert not folder.exists()


# ------------------------------------------------------------------ head on another device
def _methods():
    return [(aisp_generate, dict(n=3, iterations=2, max_new_tokens=5, backend="torch")),
            (bon_generate, dict(n=4, max_new_tokens=5)),
            (sea_generate, dict(chains=2, steps=3, max_new_tokens=5, backend="torch"))]


def _assert_same_results(model, split, exact: bool):
    tok, reward = _tiny.tokenizer(), _tiny.SoftCountReward("w7")
    for generate, kwargs in _methods():
        a = generate(model, tok, _tiny.PROMPTS[:3], reward, progress=False, **kwargs)
        b = generate(split, tok, _tiny.PROMPTS[:3], reward, progress=False, **kwargs)
        assert [r.response_ids for r in b] == [r.response_ids for r in a], generate.__name__
        assert [r.reward for r in b] == [r.reward for r in a], generate.__name__
        tol = 0 if exact else 1e-4
        for ra, rb in zip(a, b):
            assert rb.trace_mean == pytest.approx(ra.trace_mean, abs=tol)
            for key in ("energy", "fluency"):
                if key in ra.extra:
                    assert rb.extra[key] == pytest.approx(ra.extra[key], rel=1e-4 if not exact else 0)


def test_offloaded_head_runs_on_its_execution_device(tmp_path):
    """accelerate offloads the head (weight on 'meta', loaded for each forward, run on the CPU): AISP's
    control and noise go to the head's execution device, and every method gives the same results."""
    from accelerate import dispatch_model

    model = _tiny.model("llama")
    split = dispatch_model(copy.deepcopy(model), device_map={"model": "cpu", "lm_head": "disk"},
                           offload_dir=str(tmp_path))
    assert split.lm_head.weight.is_meta
    assert engine.head_device(split) == torch.device("cpu") and engine.input_device(split) == torch.device("cpu")
    _assert_same_results(model, split, exact=True)


def test_sea_refuses_an_offloaded_input_embedding(tmp_path):
    from accelerate import dispatch_model

    split = dispatch_model(copy.deepcopy(_tiny.model("llama")),
                           device_map={"model.embed_tokens": "disk", "model.layers": "cpu", "model.norm": "cpu",
                                       "model.rotary_emb": "cpu", "lm_head": "cpu"}, offload_dir=str(tmp_path))
    with pytest.raises(ValueError, match="offloaded"):
        sea_generate(split, _tiny.tokenizer(), "w1", _tiny.SoftCountReward(), steps=1, max_new_tokens=3,
                     backend="torch", progress=False)


@pytest.mark.gpu
def test_head_on_the_gpu_embeddings_on_the_cpu():
    """The head runs on cuda:0, the embeddings and layers on the CPU (accelerate hooks move the hidden
    state across): AISP's head hook perturbs on the GPU, SEA's soft tokens are embedded on the CPU and
    its fluency logits come back from the GPU; tokens equal the all-CPU model's."""
    from accelerate import dispatch_model

    model = _tiny.model("llama")
    split = dispatch_model(copy.deepcopy(model), device_map={"model": "cpu", "lm_head": 0}, main_device="cpu")
    assert split.lm_head.weight.device == torch.device("cuda", 0)
    assert engine.head_device(split) == torch.device("cuda", 0) and engine.input_device(split) == torch.device("cpu")
    _assert_same_results(model, split, exact=False)


def test_a_second_job_on_the_same_output_is_refused(tmp_path):
    out = tmp_path / "o.jsonl"
    folder = distributed.parts_dir(out)
    folder.mkdir()
    held = distributed._lock(folder)  # what a running job's rank 0 holds
    if held is None:
        pytest.skip("no fcntl here")
    try:
        with pytest.raises(ValueError, match="another run is writing"):
            distributed.align_file([{"prompt": "p"}], out, lambda b: [{}] * len(b), progress=False)
    finally:
        held.close()
    distributed.align_file([{"prompt": "p"}], out, lambda b: [{"prompt": "p"}], progress=False)
    assert records(out) == [{"index": 0, "prompt": "p"}]
