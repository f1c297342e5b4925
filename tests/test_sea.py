"""SEA over tiny random causal LMs: energy goes down, shapes, determinism, batch invariance, backends, errors."""
from __future__ import annotations

import math

import pytest
import torch

import _tiny
import fastalign as fa
from fastalign.methods.results import AlignResult
from fastalign.scoring.rewards import SequenceClassifierReward
from fastalign.methods.sea import (BaseLM, SeaSettings, decode_tokens, energy_and_grad, noise_schedule, sea_generate,
                           soft_tokens)


pytestmark = pytest.mark.usefixtures("one_torch_thread")




#: the pre-issue-14 sampler (soft tokens, fluency through the LM, argmax decoding): its tests still hold
LEGACY = dict(soft_tokens="soft", fluency="full", decoding="argmax", select="final", eval_every=None)
KW = dict(steps=12, max_new_tokens=8, reward_weight=5.0, progress=False, metrics=False, **LEGACY)


def test_noise_schedule():
    assert noise_schedule((0.1, 0.001), 3) == pytest.approx([0.1, 0.01, 0.001])
    assert noise_schedule(0.2, 2) == [0.2, 0.2]
    assert noise_schedule((0.1, 0.0), 3) == pytest.approx([0.1, 0.05, 0.0])
    with pytest.raises(ValueError, match="noise_std"):
        noise_schedule(-1.0, 3)


@pytest.mark.parametrize("arch", _tiny.ARCHES)
def test_shapes_types_and_energy_goes_down(arch):
    model, tok = _tiny.model(arch), _tiny.tokenizer()
    out = sea_generate(model, tok, _tiny.PROMPTS[:2], _tiny.SoftCountReward("w7"), chains=2, backend="torch", **KW)
    assert isinstance(out, list) and len(out) == 2
    for res in out:
        assert isinstance(res, AlignResult) and res.method == "sea"
        assert isinstance(res.response, str) and res.reward == float(res.response.split().count("w7"))
        assert tok.decode(res.response_ids, skip_special_tokens=True) == res.response
        assert len(res.response_ids) <= KW["max_new_tokens"]
        assert len(res.trace_mean) == 2 and res.reward_calls == 2 * 2  # initial + final, 2 chains
        assert res.base_reward == float(res.base_response.split().count("w7"))
        energy = res.extra["energy"]
        assert len(energy) == KW["steps"] == len(res.extra["soft_reward"]) == len(res.extra["fluency"])
        assert len(res.extra["grad_norm"]) == KW["steps"] and len(res.extra["grad_norm"][0]) == 2  # per chain
        assert energy[-1] < energy[0] - 0.5, energy
        assert res.extra["soft_reward"][-1] > res.extra["soft_reward"][0]


def test_energy_decreases_steadily_without_noise():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    res = sea_generate(model, tok, _tiny.PROMPTS[0], _tiny.SoftCountReward("w7"), noise="none", clip=None,
                       backend="torch", chains=1, **KW)
    e = res.extra["energy"]
    assert sum(b < a for a, b in zip(e, e[1:])) >= len(e) - 3, e
    assert e[-1] < e[0]


def test_sea_improves_the_decoded_reward():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    out = sea_generate(model, tok, _tiny.PROMPTS, _tiny.SoftCountReward("w7"), steps=25, max_new_tokens=8,
                       reward_weight=5.0, progress=False, backend="torch", chains=1, **LEGACY)
    assert sum(r.reward for r in out) > sum(r.base_reward for r in out)


def test_langevin_noise_and_sgld_run():
    model, tok = _tiny.model("qwen2"), _tiny.tokenizer()
    res = sea_generate(model, tok, _tiny.PROMPTS[1], _tiny.SoftCountReward(), noise="langevin", noise_std=0.01,
                       optimizer="sgld", lr=2.0, clip="row", backend="torch", chains=1, **KW)
    assert res.extra["energy"][-1] < res.extra["energy"][0]
    assert len(res.extra["grad_norm"]) == KW["steps"] and len(res.extra["grad_norm"][0]) == 1


