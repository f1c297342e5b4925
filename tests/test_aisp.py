"""AISP over tiny random causal LMs: the Hugging Face plumbing, shapes, determinism, batch invariance,
backend agreement, learning a synthetic reward, and errors."""
from __future__ import annotations

import math

import pytest
import torch

import _tiny
import fastalign as fa
from fastalign.engine import encoding
from fastalign import engine
from fastalign.methods.results import AlignResult
from fastalign.engine import sampling
from fastalign.methods.aisp import aisp_generate, standardize_rewards


pytestmark = pytest.mark.usefixtures("one_torch_thread")




SMALL = dict(n=4, iterations=2, sigma=1.0, max_new_tokens=6, progress=False)


# --- Hugging Face plumbing -----------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_greedy_decode_matches_generate(arch):
    model, tok = _tiny.model(arch), _tiny.tokenizer()
    ids, mask = encoding.encode_prompts(tok, _tiny.PROMPTS)
    assert ids.shape[0] == 5 and bool((mask[:, -1] == 1).all())  # left padded
    roll = engine.decode(model, ids, mask, max_new_tokens=7, eos_ids=[1], pad_id=0)
    ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=7, do_sample=False,
                         eos_token_id=1, pad_token_id=0)[:, ids.shape[1]:]
    for b in range(5):
        n = int(roll.lengths[b])
        assert roll.tokens[b, :n].tolist() == ref[b, :n].tolist()


def test_perturb_head_input_is_the_head_input():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    ids, mask = encoding.encode_prompts(tok, ["w1 w2 w3"])
    delta = torch.randn(_tiny.HIDDEN, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1]
        want = model.lm_head(h + delta)
        with engine.perturb_head_input(model, lambda x: x + delta):
            got = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
        plain = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]  # hook removed
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, model.lm_head(h), rtol=1e-5, atol=1e-5)


def test_perturbed_gemma2_logits_keep_final_softcapping():
    model, tok = _tiny.model("gemma2"), _tiny.tokenizer()
    cap = model.config.final_logit_softcapping
    ids, mask = encoding.encode_prompts(tok, ["w1 w2"])
    with torch.no_grad(), engine.perturb_head_input(model, lambda x: x * 100.0):
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits
        h = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1] * 100.0
    raw = model.lm_head(h)
    assert raw.abs().max() > 2 * cap  # without capping the logits would exceed the cap
    torch.testing.assert_close(logits[:, -1], cap * torch.tanh(raw / cap), rtol=1e-5, atol=1e-5)


def test_stream_seeds_depend_on_prompt_and_seed_only():
    a = sampling.stream_seeds(0, ["x", "y", "x"])
    assert a[0] == a[2] != a[1]
    assert sampling.stream_seeds(0, ["y"]) == [a[1]]
    assert sampling.stream_seeds(1, ["x"]) != [a[0]]
    assert sampling.stream_seeds([0, 1], ["x", "x"]) == [a[0], sampling.stream_seeds(1, ["x"])[0]]
    assert all(0 <= s < 2**63 for s in a)
    with pytest.raises(ValueError, match="seed"):
        sampling.stream_seeds([1, 2], ["x"])
    with pytest.raises(ValueError, match="seed"):
        sampling.stream_seeds(-1, ["x"])


def test_standardize_rewards():
    r = torch.tensor([[1.0, 2.0, 3.0, -math.inf], [5.0, 5.0, 5.0, 5.0]])
    z = standardize_rewards(r)
    s = math.sqrt(2.0 / 3.0)
    torch.testing.assert_close(z[0, :3], torch.tensor([-1 / s, 0.0, 1 / s], dtype=torch.float64))
    assert z[0, 3] == -math.inf
    assert z[1].tolist() == [0.0] * 4


