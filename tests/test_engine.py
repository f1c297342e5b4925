"""The decode engine (fastalign/engine/): one prefill per prompt forked to every rollout, decoding
exactly like ``model.generate``, the lean loop's options (amortised EOS checks, compaction), eval mode,
and the rejection of models it cannot decode."""
from __future__ import annotations

import functools
import warnings

import pytest
import torch

import _archs
import _tiny
from fastalign.engine import encoding
from fastalign import engine
import fastalign as fa
from fastalign.methods.aisp import aisp_generate
from fastalign.methods.bon import bon_generate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = 8


def _prompts(tok=None):
    return encoding.encode_prompts(tok or _tiny.tokenizer(), _tiny.PROMPTS)


def _generate(model, ids, mask, max_new_tokens=T):
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=1, pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    return out.sequences[:, ids.shape[1]:], torch.stack(out.logits, dim=1).float()


def _assert_same_rollouts(a: engine.Rollouts, b: engine.Rollouts):
    assert torch.equal(a.lengths, b.lengths)
    for r in range(a.tokens.shape[0]):
        n = int(a.lengths[r])
        assert a.tokens[r, :n].tolist() == b.tokens[r, :n].tolist(), r


@pytest.mark.parametrize("arch", _tiny.ARCHES)
def test_forked_prompt_cache_decodes_like_generate_on_repeated_prompts(arch):
    """Prefill B prompts once, fork to B*n rows: the tokens equal model.generate on the B*n repeated
    prompts and the logits agree to rounding (the last prompt token runs as a decode step here)."""
    model = _tiny.model(arch)
    ids, mask = _prompts()
    n = 3
    pc = engine.prefill(model, ids, mask)
    roll = engine.decode(model, ids, mask, max_new_tokens=T, eos_ids=[1], pad_id=0, repeats=n, prompt_cache=pc,
                         return_logits=True)
    ref_tokens, ref_logits = _generate(model, ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0))
    for r in range(roll.tokens.shape[0]):
        k = int(roll.lengths[r])
        assert roll.tokens[r, :k].tolist() == ref_tokens[r, :k].tolist(), r
        torch.testing.assert_close(roll.logits[r, :k], ref_logits[r, :k], rtol=1e-4, atol=1e-4)


def test_the_prompt_cache_is_not_modified_by_decoding():
    model = _tiny.model("llama")
    ids, mask = _prompts()
    pc = engine.prefill(model, ids, mask)
    before = [t.clone() for layer in pc.cache.layers for t in (layer.keys, layer.values)]
    first = engine.decode(model, ids, mask, max_new_tokens=T, eos_ids=[1], pad_id=0, repeats=2, prompt_cache=pc)
    after = [t for layer in pc.cache.layers for t in (layer.keys, layer.values)]
    assert all(torch.equal(x, y) for x, y in zip(before, after))
    again = engine.decode(model, ids, mask, max_new_tokens=T, eos_ids=[1], pad_id=0, repeats=2, prompt_cache=pc)
    _assert_same_rollouts(first, again)


def test_forward_kwargs_passes_only_what_the_forward_takes_under_its_own_names():
    ids, mask, pos = torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), torch.zeros(2, 3)
    cache = object()
    full = engine.ModelInterface(cache_kwarg="past_key_values", position_ids=True, logits_to_keep=True)
    kw = engine.forward_kwargs(full, input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache,
                               use_cache=True, logits_to_keep=1)
    assert set(kw) == {"input_ids", "attention_mask", "position_ids", "past_key_values", "use_cache",
                       "logits_to_keep"}
    assert kw["past_key_values"] is cache and kw["input_ids"] is ids and kw["logits_to_keep"] == 1
    bare = engine.ModelInterface(cache_kwarg="cache_params", position_ids=False, logits_to_keep=False)
    kw = engine.forward_kwargs(bare, inputs_embeds=pos, position_ids=pos, cache=cache, logits_to_keep=1)
    assert kw == {"inputs_embeds": pos, "cache_params": cache}  # None and unsupported arguments left out
    assert engine.forward_kwargs(bare, input_ids=ids, use_cache=False) == {"input_ids": ids, "use_cache": False}
    with pytest.raises(ValueError, match="exactly one"):
        engine.forward_kwargs(full, input_ids=ids, inputs_embeds=pos)
    with pytest.raises(ValueError, match="exactly one"):
        engine.forward_kwargs(full)