def test_eval_every_and_lm_topk_decoding():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(KW, seed=1, backend="torch", chains=1)
    kw.pop("decoding"), kw.pop("eval_every")
    plain = sea_generate(model, tok, _tiny.PROMPTS[2], _tiny.SoftCountReward(), decoding="argmax", eval_every=None,
                         **kw)
    ranked = sea_generate(model, tok, _tiny.PROMPTS[2], _tiny.SoftCountReward(), decoding="lm_topk", decode_topk=3,
                          eval_every=4, **kw)
    assert len(ranked.trace_mean) == 1 + 2 + 1  # initial, steps 4 and 8, final
    assert ranked.reward_calls == 4
    assert ranked.extra["energy"] == plain.extra["energy"]  # decoding does not change the optimisation


def test_determinism_and_seed():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(KW, backend="torch")
    a = sea_generate(model, tok, _tiny.PROMPTS[:2], _tiny.SoftCountReward(), seed=7, **kw)
    b = sea_generate(model, tok, _tiny.PROMPTS[:2], _tiny.SoftCountReward(), seed=7, **kw)
    c = sea_generate(model, tok, _tiny.PROMPTS[:2], _tiny.SoftCountReward(), seed=8, **kw)
    assert [r.response_ids for r in a] == [r.response_ids for r in b]
    assert [r.extra["energy"] for r in a] == [r.extra["energy"] for r in b]
    assert [r.base_response for r in a] != [r.base_response for r in c]


@pytest.mark.parametrize("backend", _tiny.backend_params())
def test_batch_invariance(backend):
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(KW, seed=4, backend=backend)
    alone = sea_generate(model, tok, _tiny.PROMPTS[2], _tiny.SoftCountReward(), **kw)
    batch = sea_generate(model, tok, _tiny.PROMPTS, _tiny.SoftCountReward(), **kw)
    assert batch[2].base_response == alone.base_response
    assert batch[2].response_ids == alone.response_ids
    assert batch[2].extra["energy"] == pytest.approx(alone.extra["energy"], rel=1e-4, abs=1e-4)


def test_cpu_backend_matches_torch_backend():
    reason = fa.available_backends("cpu").get("cpu")
    if reason is not None:
        pytest.skip(f"cpu backend cannot run: {reason}")
    model, tok = _tiny.model("gpt2"), _tiny.tokenizer()
    kw = dict(KW, seed=9, chains=2)
    ref = sea_generate(model, tok, _tiny.PROMPTS[:2], _tiny.SoftCountReward(), backend="torch", **kw)
    got = sea_generate(model, tok, _tiny.PROMPTS[:2], _tiny.SoftCountReward(), backend="cpu", **kw)
    assert [r.response_ids for r in got] == [r.response_ids for r in ref]
    for g, r in zip(got, ref):
        assert g.extra["energy"] == pytest.approx(r.extra["energy"], rel=1e-4, abs=1e-4)


def test_with_a_shared_vocabulary_classifier_reward():
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(1)
    cfg = _tiny.config("llama")
    cfg.num_labels = 1
    clf = AutoModelForSequenceClassification.from_config(cfg).eval()
    tok = _tiny.tokenizer()
    reward = SequenceClassifierReward(clf, tok)
    res = sea_generate(_tiny.model("llama"), tok, _tiny.PROMPTS[3], reward, backend="torch", **KW)
    assert res.extra["energy"][-1] < res.extra["energy"][0]
    assert res.reward == pytest.approx(float(reward([res.prompt], [res.response])[0]), abs=1e-6)


def test_errors():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    with pytest.raises(TypeError, match="differentiable"):
        sea_generate(model, tok, "w1", _tiny.count_reward(), **KW)
    with pytest.raises(ValueError, match="reward: expected 4 rewards"):
        sea_generate(model, tok, "w1", _WrongLength(), **KW)
    with pytest.raises(ValueError, match="NaN"):
        sea_generate(model, tok, "w1", _NaNReward(), **KW)
    from transformers import AutoModel

    torch.manual_seed(0)
    with pytest.raises(ValueError, match="output projection"):
        sea_generate(AutoModel.from_config(_tiny.config("llama")), tok, "w1", _tiny.SoftCountReward(), **KW)
    with pytest.raises(ValueError, match="optimizer"):
        sea_generate(model, tok, "w1", _tiny.SoftCountReward(), optimizer="rmsprop", **KW)
    with pytest.raises(ValueError, match="noise"):
        sea_generate(model, tok, "w1", _tiny.SoftCountReward(), noise="both", **KW)


class _WrongLength(_tiny.SoftCountReward):
    def __call__(self, prompts, responses):
        return torch.zeros(len(responses) + 1)