# --- the method ----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", _tiny.ARCHES)
def test_shapes_and_types(arch):
    model, tok = _tiny.model(arch), _tiny.tokenizer()
    out = aisp_generate(model, tok, _tiny.PROMPTS[:2], _tiny.count_reward("w7"), backend="torch", with_base=True, **SMALL)
    assert isinstance(out, list) and len(out) == 2
    for res, prompt in zip(out, _tiny.PROMPTS[:2]):
        assert isinstance(res, AlignResult) and res.method == "aisp" and res.prompt == prompt
        assert isinstance(res.response, str) and isinstance(res.reward, float)
        assert res.reward == float(res.response.split().count("w7"))
        assert tok.decode(res.response_ids, skip_special_tokens=True) == res.response
        assert len(res.response_ids) <= SMALL["max_new_tokens"]
        assert len(res.trace_mean) == len(res.trace_max) == SMALL["iterations"]
        assert res.trace == list(zip(res.trace_mean, res.trace_max))
        assert res.reward == max(res.trace_max)
        assert all(m <= x for m, x in zip(res.trace_mean, res.trace_max))
        assert res.reward_calls == SMALL["n"] * SMALL["iterations"]
        assert res.seconds > 0
        assert isinstance(res.base_response, str) and res.base_reward == float(res.base_response.split().count("w7"))
        assert res.to_dict()["response"] == res.response
    single = aisp_generate(model, tok, _tiny.PROMPTS[0], _tiny.count_reward("w7"), backend="torch", **SMALL)
    assert isinstance(single, AlignResult)
    assert single.response_ids == out[0].response_ids


def test_base_response_is_greedy():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    res = aisp_generate(model, tok, _tiny.PROMPTS[2], _tiny.count_reward(), backend="torch", with_base=True, **SMALL)
    ids, mask = encoding.encode_prompts(tok, [_tiny.PROMPTS[2]])
    greedy = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                            eos_token_id=1, pad_token_id=0)[0, ids.shape[1]:]
    assert res.base_response == tok.decode(greedy, skip_special_tokens=True)


def test_same_seed_same_tokens_and_seed_matters():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(backend="torch", **SMALL)
    a = aisp_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward(), seed=3, **kw)
    b = aisp_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward(), seed=3, **kw)
    c = aisp_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward(), seed=4, **kw)
    assert [r.response_ids for r in a] == [r.response_ids for r in b]
    assert [r.trace_mean for r in a] == [r.trace_mean for r in b]
    assert [r.response_ids for r in a] != [r.response_ids for r in c]


@pytest.mark.parametrize("backend", _tiny.backend_params())
def test_batch_invariance(backend):
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(backend=backend, **SMALL)
    alone = aisp_generate(model, tok, _tiny.PROMPTS[2], _tiny.count_reward(), seed=11, **kw)
    batch = aisp_generate(model, tok, _tiny.PROMPTS, _tiny.count_reward(), seed=11, **kw)
    assert batch[2].response_ids == alone.response_ids
    assert batch[2].trace_mean == alone.trace_mean and batch[2].trace_max == alone.trace_max
    # the same prompt placed first in a different batch
    other = aisp_generate(model, tok, [_tiny.PROMPTS[2], _tiny.PROMPTS[0]], _tiny.count_reward(), seed=11, **kw)
    assert other[0].response_ids == alone.response_ids


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_cpu_backend_matches_torch_backend(arch):
    reason = fa.available_backends("cpu").get("cpu")
    if reason is not None:
        pytest.skip(f"cpu backend cannot run: {reason}")
    model, tok = _tiny.model(arch), _tiny.tokenizer()
    kw = dict(n=6, iterations=3, sigma=1.0, max_new_tokens=8, progress=False, seed=5)
    ref = aisp_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward(), backend="torch", **kw)
    got = aisp_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward(), backend="cpu", **kw)
    assert [r.response_ids for r in got] == [r.response_ids for r in ref]
    assert [r.trace_mean for r in got] == [r.trace_mean for r in ref]


