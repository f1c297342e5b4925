"""Issue 21: the objective ``reward + kl_coef * mean_t log p_base`` (recorded while decoding), AISP's
relative noise, trust region and control-health statistics, each against values computed by hand on
a tiny model."""
from __future__ import annotations

import copy
import math

import pytest
import torch

import _tiny
from fastalign.methods import aisp
from fastalign import aisp_generate, bon_generate, engine
from fastalign.methods._common import EncodedPrompts


def _teacher_forced_logprobs(model, prompt_ids: list[int], response: list[int]) -> list[float]:
    """``log p(response[t] | prompt, response[:t])`` under the unperturbed model, one full forward."""
    ids = torch.tensor([prompt_ids + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    P = len(prompt_ids)
    return [float(logp[P - 1 + t, tok]) for t, tok in enumerate(response)]


def _encoded(model, tok, prompts):
    return EncodedPrompts.from_texts(model, tok, prompts, chat_template=False, device=torch.device("cpu"))


def _rows(enc, roll, repeats):
    """Per rollout: its prompt's ids (padding removed) and its generated ids up to its length (EOS included)."""
    out = []
    for i in range(roll.tokens.shape[0]):
        b = i // repeats
        prompt = enc.input_ids[b][enc.attention_mask[b].bool()].tolist()
        out.append((prompt, roll.tokens[i, : int(roll.lengths[i])].tolist()))
    return out


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_base_logprobs_recorded_while_decoding_equal_teacher_forcing(arch):
    """Decoding around a head shift, the recorded ``sum_t log p_base(y_t)`` is the unperturbed model's
    (the stacked head rows, Gemma-2's final soft-capping included), not the perturbed one's."""
    model, tok = _tiny.model(arch), _tiny.tokenizer()
    enc = _encoded(model, tok, _tiny.PROMPTS[:3])
    shift = torch.randn(_tiny.HIDDEN, generator=torch.Generator().manual_seed(1)) * 3.0
    repeats = 2
    with engine.eval_mode(model):
        roll = enc.decode(model, repeats=repeats, max_new_tokens=7, base_logprobs=True,
                          transform=lambda h, step, active: h + shift.to(h.dtype))
        plain = enc.decode(model, repeats=repeats, max_new_tokens=7)
    assert not torch.equal(roll.tokens, plain.tokens)  # the shift changed the rollouts
    for i, (prompt, resp) in enumerate(_rows(enc, roll, repeats)):
        want = sum(_teacher_forced_logprobs(model, prompt, resp))
        assert float(roll.base_logprob[i]) == pytest.approx(want, abs=2e-4)
    mean = roll.mean_base_logprob()
    assert torch.allclose(mean, roll.base_logprob / roll.lengths.float())


def test_base_logprobs_without_a_transform_come_from_the_step_logits():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    enc = _encoded(model, tok, _tiny.PROMPTS[:2])
    with engine.eval_mode(model):
        roll = enc.decode(model, repeats=1, max_new_tokens=5, base_logprobs=True)
    for i, (prompt, resp) in enumerate(_rows(enc, roll, 1)):
        assert float(roll.base_logprob[i]) == pytest.approx(sum(_teacher_forced_logprobs(model, prompt, resp)),
                                                            abs=2e-4)
    with pytest.raises(ValueError, match="base_logprobs"):
        enc.decode(model, max_new_tokens=2).mean_base_logprob()


def _objective_by_hand(model, tok, res, kl_coef: float, T: int) -> float:
    prompt = tok(res.prompt)["input_ids"]
    resp = list(res.response_ids)
    if len(resp) < T:  # it ended with EOS, which the rollout generated (and the objective counts)
        resp = resp + [tok.eos_token_id]
    lp = _teacher_forced_logprobs(model, prompt, resp)
    return res.reward + kl_coef * sum(lp) / len(lp)


@pytest.mark.parametrize("method", ["aisp", "bon"])
def test_objective_is_reward_plus_kl_coef_times_mean_base_logprob(method):
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(max_new_tokens=6, seed=3, progress=False, metrics=False, kl_coef=0.4)
    if method == "aisp":
        out = aisp_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward("w7"), n=4, iterations=2, sigma=1.0,
                            backend="torch", **kw)
    else:
        out = bon_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward("w7"), n=6, **kw)
    for r in out:
        assert r.objective == pytest.approx(_objective_by_hand(model, tok, r, 0.4, 6), abs=2e-4)
        assert r.reward == float(r.response.split().count("w7"))  # the raw reward is kept beside it
        if method == "aisp":
            assert len(r.extra["objective_mean"]) == 2
    raw = aisp_generate(model, tok, _tiny.PROMPTS[:1], _tiny.count_reward("w7"), n=4, iterations=2, sigma=1.0,
                        backend="torch", max_new_tokens=6, seed=3, progress=False, metrics=False)
    assert raw[0].objective is None and "objective_mean" not in raw[0].extra


