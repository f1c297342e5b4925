"""Text-quality metrics (fastalign.scoring.metrics) against hand-computed values, and on every method's results."""
from __future__ import annotations

import math

import pytest
import torch

import _tiny
from fastalign.methods import _common
from fastalign.scoring import metrics
from fastalign.methods.aisp import aisp_generate
from fastalign.methods.bon import bon_generate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_distinct_n_on_known_strings():
    texts = ["a b c a b", "a b d"]
    # bigrams: ab bc ca ab | ab bd -> 4 distinct of 6; trigrams: abc bca cab | abd -> 4 of 4
    assert metrics.distinct_n(texts, 2) == pytest.approx(4 / 6)
    assert metrics.distinct_n(texts, 3) == 1.0
    assert metrics.distinct_n(["x x x x"], 2) == pytest.approx(1 / 3)
    assert metrics.distinct_n(["one", ""], 2) == 0.0  # no bigram at all


def test_perplexity_is_exp_mean_nll_of_the_response_given_the_prompt():
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    prompts = ["w1 w2 w3 w4", "w5"]  # the second is left padded
    enc = _common.EncodedPrompts.from_texts(model, tok, prompts, chat_template=False, device=torch.device("cpu"))
    responses = [[10, 11, 12], [13, 1 + 2, 14, 15, 16], [], [20]]
    rows = [0, 1, 0, 1]
    got = metrics.perplexities(model, enc.input_ids, enc.attention_mask, rows, responses, batch_size=3)
    for b, resp, ppl in zip(rows, responses, got):
        if not resp:
            assert math.isnan(ppl)
            continue
        prompt = tok(prompts[b])["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + resp])).logits[0]
        logp = torch.log_softmax(logits.double(), -1)
        nll = [-float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(resp)]
        assert ppl == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-4)


class _HashEncoder:
    """A deterministic toy sentence encoder: a vector per text from its characters (not normalised)."""

    def embed(self, texts):
        out = torch.zeros(len(texts), 8)
        for i, t in enumerate(texts):
            for j, ch in enumerate(t):
                out[i, (ord(ch) + j) % 8] += 1.0 + (j % 3)
        return out


def test_coherence_is_the_cosine_of_prompt_and_response_embeddings():
    enc = _HashEncoder()
    prompts, responses = ["how do I run", "hello"], ["run slowly every day", "hello"]
    got = metrics.coherence(enc, prompts, responses)
    for p, r, c in zip(prompts, responses, got):
        direct = torch.nn.functional.cosine_similarity(enc.embed([p]), enc.embed([r]))[0]
        assert c == pytest.approx(float(direct), abs=1e-6)
    assert got[1] == pytest.approx(1.0, abs=1e-6)


def test_the_rewards_encoder_is_reused():
    class EmbeddingReward(_HashEncoder):
        def __call__(self, prompts, responses):
            return torch.zeros(len(responses))

    r = EmbeddingReward()
    assert metrics.text_encoder(r) is r


class _CountWithEncoder(_tiny.SoftCountReward):
    embed = _HashEncoder.embed


@pytest.mark.parametrize("method", ["aisp", "bon"])
def test_every_method_attaches_metrics(method):
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    reward = _CountWithEncoder()
    prompts = _tiny.PROMPTS[:2]
    if method == "aisp":
        out = aisp_generate(model, tok, prompts, reward, n=3, iterations=2, max_new_tokens=5, backend="torch",
                            with_base=True, progress=False)
    else:
        out = bon_generate(model, tok, prompts, reward, n=4, max_new_tokens=5, with_base=True, progress=False)
    enc = _common.EncodedPrompts.from_texts(model, tok, prompts, chat_template=None, device=torch.device("cpu"))
    base_ids = [tok(r.base_response)["input_ids"] for r in out]
    ppl = metrics.perplexities(model, enc.input_ids, enc.attention_mask, [0, 1, 0, 1],
                               [r.response_ids for r in out] + base_ids)
    for b, res in enumerate(out):
        m = res.metrics
        assert m["perplexity"] == pytest.approx(ppl[b], rel=1e-5, nan_ok=True)
        assert m["base_perplexity"] == pytest.approx(ppl[2 + b], rel=1e-5, nan_ok=True)
        assert m["coherence"] == pytest.approx(metrics.coherence(reward, [res.prompt], [res.response])[0], abs=1e-6)
        assert 0.0 <= m["distinct_2"] <= 1.0 and res.to_dict()["metrics"] == m
    skipped = bon_generate(model, tok, prompts, reward, n=2, max_new_tokens=3, progress=False, metrics=False)
    assert skipped[0].metrics == {}


def test_distinct_counts_every_candidate_of_a_prompt():
    """Best-of-N with temperature 0: all n samples are the greedy response, so distinct-2 over the n
    candidates is that of n copies of it."""
    model, tok = _tiny.model("llama"), _tiny.tokenizer()
    res = bon_generate(model, tok, _tiny.PROMPTS[0], _CountWithEncoder(), n=3, temperature=0.0, max_new_tokens=6,
                       progress=False)
    assert res.metrics["distinct_2"] == pytest.approx(metrics.distinct_n([res.response] * 3, 2))
    assert "base_perplexity" not in res.metrics  # no base response without with_base