def test_learns_a_synthetic_reward():
    """The mean reward of the last iteration beats the first, on average over seeds and prompts."""
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    first, last, best = [], [], []
    for seed in range(3):
        out = aisp_generate(model, tok, _tiny.PROMPTS[:2], _tiny.count_reward("w7"), n=8, iterations=6, sigma=1.0, control_cap=None,
                            lam=0.3, max_new_tokens=10, seed=seed, backend="torch", progress=False)
        for r in out:
            first.append(r.trace_mean[0])
            last.append(r.trace_mean[-1])
            best.append(r.reward)
    mean_first, mean_last = sum(first) / len(first), sum(last) / len(last)
    assert mean_last > mean_first + 0.3, (first, last)
    assert sum(l > f for f, l in zip(first, last)) >= len(first) // 2 + 1
    assert min(best) >= 1.0


def test_udot_accumulated_while_decoding_matches_the_lengths_given_to_the_update(monkeypatch):
    """The udot summed by aisp_perturb during decoding (only while a rollout is active) must equal what
    the update's own pass computes from ``lengths`` (steps t < length): otherwise the importance
    weights would use a udot that does not belong to the noise they weight. Rollouts that stop early
    (EOS) are the case that matters; this configuration has some."""
    from fastalign.methods import aisp

    calls = []
    real_update = aisp.ops.aisp_update

    def recording_update(u, rewards, **kw):
        calls.append((u.clone(), rewards.clone(), dict(kw, udot=kw["udot"].clone())))
        return real_update(u, rewards, **kw)

    monkeypatch.setattr(aisp.ops, "aisp_update", recording_update)
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    aisp_generate(model, tok, _tiny.PROMPTS[:2], _tiny.count_reward("w7"), n=8, iterations=3, sigma=1.0, lam=0.3,
                  alpha=0.5, max_new_tokens=12, seed=0, backend="torch", progress=False)
    assert len(calls) == 3
    assert any(bool((kw["lengths"] < 12).any()) for _, _, kw in calls[1:]), "no rollout stopped early"
    from fastalign.backends import torch_ref

    for u, rewards, kw in calls[1:]:  # iteration 0 has u = 0, so udot = 0 whatever the lengths
        assert float(u.abs().max()) > 0
        recomputed = torch.empty_like(kw["udot"], dtype=torch.float64)
        torch_ref.aisp_udot(u.double(), kw["lengths"], recomputed, seed=kw["seed"],
                            iteration=torch.tensor([kw["iteration"]]), compute_dtype=torch.float64)
        torch.testing.assert_close(kw["udot"].double(), recomputed, rtol=1e-5, atol=1e-4)


def test_normalize_rewards_and_horizon_run():
    model, tok = _tiny.model("qwen2"), _tiny.tokenizer()
    res = aisp_generate(model, tok, _tiny.PROMPTS[:2], _tiny.count_reward(), n=4, iterations=2, sigma=1.0, lam=0.5,
                        normalize_rewards=True, horizon=3, max_new_tokens=6, backend="torch", progress=False)
    assert [r.extra["horizon"] for r in res] == [3, 3]
    assert all(r.extra["normalize_rewards"] for r in res)


def test_rejected_rollouts_do_not_crash():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()

    def reject_first_prompt(prompts, responses):
        return torch.tensor([-math.inf if p == _tiny.PROMPTS[0] else 1.0 for p in prompts])

    out = aisp_generate(model, tok, _tiny.PROMPTS[:2], reject_first_prompt, backend="torch", **SMALL)
    assert out[0].reward == -math.inf and isinstance(out[0].response, str)
    assert out[1].reward == 1.0


# --- errors --------------------------------------------------------------------------------------

def test_reward_of_wrong_length_raises():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    with pytest.raises(ValueError, match=r"reward: expected 8 rewards"):
        aisp_generate(model, tok, _tiny.PROMPTS[:2], lambda p, r: torch.zeros(len(r) - 1), backend="torch", **SMALL)


def test_nan_reward_raises():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    with pytest.raises(ValueError, match="NaN"):
        aisp_generate(model, tok, _tiny.PROMPTS[:2], lambda p, r: torch.full((len(r),), float("nan")),
                      backend="torch", **SMALL)