def test_a_large_kl_coef_picks_the_most_likely_sample():
    """With kl_coef far above the reward's range, Best-of-N returns the sample of highest mean base
    log-probability among those it drew (checked against every sample drawn)."""
    from fastalign.methods import bon

    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    seen = []

    def reward(prompts, responses):
        seen.extend(responses)
        return torch.tensor([float(r.split().count("w7")) for r in responses])

    (res,) = bon_generate(model, tok, _tiny.PROMPTS[:1], reward, n=8, max_new_tokens=5, kl_coef=1e6, seed=1,
                          progress=False, metrics=False)
    prompt = tok(res.prompt)["input_ids"]

    def mean_lp(text):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids = ids + [tok.eos_token_id] if len(ids) < 5 else ids
        lp = _teacher_forced_logprobs(model, prompt, ids)
        return sum(lp) / len(lp)

    assert mean_lp(res.response) == pytest.approx(max(mean_lp(t) for t in seen), abs=1e-4)
    assert bon.BonSettings.check(n=1, temperature=1.0, top_p=1.0, top_k=0, seed=0, max_new_tokens=1,
                                 batch_size=1, kl_coef=0.0).kl_coef == 0.0
    with pytest.raises(ValueError, match="kl_coef"):
        bon_generate(model, tok, "w1", reward, n=2, kl_coef=-0.1, progress=False)


def test_control_health_and_clamp_by_hand():
    u = torch.tensor([[[3.0, 4.0], [0.0, 1.0]]])  # |u_0| = 5, |u_1| = 1
    rel, ess = aisp.control_health(u, torch.tensor([10.0]), torch.tensor([[0.5, 0.5, 0.0, 0.0]]))
    assert rel == [pytest.approx(0.3)] and ess == [pytest.approx(2.0)]
    capped = aisp.clamp_control(u.clone(), torch.tensor([2.0]))
    assert torch.allclose(capped[0, 0], torch.tensor([1.2, 1.6])) and torch.equal(capped[0, 1], u[0, 1])


def test_the_trust_region_never_lets_the_control_pass_its_cap():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(n=6, iterations=5, sigma=2.0, max_new_tokens=6, backend="torch", progress=False, metrics=False)
    free = aisp_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward("w7"), control_cap=None, **kw)
    capped = aisp_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward("w7"), control_cap=0.05, **kw)
    assert max(max(r.extra["control_norm"]) for r in free) > 0.05  # without the cap it goes past it
    for r in capped:
        assert len(r.extra["control_norm"]) == 5 and max(r.extra["control_norm"]) <= 0.05 + 1e-6
        assert all(1.0 <= e <= 6.0 + 1e-9 for e in r.extra["ess"])


def test_relative_noise_is_relative_to_the_prompt_pre_logit_norm():
    """sigma_b = rel_sigma * |h_b| / sqrt(d), |h_b| the final normalised hidden state at the prompt's last
    prefilled position (by hand from the decoder's last hidden state), one-token prompts included."""
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    prompts = _tiny.PROMPTS[:4]  # "w4" is a one-token prompt
    out = aisp_generate(model, tok, prompts, _tiny.count_reward(), n=2, iterations=1, rel_sigma=0.3,
                        max_new_tokens=3, backend="torch", progress=False, metrics=False)
    for r in out:
        ids = tok(r.prompt)["input_ids"]
        with torch.no_grad():
            hidden = model.model(input_ids=torch.tensor([ids[:-1] if len(ids) > 1 else ids])).last_hidden_state
        norm = float(hidden[0, -1].norm())
        assert r.extra["head_norm"] == pytest.approx(norm, rel=1e-5)
        assert r.extra["sigma"] == pytest.approx(0.3 * norm / math.sqrt(_tiny.HIDDEN), rel=1e-5)
        assert r.extra["rel_sigma"] == 0.3