class _NaNReward(_tiny.SoftCountReward):
    def __call__(self, prompts, responses):
        return torch.full((len(responses),), float("nan"))


# ------------------------------------------------------------------ issue 14: the phases and options
def _encoded(model, tok, prompts):
    from fastalign.methods import _common

    return _common.EncodedPrompts.from_texts(model, tok, prompts, chat_template=False, device=torch.device("cpu"))


def _settings(**kw):
    base = dict(chains=1, steps=1, noise="none", reward_weight=0.0, decode_topk=3, max_new_tokens=5, seed=0,
                backend="torch")
    return SeaSettings.check(**{**base, **kw})


def test_straight_through_value_is_one_hot_and_gradient_is_the_softmax():
    torch.manual_seed(0)
    y = torch.randn(2, 3, 7, requires_grad=True)
    w = torch.randn(2, 3, 7)
    q = soft_tokens(y, "straight_through", 0.5)
    assert torch.equal(q.detach(), torch.nn.functional.one_hot(y.argmax(-1), 7).float())
    (g_st,) = torch.autograd.grad((q * w).sum(), y)
    (g_soft,) = torch.autograd.grad((torch.softmax(y / 0.5, -1) * w).sum(), y)
    torch.testing.assert_close(g_st, g_soft)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_straight_through_forward_equals_a_forward_on_the_argmax_ids(arch):
    model, tok = _tiny.model(arch), _tiny.tokenizer()
    prompts = ["w1 w2 w3", "w4"]  # left padding on the second prompt
    enc = _encoded(model, tok, prompts)
    chains, L = 2, 4
    resp_mask = torch.ones(len(prompts) * chains, L, dtype=torch.bool)
    lm = BaseLM(model, enc.prefill(model), chains, resp_mask, torch.device("cpu"))
    torch.manual_seed(1)
    y = torch.randn(len(prompts) * chains, L, _tiny.VOCAB_SIZE, requires_grad=True)
    got = lm.logits(soft_tokens(y, "straight_through"))
    ids = y.argmax(-1)
    for i in range(len(prompts) * chains):
        prompt_ids = tok(prompts[i // chains])["input_ids"]
        full = torch.cat([torch.tensor(prompt_ids), ids[i]]).unsqueeze(0)
        ref = model(input_ids=full).logits[0, len(prompt_ids) - 1:len(prompt_ids) - 1 + L]
        torch.testing.assert_close(got[i], ref, atol=1e-5, rtol=1e-5)


def test_lm_topk_decoding_emits_only_the_base_models_top_k():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    prompts = ["w1 w2 w3", "w4"]
    k, L, chains = 3, 6, 2
    st = _settings(chains=chains, decode_topk=k, max_new_tokens=L)
    enc = _encoded(model, tok, prompts)
    torch.manual_seed(2)
    y = torch.randn(len(prompts) * chains, L, _tiny.VOCAB_SIZE) * 5
    tokens = decode_tokens(model, enc, y, st)
    assert not torch.equal(tokens, y.argmax(-1))  # the rule differs from argmax here
    for i in range(len(prompts) * chains):
        prefix = tok(prompts[i // chains])["input_ids"]
        for l in range(L):
            t = int(tokens[i, l])
            logits = model(input_ids=torch.tensor([prefix])).logits[0, -1]
            top = logits.topk(k).indices
            assert t in top.tolist(), (i, l)
            assert t == int(top[y[i, l, top].argmax()])  # the candidate y ranks highest
            if t == 1:  # EOS ends the response
                break
            prefix = prefix + [t]


def test_detached_fluency_gradient_is_softmax_minus_the_target_and_memoised():
    """fluency='detached', reward weight 0: d/dy of mean_l CE(p_base_l, softmax(y_l)) = (q_l - p_l) / L,
    with p the base LM's distribution along the argmax tokens (no backward through the LM)."""
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    enc = _encoded(model, tok, ["w1 w2", "w3"])
    L = 4
    mask = torch.ones(2, L, dtype=torch.bool)
    lm = BaseLM(model, enc.prefill(model), 1, mask, torch.device("cpu"))
    st = _settings(reward_weight=0.0)
    torch.manual_seed(3)
    y = torch.randn(2, L, _tiny.VOCAB_SIZE)
    soft = _tiny.SoftCountReward().soft_reward_fn(model, tok)
    e = energy_and_grad(y, lm, soft, ["w1 w2", "w3"], mask, st)
    p = torch.softmax(lm.logits(soft_tokens(y, "straight_through")).detach(), -1)
    torch.testing.assert_close(e.grad, (torch.softmax(y, -1) - p) / L, atol=1e-6, rtol=1e-5)
    rows = lm.rows_run
    energy_and_grad(y + 1e-3, lm, soft, ["w1 w2", "w3"], mask, st)  # same argmax: memoised, no LM forward
    assert lm.rows_run == rows
    y2 = y.clone()
    y2[1, 0, 5] = 100.0  # chain 1's token changes: only its row reruns
    e2 = energy_and_grad(y2, lm, soft, ["w1 w2", "w3"], mask, st)
    assert lm.rows_run == rows + 1
    fresh = BaseLM(model, enc, 1, mask, torch.device("cpu"))
    torch.testing.assert_close(e2.grad, energy_and_grad(y2, fresh, soft, ["w1 w2", "w3"], mask, st).grad)


def test_full_and_detached_fluency_differ_by_the_lm_path():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    enc = _encoded(model, tok, ["w1 w2"])
    mask = torch.ones(1, 3, dtype=torch.bool)
    torch.manual_seed(4)
    y = torch.randn(1, 3, _tiny.VOCAB_SIZE)
    soft = _tiny.SoftCountReward().soft_reward_fn(model, tok)
    grads = {}
    for mode in ("full", "detached"):
        lm = BaseLM(model, enc.prefill(model), 1, mask, torch.device("cpu"))
        e = energy_and_grad(y, lm, soft, ["w1 w2"], mask, _settings(fluency=mode, soft_tokens="soft"))
        grads[mode] = e.grad
    assert e.fluency.item() > 0
    assert (grads["full"] - grads["detached"]).abs().max() > 1e-4  # the full gradient includes the LM's backward


def _chain_norms(res):
    return [[round(x, 5) for x in row] for row in res.extra["grad_norm"]]


def test_chains_are_independent_of_each_other_and_of_the_batch():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(steps=6, max_new_tokens=6, reward_weight=5.0, progress=False, metrics=False, backend="torch", seed=3,
              noise="langevin", noise_std=0.05)
    three = sea_generate(model, tok, _tiny.PROMPTS[:3], _tiny.SoftCountReward(), chains=3, **kw)
    two = sea_generate(model, tok, _tiny.PROMPTS[1], _tiny.SoftCountReward(), chains=2, **kw)
    alone = sea_generate(model, tok, _tiny.PROMPTS[1], _tiny.SoftCountReward(), chains=3, **kw)
    # chain c of a prompt takes the same path whatever the other chains and prompts are
    assert [row[:2] for row in _chain_norms(three[1])] == _chain_norms(two)
    assert _chain_norms(three[1]) == _chain_norms(alone)
    assert three[1].response_ids == alone.response_ids and three[1].base_response == alone.base_response
    assert three[1].extra["energy"] == pytest.approx(alone.extra["energy"], rel=1e-5, abs=1e-5)


class _NaNChainReward(_tiny.SoftCountReward):
    """The soft reward is NaN for the rows in ``bad`` (a chain whose energy turns non-finite)."""

    def __init__(self, bad):
        super().__init__()
        self.bad = list(bad)

    def soft_reward_fn(self, model, tok):
        inner = super().soft_reward_fn(model, tok)
        bad = self.bad

        def soft(prompts, probs, lengths):
            r = inner(prompts, probs, lengths)
            nan = torch.zeros_like(r)
            nan[bad] = float("nan")
            return r + nan

        soft.is_soft_reward = True
        return soft


def test_a_non_finite_chain_is_warned_about_and_excluded():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(steps=4, max_new_tokens=6, reward_weight=5.0, progress=False, metrics=False, backend="torch", seed=5)
    with pytest.warns(RuntimeWarning, match="chain 1 of prompt 0 .*non-finite.*excluded"):
        out = sea_generate(model, tok, _tiny.PROMPTS[:2], _NaNChainReward([1]), chains=2, **kw)
    assert out[0].extra["failed_chains"] == [1] and out[0].extra["chain"] == 0
    assert out[1].extra["failed_chains"] == []
    ok = sea_generate(model, tok, _tiny.PROMPTS[:2], _tiny.SoftCountReward(), chains=2, **kw)
    assert out[1].response_ids == ok[1].response_ids  # the other prompt is unaffected
    assert all(math.isfinite(x) for x in out[0].extra["energy"])  # traces over the finite chains only
    with pytest.raises(FloatingPointError, match="every chain of prompt 1"):
        with pytest.warns(RuntimeWarning):
            sea_generate(model, tok, _tiny.PROMPTS[:2], _NaNChainReward([2, 3]), chains=2, **kw)


def test_new_options_are_validated():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    for bad, name in ((dict(soft_tokens="hard"), "soft_tokens"), (dict(fluency="half"), "fluency"),
                      (dict(decoding="beam"), "decoding"), (dict(decode_topk=0), "decode_topk"),
                      (dict(flu_topk=0), "flu_topk")):
        with pytest.raises(ValueError, match=name):
            sea_generate(model, tok, "w1", _tiny.SoftCountReward(), steps=1, max_new_tokens=3, progress=False, **bad)


def test_defaults_run_and_attach_metrics():
    model, tok = _tiny.model("qwen2"), _tiny.tokenizer()
    res = sea_generate(model, tok, _tiny.PROMPTS[0], _tiny.SoftCountReward(), steps=5, max_new_tokens=6,
                       progress=False, backend="torch")
    assert res.extra["chains"] == 4 and res.reward_calls == (1 + 2) * 4  # the starts, points 0 and 5
    assert res.extra["select"] == "best" and res.extra["steps_run"] == 5
    assert res.reward >= max(res.extra["start_reward"])  # the best chain never ends below a start
    assert {"perplexity", "base_perplexity", "distinct_2", "distinct_3"} <= set(res.metrics)
    assert res.to_dict()["metrics"] == res.metrics


# ------------------------------------------------------------------ issue 22: SEA as its authors run it
def test_piecewise_noise_schedule_is_the_authors():
    """--large-noise-iters 50,100,150,200 --large-gs-std 0.1,0.05,0.01,0.001, drawn after iteration i-1:
    evaluation 0 has none, 1-50 0.1, 51-100 0.05, 101-150 0.01, 151-199 0.001."""
    stds = noise_schedule(fa.sea.AUTHORS["noise_std"], 200)
    assert stds == [0.0] + [0.1] * 50 + [0.05] * 50 + [0.01] * 50 + [0.001] * 49
    assert noise_schedule(((2, 0.5),), 4) == [0.5, 0.5, 0.5, 0.5]  # the last std after the last piece
    with pytest.raises(ValueError, match="increase"):
        noise_schedule(((5, 0.1), (3, 0.2)), 6)


def _preset(preset, **kw):
    return SeaSettings.check(preset=preset, max_new_tokens=5, seed=0, backend="torch", **kw)


def test_presets_and_overrides():
    st = _preset("authors")
    assert (st.lr, st.clip, st.max_norm, st.init_temp, st.init_sample_temp, st.flu_form, st.flu_weight,
            st.reward_weight, st.reward_input, st.reward_temp, st.decode_topk, st.patience, st.noise) == \
        (0.01, None, None, 10.0, 0.8, "reverse", 0.1, 1.0, "soft", 0.1, 10, 100, "eval")
    assert len(st.stds) == st.steps + 1  # eval noise: one std per evaluation point
    assert _preset("authors", lr=0.5).lr == 0.5  # a given option overrides the preset
    assert _preset("fastalign", lr=fa.sea.UNSET).lr == fa.sea.FASTALIGN["lr"]
    with pytest.raises(ValueError, match="preset"):
        _preset("paper")
    with pytest.raises(ValueError, match="unknown option"):
        _settings(learning_rate=0.1)
    with pytest.raises(ValueError, match="flu_topk"):
        _settings(flu_form="reverse", flu_topk=5)
    with pytest.raises(ValueError, match="eval_every"):
        _settings(select="best", eval_every=None)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("start", ["argmax", "random", "answer"])
def test_parallel_lm_topk_decoding_equals_the_sequential_one(arch, start):
    """decode_parallel's fixed point is decode_tokens' sequential LM-top-k decoding (on the scored
    positions: up to each row's length and first EOS), from any start, in at most L + 1 sweeps; started
    from its own answer it runs no LM row at all (memoised)."""
    model, tok = _tiny.model(arch), _tiny.tokenizer()
    prompts, chains, L = ["w1 w2 w3", "w4"], 2, 6
    enc = _encoded(model, tok, prompts)
    st = _settings(chains=chains, decode_topk=3, max_new_tokens=L)
    torch.manual_seed(5)
    y = torch.randn(len(prompts) * chains, L, _tiny.VOCAB_SIZE) * 3
    y[:, :, 1] -= 2.0  # EOS (id 1) less likely, so most rows decode several tokens
    want = decode_tokens(model, enc, y, st)
    mask = torch.ones(len(prompts) * chains, L, dtype=torch.bool)
    lm = BaseLM(model, enc.prefill(model), chains, mask, torch.device("cpu"))
    first = {"argmax": None, "random": torch.randint(2, _tiny.VOCAB_SIZE, (4, L)), "answer": want}[start]
    got, logits = fa.sea.decode_parallel(lm, y, st, enc.eos_ids, enc.pad_id, start=first)
    lengths = fa.sea._eos_lengths(want, torch.full((4,), L), enc.eos_ids)
    for i in range(4):
        assert got[i, :lengths[i]].tolist() == want[i, :lengths[i]].tolist(), i
    torch.testing.assert_close(logits, lm.logits_along(got, "check"))  # the logits along the answer
    rows = lm.rows_run
    again, _ = fa.sea.decode_parallel(lm, y, st, enc.eos_ids, enc.pad_id, start=got)
    assert torch.equal(again, got) and lm.rows_run == rows


def test_best_iterate_bookkeeping():
    best = fa.sea.BestIterate(3)
    alive = torch.tensor([True, True, True])
    t = lambda *xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    assert best.update(t(0.2, 0.5, 0.1), t(0.2, 0.5, 0.1), ["a0", "b0", "c0"], [[1], [2], [3]], -1, alive).all()
    got = best.update(t(0.3, 0.5, 0.0), t(0.3, 0.5, 0.0), ["a1", "b1", "c1"], [[4], [5], [6]], 0, alive)
    assert got.tolist() == [True, False, False]  # equal (0.5) keeps the earlier iterate
    got = best.update(t(0.9, 0.9, 0.9), t(0.9, 0.9, 0.9), ["a2", "b2", "c2"], [[7], [8], [9]], 1,
                      torch.tensor([True, False, True]))
    assert got.tolist() == [True, False, True]  # a dead chain never changes
    assert best.texts == ["a2", "b0", "c2"] and best.ids == [[7], [2], [9]]
    assert best.step.tolist() == [1, -1, 1] and best.goal.tolist() == [0.9, 0.5, 0.9]


def test_no_chain_ends_below_its_start_and_patience_stops():
    """select='best': every chain's answer scores at least its initial sample (kept as iterate -1);
    the reward trace has one entry per evaluation; patience=1 stops at the first evaluation that
    improves no chain."""
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    kw = dict(steps=8, max_new_tokens=6, reward_weight=5.0, backend="torch", progress=False, metrics=False,
              chains=3, seed=4, eval_every=1)
    out = sea_generate(model, tok, _tiny.PROMPTS[:2], _tiny.SoftCountReward("w7"), **kw)
    for res in out:
        assert res.reward >= max(res.extra["start_reward"])
        assert res.reward == max(res.trace_max)  # the answer is the best evaluated response
        assert len(res.trace_max) == 1 + 8 + 1 and res.reward_calls == (1 + 8 + 1) * 3
        assert all(-2 <= b <= 8 for b in res.extra["best_step"])  # -2: nothing at or above the best start
        assert res.extra["best_step"][res.extra["chain"]] >= -1
    (stopped,) = sea_generate(model, tok, _tiny.PROMPTS[:1], _tiny.SoftCountReward("w7"), patience=1, **kw)
    assert stopped.extra["steps_run"] < 8 and len(stopped.trace_max) == stopped.extra["steps_run"] + 2


def test_soft_reward_input_equals_the_one_hot_path_as_its_temperature_goes_to_zero():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    enc = _encoded(model, tok, ["w1 w2"])
    L = 4
    mask = torch.ones(2, L, dtype=torch.bool)
    torch.manual_seed(6)
    y = torch.randn(2, L, _tiny.VOCAB_SIZE)
    soft = _tiny.SoftCountReward().soft_reward_fn(model, tok)
    lm = BaseLM(model, enc.prefill(model), 2, mask, torch.device("cpu"))
    one_hot = energy_and_grad(y, lm, soft, ["w1 w2"] * 2, mask, _settings(reward_weight=1.0))
    cold = energy_and_grad(y, lm, soft, ["w1 w2"] * 2, mask, _settings(reward_weight=1.0, reward_input="soft",
                                                                         reward_temp=1e-4))
    warm = energy_and_grad(y, lm, soft, ["w1 w2"] * 2, mask, _settings(reward_weight=1.0, reward_input="soft",
                                                                         reward_temp=1.0))
    torch.testing.assert_close(cold.soft_reward, one_hot.soft_reward)
    torch.testing.assert_close(warm.soft_reward, torch.softmax(y, -1)[:, :, soft_id()].sum(-1))


def soft_id():
    return _tiny.SoftCountReward().token_id


def test_authors_preset_reproduces_their_update():
    """One step of preset='authors' against their equations written out with torch: at
    y_eval = y + std * xi (fresh noise), loss = -1 * r(softmax(y_eval / 0.1)) + 0.1 * mean_l
    -sum softmax(y_eval) log p_LM (p_LM along the decoded tokens, constant), then torch.optim.Adam
    (lr 0.01) on y with no clipping."""
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    enc = _encoded(model, tok, ["w1 w2", "w3"])
    L, N = 4, 2
    mask = torch.ones(N, L, dtype=torch.bool)
    st = _preset("authors", steps=3)
    seeds = torch.tensor([11, 12])
    torch.manual_seed(7)
    y = torch.randn(N, L, _tiny.VOCAB_SIZE)
    soft = _tiny.SoftCountReward().soft_reward_fn(model, tok)
    lm = BaseLM(model, enc.prefill(model), 1, mask, torch.device("cpu"))
    step = 1  # std 0.1
    y_eval = fa.sea.evaluation_point(y, st, seeds, step)
    assert not torch.equal(y_eval, y)
    decoded, logits = fa.sea.decode_parallel(lm, y_eval, st, enc.eos_ids, enc.pad_id)
    e = energy_and_grad(y_eval, lm, soft, ["w1 w2", "w3"], mask, st, decoded)
    state = (torch.zeros_like(y), torch.zeros_like(y))
    got, _ = fa.sea.update(y, e.grad, st, seeds, 0, state)  # Adam's first step (its t = step + 1)
    # their loop, written out
    eps = torch.nn.Parameter(y.clone())
    opt = torch.optim.Adam([eps], lr=0.01)
    ye = eps + (y_eval - y)
    reward = soft(["w1 w2", "w3"], torch.softmax(ye / 0.1, -1), torch.full((N,), L))
    flu = (-(torch.softmax(ye, -1) * torch.log_softmax(logits, -1)).sum(-1)).mean(-1)
    (-1.0 * reward + 0.1 * flu).sum().backward()
    opt.step()
    torch.testing.assert_close(got, eps.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(e.energy, (-reward + 0.1 * flu).detach())


def test_the_floor_keeps_an_objective_choice_above_the_best_start():
    """With a floor (the prompt's best start), an iterate of higher objective but lower raw reward is
    not kept; with kl_coef an answer still never scores below the best start."""
    best = fa.sea.BestIterate(2, floor=torch.tensor([0.5, 0.5]))
    alive = torch.tensor([True, True])
    t = lambda *xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    assert best.update(t(0.1, 0.4), t(0.5, 0.3), ["a", "b"], [[1], [2]], -1, alive).tolist() == [True, False]
    assert best.update(t(0.9, 0.9), t(0.4, 0.6), ["c", "d"], [[3], [4]], 0, alive).tolist() == [False, True]
    assert best.texts == ["a", "d"] and best.reward.tolist() == [0.5, 0.6]
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    out = sea_generate(model, tok, _tiny.PROMPTS[:3], _tiny.SoftCountReward("w7"), steps=6, max_new_tokens=6,
                       reward_weight=5.0, backend="torch", progress=False, metrics=True, chains=3, seed=2,
                       eval_every=1, kl_coef=2.0)
    for res in out:
        assert res.reward >= max(res.extra["start_reward"]) and res.objective is not None
    assert any(-2 in res.extra["best_step"] for res in out)  # a chain left without an answer above the floor
    assert all("distinct_2" in res.metrics for res in out)
