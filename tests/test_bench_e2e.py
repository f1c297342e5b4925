"""The end-to-end benchmark's measuring parts (bench/bench_e2e.py) on a tiny random model: the
forward timer splits prefill from decode and counts the decoded rows, the anchor and the compaction
run, and --prompt-tokens lengthens the prompts. (The benchmark itself measures; nothing here times.)"""
import importlib.util
import pathlib

import pytest
import torch

from fastalign.methods import _common
import _archs
import _tiny

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def e2e():
    spec = importlib.util.spec_from_file_location("bench_e2e_under_test", ROOT / "bench" / "bench_e2e.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _encoded(model, tok):
    return _common.EncodedPrompts.from_texts(model, tok, _tiny.PROMPTS[:2], chat_template=None, device=torch.device("cpu"))


def test_forward_timer_splits_prefill_from_decode(e2e):
    model, tok = _archs.model("llama"), _tiny.tokenizer()
    encoded = _encoded(model, tok)
    with torch.no_grad(), e2e.time_forward(model) as fwd:
        encoded.decode(model, repeats=3, max_new_tokens=5, eos_check_every=100)
    assert (fwd.prefill_calls, fwd.decode_calls, fwd.decode_rows) == (1, 5, 2 * 3 * 5)
    assert fwd.prefill_s > 0 and fwd.decode_s > 0


def test_timed_method_parts_add_up(e2e):
    model, tok = _archs.model("llama"), _tiny.tokenizer()
    reward = e2e._TimedReward(lambda prompts, responses: torch.tensor([float(len(r)) for r in responses]))
    with e2e.timed_method(model, reward, ["aisp_perturb"]) as row, torch.no_grad():
        _encoded(model, tok).decode(model, repeats=2, max_new_tokens=3, eos_check_every=100)
        reward(["a"], ["bb"])
    parts = row["prefill_s"] + row["decode_forward_s"] + row["fused_ops_s"] + row["reward_s"] + row["other_s"]
    assert parts == pytest.approx(row["seconds"])
    assert row["decode_rows"] == 2 * 2 * 3 and row["fused_op_calls"] == 0 and row["reward_s"] > 0


def test_anchor_and_compaction_run_the_same_rows(e2e):
    model, tok = _archs.model("llama"), _tiny.tokenizer()
    prompts = _tiny.PROMPTS[:2]
    anchor = e2e.anchor_generate(model, tok, prompts, rows_per_prompt=3, max_new_tokens=4)
    assert anchor["rows"] == 6
    for side in ("generate", "fastalign"):
        assert anchor[side]["decode_tokens_per_s"] > 0
    compact = e2e.compaction(model, tok, prompts, rows_per_prompt=3, max_new_tokens=6, seed=1, repeats=1)
    assert compact["same_tokens"] and compact["speedup"] > 0


def test_prompt_tokens_lengthen_every_prompt(e2e):
    tok = _tiny.tokenizer()
    prompts = e2e.make_prompts(3, 40, tok)
    assert [p[-len(q):] for p, q in zip(prompts, e2e.PROMPTS)] == e2e.PROMPTS[:3]
    assert min(len(tok(p)["input_ids"]) for p in prompts) >= 40
    assert e2e.make_prompts(2, 0) == e2e.PROMPTS[:2]
    with pytest.raises(ValueError, match="at most"):
        e2e.make_prompts(len(e2e.PROMPTS) + 1, 0)