def test_fork_cache_to_chosen_rows_copies_those_rows_and_leaves_the_prompt_cache_alone():
    model = _tiny.model("llama")
    ids, mask = _prompts()
    pc = engine.prefill(model, ids, mask)
    index = torch.tensor([1, 0, 1, 1])
    forked = engine.fork_cache(pc.cache, index)
    for src, dst in zip(pc.cache.layers, forked.layers):
        assert src.keys.shape[0] == ids.shape[0] and dst.keys.shape[0] == 4
        assert torch.equal(dst.keys, src.keys[index]) and torch.equal(dst.values, src.values[index])
    by_count = engine.fork_cache(pc.cache, ids.shape[0], 2)  # the int form: row b * 2 + i is row b
    repeated = engine.fork_cache(pc.cache, torch.arange(ids.shape[0]).repeat_interleave(2))
    for a, b in zip(by_count.layers, repeated.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    with pytest.raises(ValueError, match="no repeats"):
        engine.fork_cache(pc.cache, index, 2)
    assert engine.fork_cache(None, index) is None


def test_single_token_prompts_need_no_prefill():
    model = _tiny.model("llama")
    ids, mask = encoding.encode_prompts(_tiny.tokenizer(), ["w4", "w9"])
    assert ids.shape[1] == 1
    pc = engine.prefill(model, ids, mask)
    assert pc.cache is None
    roll = engine.decode(model, ids, mask, max_new_tokens=T, eos_ids=[1], pad_id=0, repeats=2, prompt_cache=pc)
    ref, _ = _generate(model, ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0))
    assert roll.tokens.tolist() == ref[:, :roll.tokens.shape[1]].tolist()


def _ending_rollouts(**kwargs):
    """4 sampled rollouts per prompt (hot temperature, fastalign stream) with five EOS ids, so they end
    at many different steps."""
    from fastalign.engine import sampling

    model = _tiny.model("llama", seed=3)
    ids, mask = _prompts()
    seeds = torch.arange(ids.shape[0] * 4)

    def choose(logits, step, active):
        return sampling.sample_tokens(logits, seeds, torch.full_like(seeds, step), temperature=3.0)

    return engine.decode(model, ids, mask, max_new_tokens=24, eos_ids=[1, 5, 9, 13, 17], pad_id=0, repeats=4,
                         choose=choose, return_logits=True, **kwargs)


def test_compacting_ended_rollouts_changes_nothing():
    plain = _ending_rollouts()
    ends = plain.lengths[plain.finished]
    assert plain.finished.any() and not plain.finished.all() and len(set(ends.tolist())) > 2, \
        "the fixture must end rollouts at several different steps"
    for compact_below in (1.0, 0.75):
        compacted = _ending_rollouts(compact_below=compact_below)
        _assert_same_rollouts(plain, compacted)
        assert torch.equal(plain.finished, compacted.finished)
        for r in range(plain.tokens.shape[0]):  # logits agree while a rollout runs
            k = int(plain.lengths[r])
            torch.testing.assert_close(compacted.logits[r, :k], plain.logits[r, :k], rtol=1e-5, atol=1e-5)


def test_amortised_eos_checks_change_nothing():
    plain = _ending_rollouts()
    sparse = _ending_rollouts(eos_check_every=5)
    _assert_same_rollouts(plain, sparse)
    assert torch.equal(plain.finished, sparse.finished)


def test_decode_passes_the_cache_under_the_name_the_model_takes():
    """transformers 5.x renamed past_key_values to cache: no deprecation warning from the engine."""
    model = _tiny.model("llama")
    ids, mask = _prompts()
    api = engine.model_interface(model)
    assert api.cache_kwarg in engine.CACHE_KWARGS
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        engine.decode(model, ids, mask, max_new_tokens=3, eos_ids=[1], pad_id=0, repeats=2)


# --- eval mode -------------------------------------------------------------------------------------

def _train_mode_gpt2():
    from transformers import AutoModelForCausalLM

    cfg = _tiny.config("gpt2")
    cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.5
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")  # from_config: train mode
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = 1, 0
    model.train()
    model.transformer.h[0].eval()  # a submodule the caller set differently must keep its own mode
    return model