def test_relative_noise_carries_across_a_rescaled_model():
    """Scale the final norm by 4 and the head by 1/4 (exact in floating point; the logits are unchanged):
    with relative noise and the relative trust region AISP decodes the same tokens and learns the same
    rewards; with the absolute form it does not see the same noise-to-signal ratio."""
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    scaled = copy.deepcopy(model)  # _tiny.model is shared (cached): never change it in place
    with torch.no_grad():
        assert scaled.lm_head.weight.data_ptr() != scaled.model.embed_tokens.weight.data_ptr()
        scaled.model.norm.weight.mul_(4.0)
        scaled.lm_head.weight.div_(4.0)
    kw = dict(n=4, iterations=3, max_new_tokens=6, backend="torch", progress=False, metrics=False)
    a = aisp_generate(model, tok, _tiny.PROMPTS[:3], _tiny.count_reward("w7"), rel_sigma=0.5, control_cap=0.3, **kw)
    b = aisp_generate(scaled, tok, _tiny.PROMPTS[:3], _tiny.count_reward("w7"), rel_sigma=0.5, control_cap=0.3, **kw)
    assert [r.response_ids for r in a] == [r.response_ids for r in b]
    assert [r.trace for r in a] == [r.trace for r in b]
    for ra, rb in zip(a, b):
        assert ra.extra["control_norm"] == pytest.approx(rb.extra["control_norm"], rel=1e-5)
    assert [r.extra["sigma"] * 4 for r in a] == pytest.approx([r.extra["sigma"] for r in b], rel=1e-6)


def test_noise_forms_are_exclusive_and_validated():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    for kw, match in [(dict(rel_sigma=0.1, sigma=0.5), "rel_sigma"), (dict(rel_sigma=0.1, variance=0.5), "rel_sigma"),
                      (dict(rel_sigma=0.0), "rel_sigma"), (dict(control_cap=0.0), "control_cap"),
                      (dict(kl_coef=-1.0), "kl_coef"), (dict(kl_coef=math.inf), "kl_coef")]:
        with pytest.raises(ValueError, match=match):
            aisp_generate(model, tok, "w1", _tiny.count_reward(), n=2, iterations=1, progress=False, **kw)


@pytest.mark.parametrize("backend", _tiny.backend_params())
def test_relative_noise_batch_invariance(backend):
    """A prompt gives the same response alone or in a batch (per-prompt noise scale, per-prompt ops)."""
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(n=3, iterations=2, max_new_tokens=5, rel_sigma=0.4, kl_coef=0.2, backend=backend, progress=False,
              metrics=False)
    batch = aisp_generate(model, tok, _tiny.PROMPTS[:4], _tiny.count_reward(), **kw)
    for i, p in enumerate(_tiny.PROMPTS[:4]):
        alone = aisp_generate(model, tok, p, _tiny.count_reward(), **kw)
        assert alone.response_ids == batch[i].response_ids
        assert alone.objective == pytest.approx(batch[i].objective, abs=1e-5)


def test_compiled_step_records_the_same_objective_as_eager():
    """Relative noise (one op call per prompt inside the traced transform) and the stacked head rows of
    the base log-probabilities in the compiled decode step: the responses and objectives of eager."""
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(n=3, iterations=2, rel_sigma=0.4, kl_coef=0.3, max_new_tokens=5, progress=False, metrics=False,
              backend="cpu")
    prompts = ["w1 w2 w3", "w5 w6"]
    eager = aisp_generate(model, tok, prompts, _tiny.count_reward(), **kw)
    compiled = aisp_generate(model, tok, prompts, _tiny.count_reward(), compile=True, **kw)
    assert [r.response_ids for r in compiled] == [r.response_ids for r in eager]
    assert [r.objective for r in compiled] == pytest.approx([r.objective for r in eager], abs=1e-4)
    assert not engine.output_head(model)._forward_pre_hooks


def test_health_numbers_of_a_result():
    from fastalign.methods.results import AlignResult, health

    r = AlignResult(prompt="p", response="r", reward=0.5, method="aisp", trace_mean=[0.1, 0.2, 0.4, 0.9],
                    objective=0.3, extra={"iterations": 3, "control_norm": [0.1, 0.2, 0.25], "ess": [2.0, 3.0, 4.0]})
    assert health(r) == {"objective": 0.3, "control_norm": 0.25, "ess": 3.0, "reward_rise": pytest.approx(0.3)}
    assert health(AlignResult(prompt="p", response="r", reward=0.5, method="bon")) == {}


def test_sea_picks_its_final_chain_by_the_objective():
    """SEA with kl_coef: the result's objective is its raw reward + kl_coef * the teacher-forced mean base
    log-probability of its response (EOS excluded: SEA's responses are cut at it); without kl_coef
    there is no objective."""
    from fastalign import sea_generate

    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(chains=3, steps=2, max_new_tokens=5, backend="torch", progress=False, metrics=False, seed=2)
    (res,) = sea_generate(model, tok, ["w1 w2 w3"], _tiny.SoftCountReward("w7"), kl_coef=0.5, **kw)
    prompt = tok(res.prompt)["input_ids"]
    lp = _teacher_forced_logprobs(model, prompt, list(res.response_ids))
    assert res.objective == pytest.approx(res.reward + 0.5 * sum(lp) / len(lp), abs=2e-4)
    assert res.objective <= res.reward
    (raw,) = sea_generate(model, tok, ["w1 w2 w3"], _tiny.SoftCountReward("w7"), **kw)
    assert raw.objective is None
