"""The budget study (bench/bench_study.py): nested Best-of-N rows equal a direct Best-of-k, AISP rows
equal the run's best-so-far trace, rows over prompts are mean ± standard error; CLI routing."""
import json
import math

import pytest
import torch

import _tiny
from fastalign import cli
import fastalign.cli.align, fastalign.cli.bench, fastalign.cli.info  # noqa: E401,F401 (cli.align, ... below)
from fastalign.methods.aisp import aisp_generate
from fastalign.methods.bon import bon_generate

study = cli.bench._load_bench_module("bench_study")
KW = dict(max_new_tokens=4, seed=0, progress=False)


def reward(prompts, responses):
    """A reward with few ties: a word-index score plus a small length term."""
    return torch.tensor([sum(int(w[1:]) % 7 for w in r.split() if w[1:].isdigit()) / 10 + 0.001 * len(r)
                         for r in responses])


@pytest.fixture(scope="module")
def tiny():
    return _tiny.model("llama"), _tiny.tokenizer()


@pytest.fixture(scope="module")
def studied(tiny):
    model, tok = tiny
    rows, responses = study.run_study(model, tok, reward, _tiny.PROMPTS[:2], budgets=[4, 2],
                                      aisp_settings=[("aisp", dict(n=2, lam=0.05, backend="torch"))],
                                      max_new_tokens=4, progress=False)
    return {(r["setting"], r["budget"]): r for r in rows}, responses


def _mean_se(xs):
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


@pytest.mark.parametrize("label, variant", study.BON_VARIANTS)
def test_nested_best_of_n_equals_a_direct_best_of_k(tiny, studied, label, variant):
    model, tok = tiny
    rows, responses = studied
    for k in (2, 4):
        direct = bon_generate(model, tok, _tiny.PROMPTS[:2], reward, n=k, batch_size=4, **variant, **KW)
        mean, se = _mean_se([r.reward for r in direct])
        row = rows[(label, k)]
        assert row["reward_mean"] == pytest.approx(mean, abs=1e-9) and row["reward_se"] == pytest.approx(se)
        assert row["reward_calls"] == k and row["prompts"] == 2 and row["seconds_per_prompt"] > 0
        (entry,) = [e for e in responses if e["setting"] == label and e["budget"] == k]
        assert entry["responses"] == [r.response for r in direct]


def test_aisp_budget_rows_equal_the_trace(tiny, studied):
    model, tok = tiny
    rows, _ = studied
    res = aisp_generate(model, tok, _tiny.PROMPTS[:2], reward, n=2, iterations=2, lam=0.05, backend="torch", **KW)
    for k in (1, 2):
        row = rows[("aisp", 2 * k)]
        assert row["iterations"] == k and row["n"] == 2 and row["reward_calls"] == 2 * k
        assert row["reward_mean"] == pytest.approx(sum(max(r.trace_max[:k]) for r in res) / 2, abs=1e-9)
    assert rows[("aisp", 4)]["reward_mean"] == pytest.approx(sum(r.reward for r in res) / 2, abs=1e-9)


def test_settings_with_extra_candidates_run_once_per_budget(tiny):
    model, tok = tiny
    rows, _ = study.run_study(model, tok, reward, _tiny.PROMPTS[:2], budgets=[2, 4], bon_variants=(),
                              aisp_settings=[("mean", dict(n=2, lam=0.05, mean_rollout=True, backend="torch"))],
                              max_new_tokens=4, progress=False)
    by = {r["budget"]: r for r in rows}
    res = aisp_generate(model, tok, _tiny.PROMPTS[:2], reward, n=2, iterations=2, lam=0.05, mean_rollout=True,
                        backend="torch", **KW)
    assert by[4]["reward_calls"] == 5 and by[2]["reward_calls"] == 3
    assert by[4]["reward_mean"] == pytest.approx(sum(r.reward for r in res) / 2, abs=1e-9)


def test_metrics_of_results_are_averaged_into_rows():
    class R:
        def __init__(self, m):
            self.metrics = m
    assert study._metrics_means([R({"perplexity": 2.0, "name": "x"}), R({"perplexity": 4.0}), object()]) == {
        "metric_perplexity": 3.0}


def test_bench_budgets_routing_errors(capsys):
    for argv, needle in ((["bench", "--budgets", "16"], "--e2e"), (["bench", "--e2e", "--budgets", "0,4"], "--budgets"),
                         (["bench", "--e2e", "--budgets", "8", "--prompts-file", "nope.jsonl"], "--prompts-file")):
        rc = cli.main(argv)
        _, err = capsys.readouterr()
        assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_cli_budget_study_plumbing(capsys, monkeypatch, tmp_path):
    """`fastalign bench --e2e --budgets ... --quick --prompts-file F --csv F --json` reaches run_study with
    the quick size and the file's prompts, and writes its rows (run_study replaced by a stub)."""
    seen = {}

    def fake(**kw):
        seen.update(kw)
        rows = [{"method": "bon", "setting": "bon t=1", "budget": b, "reward_calls": b, "reward_mean": 0.5,
                 "reward_se": 0.1, "prompts": 2, "seconds_per_prompt": 1.0} for b in kw["budgets"]]
        return rows, []

    monkeypatch.setattr(study, "run_study", fake)
    load = cli.bench._load_bench_module
    monkeypatch.setattr(cli.bench, "_load_bench_module", lambda name: study if name == "bench_study" else load(name))
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    rc = cli.main(["bench", "--e2e", "--budgets", "64,16,32", "--quick", "--prompts-file", str(f),
                   "--csv", str(tmp_path / "r.csv"), "--json", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert seen["budgets"] == [16, 32] and seen["prompts"] == ["a", "b"] and seen["max_new_tokens"] == 24
    assert [r["budget"] for r in json.loads(out)] == [16, 32]
    assert (tmp_path / "r.csv").read_text().splitlines()[0].startswith("method,setting,budget")