def test_model_without_output_projection_raises():
    from transformers import AutoModel

    torch.manual_seed(0)
    base = AutoModel.from_config(_tiny.config("llama")).eval()  # LlamaModel: no lm_head
    with pytest.raises(ValueError, match="output projection"):
        aisp_generate(base, _tiny.tokenizer(), "w1", _tiny.count_reward(), backend="torch", **SMALL)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), "n:"), (dict(iterations=0), "iterations:"), (dict(sigma=0.0), "sigma:"), (dict(lam=-1.0), "lam:"),
    (dict(alpha=1.5), "alpha:"), (dict(horizon=7), "horizon:"), (dict(max_new_tokens=0), "max_new_tokens:"),
])
def test_bad_arguments_raise(kwargs, match):
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(SMALL, **kwargs)
    with pytest.raises(ValueError, match=match):
        aisp_generate(model, tok, "w1", _tiny.count_reward(), backend="torch", **kw)


def test_bad_prompts_and_reward_raise():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    with pytest.raises(ValueError, match="prompts"):
        aisp_generate(model, tok, [], _tiny.count_reward(), **SMALL)
    with pytest.raises(TypeError, match=r"prompts\[1\]"):
        aisp_generate(model, tok, ["w1", 3], _tiny.count_reward(), **SMALL)
    with pytest.raises(TypeError, match="reward"):
        aisp_generate(model, tok, "w1", "not callable", **SMALL)


# --- options of the study (issue: AISP against Best-of-N) ------------------------------------------

def test_sigma_as_a_std_or_as_a_variance():
    from fastalign.methods.aisp import resolve_sigma

    assert resolve_sigma(None, None, 0.5) == 0.5
    assert resolve_sigma(0.3, None, 0.5) == 0.3
    assert resolve_sigma(None, 0.5, 0.5) == pytest.approx(0.5 ** 0.5)
    with pytest.raises(ValueError, match="sigma, variance"):
        resolve_sigma(0.3, 0.5, 0.5)
    with pytest.raises(ValueError, match="variance"):
        resolve_sigma(None, -1.0, 0.5)
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    a = aisp_generate(model, tok, "w1 w2", _tiny.count_reward(), backend="torch",
                      **dict(SMALL, sigma=None, variance=0.25))
    b = aisp_generate(model, tok, "w1 w2", _tiny.count_reward(), backend="torch", **dict(SMALL, sigma=0.5))
    assert a.extra["sigma"] == 0.5 and a.response_ids == b.response_ids and a.trace == b.trace


def test_mean_control_rollout_is_greedy_decoding_of_the_shifted_head_input():
    from fastalign.methods.aisp import _mean_control

    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    ids, mask = encoding.encode_prompts(tok, _tiny.PROMPTS[:3])
    u = torch.randn(3, 4, _tiny.HIDDEN, generator=torch.Generator().manual_seed(1)) * 2.0
    roll = engine.decode(model, ids, mask, max_new_tokens=6, eos_ids=[1], pad_id=0, transform=_mean_control(u))
    # reference: step by step with the full sequence (no cache), shifting the last hidden state by u[:, t]
    seq, m = ids.clone(), mask.clone()
    for t in range(roll.tokens.shape[1]):
        with torch.no_grad():
            h = model.model(input_ids=seq, attention_mask=m,
                            position_ids=(m.cumsum(-1) - 1).clamp_min(0)).last_hidden_state[:, -1]
            logits = model.lm_head(h + (u[:, t] if t < 4 else 0.0))
        nxt = logits.argmax(-1)
        for b in range(3):
            if t < int(roll.lengths[b]):
                assert int(roll.tokens[b, t]) == int(nxt[b]), (b, t)
        seq = torch.cat([seq, roll.tokens[:, t:t + 1]], dim=1)
        m = torch.cat([m, torch.ones(3, 1, dtype=m.dtype)], dim=1)