@pytest.mark.parametrize("method", ["aisp", "bon"])
def test_methods_run_in_eval_mode_and_restore_the_callers_modes(method):
    model, tok = _train_mode_gpt2(), _tiny.tokenizer()
    modes = {name: m.training for name, m in model.named_modules()}
    run = (lambda: aisp_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward(), n=3, iterations=2,
                                 max_new_tokens=5, backend="torch", progress=False)) if method == "aisp" else \
        (lambda: bon_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward(), n=4, max_new_tokens=5,
                              progress=False))
    first, second = run(), run()
    assert [r.response for r in first] == [r.response for r in second]  # dropout off: deterministic
    assert {name: m.training for name, m in model.named_modules()} == modes


def test_the_callers_mode_is_restored_when_the_reward_raises():
    model, tok = _train_mode_gpt2(), _tiny.tokenizer()
    modes = {name: m.training for name, m in model.named_modules()}

    def broken(prompts, responses):
        raise RuntimeError("reward service down")

    with pytest.raises(RuntimeError, match="reward service down"):
        aisp_generate(model, tok, "w1 w2", broken, n=2, iterations=1, max_new_tokens=3, backend="torch",
                      progress=False)
    assert {name: m.training for name, m in model.named_modules()} == modes


# --- every architecture ------------------------------------------------------------------------

@pytest.mark.parametrize("arch", _archs.CAUSAL_ARCHS)
def test_every_architecture_decodes_like_generate_from_a_forked_prompt_cache(arch):
    """Attention, sliding-window, hybrid sliding/global, soft-capped, MoE, MLA, tied, state-space (Mamba
    family) and attention+state-space hybrids: greedy rollouts from a prompt cache prefilled once and
    forked equal model.generate on the repeated prompts, with no deprecation warning."""
    model = _archs.model(arch)
    ids, mask = _prompts()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        roll = engine.decode(model, ids, mask, max_new_tokens=T, eos_ids=[1], pad_id=0, repeats=2,
                             return_logits=True)
    ref_tokens, ref_logits = _generate(model, ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0))
    for r in range(roll.tokens.shape[0]):
        k = int(roll.lengths[r])
        assert roll.tokens[r, :k].tolist() == ref_tokens[r, :k].tolist(), r
        torch.testing.assert_close(roll.logits[r, :k], ref_logits[r, :k], rtol=1e-5, atol=1e-5)


def test_purely_recurrent_models_get_no_mask_on_decode_steps_and_hybrids_do():
    assert all(not engine.model_interface(_archs.model(a)).mask_on_decode for a in _archs.STATE_SPACE_ARCHS)
    assert all(engine.model_interface(_archs.model(a)).mask_on_decode for a in _archs.HYBRID_ARCHS)
    assert engine.model_interface(_archs.model("llama")).mask_on_decode


#: One of each kind for the end-to-end method runs: tied, soft-capped, sliding, hybrid sliding/global,
#: MoE, MLA, state-space, attention+state-space hybrids, and the classic GPT-style models.
METHOD_ARCHS = ("llama_tied", "gemma2", "gemma3", "mistral", "mixtral", "qwen3_moe", "deepseek_v3", "gpt_oss",
                "mamba", "mamba2", "falcon_mamba", "jamba", "bamba", "zamba2", "gpt2", "opt", "bloom", "phi3")


@pytest.mark.parametrize("arch", METHOD_ARCHS)
def test_aisp_and_best_of_n_run_on(arch):
    """AISP's greedy baseline equals generate, its best reward is its best rollout's, reruns are
    identical; Best-of-N too."""
    model, tok = _archs.model(arch), _tiny.tokenizer()
    prompts = _tiny.PROMPTS[:3]
    reward = _tiny.count_reward("w7")
    kw = dict(max_new_tokens=5, progress=False)
    a = aisp_generate(model, tok, prompts, reward, n=3, iterations=2, sigma=1.0, backend="torch", with_base=True, **kw)
    ids, mask = encoding.encode_prompts(tok, prompts)
    greedy, _ = _generate(model, ids, mask, max_new_tokens=5)
    for b, r in enumerate(a):
        want = [t for t in greedy[b].tolist()]
        want = want[:want.index(1)] if 1 in want else want
        assert r.base_response == tok.decode(want, skip_special_tokens=True)
        assert r.reward == max(r.trace_max) and r.reward_calls == 6
    again = aisp_generate(model, tok, prompts, reward, n=3, iterations=2, sigma=1.0, backend="torch", **kw)
    assert [r.response_ids for r in again] == [r.response_ids for r in a]
    bon = bon_generate(model, tok, prompts, reward, n=4, **kw)
    assert [r.reward_calls for r in bon] == [4, 4, 4] and all(r.reward == max(r.trace_max) for r in bon)


