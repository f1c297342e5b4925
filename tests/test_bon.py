"""Best-of-N over tiny random causal LMs: stream sampling, shapes, determinism, batch invariance, errors."""
from __future__ import annotations

import pytest
import torch

import _tiny
from fastalign.methods.results import AlignResult
from fastalign.engine import sampling
from fastalign.methods.bon import bon_generate


pytestmark = pytest.mark.usefixtures("one_torch_thread")


KW = dict(n=6, max_new_tokens=6, progress=False)


def test_sample_tokens_follows_the_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).expand(4000, 4)
    seeds = torch.full((4000,), 123, dtype=torch.int64)
    draws = sampling.sample_tokens(logits, seeds, torch.arange(4000))
    freq = torch.bincount(draws, minlength=4).double() / 4000
    probs = torch.softmax(logits[0].double(), -1)
    # 4 standard errors of a binomial proportion
    assert bool(((freq - probs).abs() <= 4 * (probs * (1 - probs) / 4000).sqrt()).all()), (freq, probs)
    # the same (seed, offset) gives the same draw whatever the other rows are
    again = sampling.sample_tokens(logits[:10], seeds[:10], torch.arange(10))
    assert again.tolist() == draws[:10].tolist()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sample_tokens_is_the_inverse_cdf_of_the_stream_uniform(temperature):
    """Each draw is the first token whose float64 cumulative probability exceeds the row's uniform
    ``rng.uniform(seed, offset)`` (computed here independently, with a normalised CDF)."""
    from fastalign.backends import rng

    gen = torch.Generator().manual_seed(5)
    logits = 3 * torch.randn(300, 1000, generator=gen)
    seeds, offsets = torch.arange(300) * 7 + 1, torch.arange(300) % 13
    got = sampling.sample_tokens(logits, seeds, offsets, temperature=temperature)
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    cdf = probs.cumsum(-1) / probs.sum(-1, keepdim=True)
    u = rng.uniform(seeds, offsets).double()
    want = (cdf <= u.unsqueeze(-1)).sum(-1)
    assert got.tolist() == want.tolist()


def test_sample_tokens_top_p_and_greedy():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(2000, 4)
    seeds = torch.zeros(2000, dtype=torch.int64)
    draws = sampling.sample_tokens(logits, seeds, torch.arange(2000), top_p=0.7)
    assert set(draws.tolist()) == {0, 1}  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7: nucleus {0, 1}
    frac0 = float((draws == 0).double().mean())
    assert abs(frac0 - 0.5 / 0.8) < 0.05
    greedy = sampling.sample_tokens(logits[:5], seeds[:5], torch.arange(5), temperature=0.0)
    assert greedy.tolist() == [0] * 5


def test_sample_tokens_top_k():
    logits = torch.log(torch.tensor([[0.1, 0.4, 0.2, 0.3]])).expand(3000, 4)
    seeds = torch.full((3000,), 7, dtype=torch.int64)
    draws = sampling.sample_tokens(logits, seeds, torch.arange(3000), top_k=2)
    assert set(draws.tolist()) == {1, 3}
    frac1 = float((draws == 1).double().mean())
    assert abs(frac1 - 0.4 / 0.7) < 4 * (0.57 * 0.43 / 3000) ** 0.5
    # top_k and top_p together: top-k first, then the nucleus of what is left (Hugging Face's order)
    both = sampling.sample_tokens(logits, seeds, torch.arange(3000), top_k=3, top_p=0.5)
    assert set(both.tolist()) == {1, 3}  # of {1: 4/9, 3: 3/9, 2: 2/9} the nucleus reaching 0.5 is {1, 3}
    assert torch.equal(sampling.sample_tokens(logits, seeds, torch.arange(3000), top_k=4),
                       sampling.sample_tokens(logits, seeds, torch.arange(3000)))


def test_shapes_and_types():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    out = bon_generate(model, tok, _tiny.PROMPTS[:2], _tiny.count_reward(), batch_size=6, with_base=True, **KW)
    assert len(out) == 2
    for res in out:
        assert isinstance(res, AlignResult) and res.method == "bon"
        assert res.reward_calls == 6
        assert len(res.trace_mean) == 2  # batch_size 6 over 2 prompts: 3 samples per round
        assert res.reward == max(res.trace_max) == float(res.response.split().count("w7"))
        assert tok.decode(res.response_ids, skip_special_tokens=True) == res.response
        assert isinstance(res.base_response, str)
    single = bon_generate(model, tok, _tiny.PROMPTS[0], _tiny.count_reward(), **KW)
    assert isinstance(single, AlignResult)


def test_determinism_batch_invariance_and_batch_size_invariance():
    model, tok = _tiny.model("gpt2"), _tiny.tokenizer()
    samples = {}

    def recording_reward(prompts, responses):
        for p, r in zip(prompts, responses):
            samples.setdefault(p, []).append(r)
        return torch.tensor([float(r.split().count("w7")) for r in responses])

    alone = bon_generate(model, tok, _tiny.PROMPTS[3], recording_reward, seed=2, batch_size=64, **KW)
    alone_samples = samples.pop(_tiny.PROMPTS[3])
    samples.clear()
    batch = bon_generate(model, tok, _tiny.PROMPTS, recording_reward, seed=2, batch_size=10, **KW)
    assert sorted(samples[_tiny.PROMPTS[3]]) == sorted(alone_samples)  # the same 6 samples, in rounds of 2
    assert batch[3].response_ids == alone.response_ids
    assert len(set(alone_samples)) > 1  # sampling does sample
    again = bon_generate(model, tok, _tiny.PROMPTS[3], _tiny.count_reward(), seed=2, **KW)
    assert again.response_ids == alone.response_ids


def test_temperature_zero_is_greedy():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    seen = []

    def reward(prompts, responses):
        seen.extend(responses)
        return torch.zeros(len(responses))

    res = bon_generate(model, tok, _tiny.PROMPTS[1], reward, temperature=0.0, with_base=True, **KW)
    assert set(seen) == {res.base_response}


def test_errors():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    with pytest.raises(ValueError, match="reward: expected 6 rewards"):
        bon_generate(model, tok, "w1", lambda p, r: torch.zeros(3), **KW)
    with pytest.raises(ValueError, match="NaN"):
        bon_generate(model, tok, "w1", lambda p, r: [float("nan")] * len(r), **KW)
    with pytest.raises(ValueError, match="top_p"):
        bon_generate(model, tok, "w1", _tiny.count_reward(), top_p=1.5, **KW)
    with pytest.raises(ValueError, match="n:"):
        bon_generate(model, tok, "w1", _tiny.count_reward(), n=0, max_new_tokens=4, progress=False)