def test_mean_rollout_and_final_samples_are_counted_candidates():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    res = aisp_generate(model, tok, _tiny.PROMPTS[:2], _tiny.count_reward(), backend="torch", mean_rollout=True,
                        final_samples=3, **SMALL)
    for r in res:
        assert r.reward_calls == SMALL["n"] * SMALL["iterations"] + 3 + 1
        assert len(r.trace_mean) == SMALL["iterations"] + 2  # the final batch, then the mean rollout
        assert r.trace_mean[-1] == r.trace_max[-1]  # one candidate
        assert r.reward == max(r.trace_max)
    plain = aisp_generate(model, tok, _tiny.PROMPTS[:2], _tiny.count_reward(), backend="torch", **SMALL)
    for r, p in zip(res, plain):  # the iterations themselves are unchanged by the extra candidates
        assert r.trace_mean[:SMALL["iterations"]] == p.trace_mean


def test_final_samples_draw_noise_past_every_iteration(monkeypatch):
    """The final batch's stream block starts at or after the end of the last iteration's noise, so its
    noise is fresh (never a copy of an earlier rollout's)."""
    from fastalign.methods import aisp as aisp_mod

    calls = []
    real = aisp_mod.ops.aisp_perturb

    def recording(h, u, **kw):
        calls.append((h.shape[1], u.shape[1], u.shape[2], kw["iteration"]))
        return real(h, u, **kw)

    monkeypatch.setattr(aisp_mod.ops, "aisp_perturb", recording)
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    n = SMALL["n"]
    for f in (1, 3, 9):
        calls.clear()
        aisp_generate(model, tok, "w1 w2", _tiny.count_reward(), backend="torch", final_samples=f, **SMALL)
        ends = [(it + 1) * rows * tau * d for rows, tau, d, it in calls if rows == n]
        starts = [it * rows * tau * d for rows, tau, d, it in calls if rows == f and f != n]
        assert starts and min(starts) >= max(ends), (f, starts, ends)


def test_study_defaults_relative_noise_trust_region_and_z_scored_rewards():
    """The defaults chosen by bench/bench_trust.py (bench/RESULTS.md): relative noise, the trust region,
    z-scored rewards with lam 0.5, the raw reward (kl_coef 0). A default call equals those settings
    spelled out, differs from the former defaults (variance 0.5, no cap), and is invariant to an affine
    rescaling of the reward."""
    from fastalign.methods import aisp

    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(n=4, iterations=3, max_new_tokens=6, backend="torch", progress=False)
    prompts = _tiny.PROMPTS[:3]
    reward = _tiny.count_reward("w7")

    def scaled(p, r):
        return reward(p, r) * 100.0 + 3.0

    default = aisp_generate(model, tok, prompts, reward, **kw)
    spelled = aisp_generate(model, tok, prompts, reward, rel_sigma=aisp.DEFAULT_REL_SIGMA,
                            control_cap=aisp.DEFAULT_CONTROL_CAP, kl_coef=0.0, lam=0.5, normalize_rewards=True, **kw)
    former = aisp_generate(model, tok, prompts, reward, variance=0.5, control_cap=None, **kw)
    assert default[0].extra["rel_sigma"] == aisp.DEFAULT_REL_SIGMA and aisp.DEFAULT_KL_COEF == 0.0
    assert default[0].extra["normalize_rewards"] is True and default[0].extra["lam"] == 0.5
    assert default[0].extra["control_cap"] == aisp.DEFAULT_CONTROL_CAP and default[0].objective is None
    assert [r.response_ids for r in default] == [r.response_ids for r in spelled]
    assert [r.trace for r in default] == [r.trace for r in spelled]
    assert [r.extra["control_norm"] for r in default] != [r.extra["control_norm"] for r in former]
    rescaled = aisp_generate(model, tok, prompts, scaled, **kw)
    assert [r.response_ids for r in rescaled] == [r.response_ids for r in default]