# --- models the engine rejects -------------------------------------------------------------------

@pytest.mark.parametrize("arch, reason", [
    ("t5", "encoder-decoder"), ("bert", "cannot generate"), ("rwkv", "takes no cache argument"),
    ("recurrent_gemma", "returns no cache"),
])
def test_models_that_cannot_decode_incrementally_are_rejected_before_any_work(arch, reason, monkeypatch):
    model = _archs.model(arch)
    calls = []

    def reward(prompts, responses):
        calls.append(responses)
        return [0.0] * len(responses)

    @functools.wraps(model.forward)  # same signature and annotations: the check must not need a forward
    def no_forward(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(model, "forward", no_forward)
    for run in (lambda: aisp_generate(model, _tiny.tokenizer(), "w1", reward, n=2, iterations=1, max_new_tokens=2,
                                      progress=False),
                lambda: bon_generate(model, _tiny.tokenizer(), "w1", reward, n=2, max_new_tokens=2, progress=False)):
        with pytest.raises(ValueError, match=f"model: {type(model).__name__}.* {reason}"):
            run()
    assert not calls


def test_a_base_model_without_an_output_projection_is_rejected():
    from transformers import AutoModel

    base = AutoModel.from_config(_tiny.config("llama"))
    with pytest.raises(ValueError, match="output projection"):
        aisp_generate(base, _tiny.tokenizer(), "w1", _tiny.count_reward(), n=2, iterations=1, max_new_tokens=2,
                      progress=False)


# --- the compiled step ------------------------------------------------------------------------------

def _unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def test_compiled_step_decodes_like_eager_and_is_traced_once():
    """Static cache + torch.compile(fullgraph=True): the same tokens as eager (logits to rounding), and a
    second decode (the cache refilled in place from the prompt cache) reuses the graph."""
    model = _tiny.model("llama")
    ids, mask = _prompts()
    pc = engine.prefill(model, ids, mask)
    kw = dict(max_new_tokens=T, eos_ids=[1], pad_id=0, repeats=2, prompt_cache=pc, return_logits=True)
    eager = engine.decode(model, ids, mask, **kw)
    before = _unique_graphs()
    with engine.CompiledStep(model, pc, repeats=2, max_new_tokens=T) as step:
        first = engine.decode(model, ids, mask, compiled=step, **kw)
        second = engine.decode(model, ids, mask, compiled=step, **kw)
    assert _unique_graphs() - before == 1
    for roll in (first, second):
        _assert_same_rollouts(eager, roll)
        torch.testing.assert_close(roll.logits, eager.logits, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="compiled: built for 10 rollouts of 8 tokens"):
        engine.decode(model, ids, mask, compiled=step, **dict(kw, repeats=3))


def test_compiled_step_needs_prompts_of_two_tokens():
    model = _tiny.model("llama")
    ids, mask = encoding.encode_prompts(_tiny.tokenizer(), ["w4"])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        engine.CompiledStep(model, engine.prefill(model, ids, mask), repeats=2, max_new_tokens=3)


def test_aisp_and_best_of_n_compiled_equal_eager():
    """The AISP perturbation (the fused op as a torch.library operator) inside the compiled step: the same
    responses and traces as eager; traced once for all iterations; the model's hook is gone afterwards."""
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(n=3, iterations=3, sigma=1.0, max_new_tokens=6, progress=False, backend="cpu")
    eager = aisp_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward(), **kw)
    before = _unique_graphs()
    compiled = aisp_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward(), compile=True, **kw)
    assert _unique_graphs() - before == 1
    assert [r.response_ids for r in compiled] == [r.response_ids for r in eager]
    assert [r.trace_mean for r in compiled] == [r.trace_mean for r in eager]
    assert not engine.output_head(model)._forward_pre_hooks
    bon_kw = dict(n=4, max_new_tokens=6, progress=False)
    assert [r.response_ids for r in bon_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward(), compile=True,
                                                 **bon_kw)] == \
        [r.response_ids for r in bon_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward(), **bon_kw)]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_captured_decode_step_on_a_gpu_matches_eager_and_is_timed(backend, capsys):
    """On CUDA the compiled step runs with mode="reduce-overhead" (captured as a CUDA graph and replayed):
    AISP's rollouts equal eager's wherever eager's choice is not a near-tie, and the step time is printed."""
    import copy
    import time

    model = copy.deepcopy(_tiny.model("llama")).to("cuda")  # the cached CPU model stays as it is
    tok = _tiny.tokenizer()
    ids, mask = encoding.encode_prompts(tok, _tiny.PROMPTS, device="cuda")
    pc = engine.prefill(model, ids, mask)
    kw = dict(max_new_tokens=T, eos_ids=[1], pad_id=0, repeats=4, prompt_cache=pc, return_logits=True)
    eager = engine.decode(model, ids, mask, **kw)
    with engine.CompiledStep(model, pc, repeats=4, max_new_tokens=T) as step:
        engine.decode(model, ids, mask, compiled=step, **kw)  # compile and capture
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        captured = engine.decode(model, ids, mask, compiled=step, **kw)
        torch.cuda.synchronize()
        step_ms = (time.perf_counter() - t0) / T * 1e3
    top2 = eager.logits.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1] > 1e-3).all(dim=1)
    assert bool(clear.any())
    for r in clear.nonzero().flatten().tolist():
        k = int(eager.lengths[r])
        assert captured.tokens[r, :k].tolist() == eager.tokens[r, :k].tolist(), r
    torch.testing.assert_close(captured.logits[clear], eager.logits[clear], rtol=1e-3, atol=1e-3)
    aisp_kw = dict(n=4, iterations=2, sigma=1.0, max_new_tokens=6, progress=False, backend=backend)
    gpu = aisp_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward(), compile=True, **aisp_kw)
    assert len(gpu) == 3 and all(r.reward_calls == 8 for r in gpu)
    with capsys.disabled():
        print(f"\ncaptured decode step ({backend}): {step_ms:.3f} ms for {ids.shape[0] * 4} rows")


# --- the model's interface: resolved once per call, handed down ------------------------------------

@pytest.mark.parametrize("method", ["aisp", "bon", "sea"])
def test_each_call_resolves_the_model_interface_once(method, monkeypatch):
    """A method call inspects the model's forward once (in its check); the prefill's prompt cache
    carries the interface to every decode, the compiled step, the head norm and the metrics."""
    from fastalign.engine import model as engine_model

    calls = []
    inner = engine_model._forward_params
    monkeypatch.setattr(engine_model, "_forward_params", lambda m: calls.append(1) or inner(m))
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    common = dict(max_new_tokens=4, progress=False, metrics=True)
    if method == "aisp":
        res = fa.aisp_generate(model, tok, _tiny.PROMPTS[:2], _tiny.count_reward(), n=3, iterations=2,
                               with_base=True, rel_sigma=0.1, **common)
    elif method == "bon":
        res = fa.bon_generate(model, tok, _tiny.PROMPTS[:2], _tiny.count_reward(), n=3, with_base=True, **common)
    else:
        res = fa.sea_generate(model, tok, _tiny.PROMPTS[:2], _tiny.SoftCountReward("w7"), chains=2, steps=2,
                              backend="torch", **common)
    assert len(res) == 2 and all("perplexity" in r.metrics for r in res)
    assert len(calls) == 1


def test_prompt_cache_carries_the_interface_it_was_made_with():
    model, tok = _tiny.model("gpt2"), _tiny.tokenizer()
    ids, mask = encoding.encode_prompts(tok, _tiny.PROMPTS[:2])
    api = engine.model_interface(model)
    pc = engine.prefill(model, ids, mask, api=api)
    assert pc.api is api
    assert engine.prefill(model, ids, mask).api == api  # resolved there when not given
    short = engine.prefill(model, ids[:, -1:], mask[:, -1:], api=api)  # one-token prompts: no forward
    assert short.cache is None and short.api is api
