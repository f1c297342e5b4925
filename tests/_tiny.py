"""Tiny randomly initialised causal LMs and a word-level tokenizer, built offline for the algorithm tests.

Every model has 2 layers and hidden size 32, so a whole AISP/SEA run takes well under a second.
The vocabulary is ``<pad> <eos> <unk>`` plus the words ``w0 .. w{N-1}``; text is whitespace-separated
words, so a response decodes to e.g. ``"w3 w17 w3"``.
"""
from __future__ import annotations

import functools

import torch

N_WORDS = 61
SPECIALS = ["<pad>", "<eos>", "<unk>"]
VOCAB_SIZE = len(SPECIALS) + N_WORDS
HIDDEN = 32

ARCHES = ("llama", "qwen2", "gpt2", "gemma2")


@functools.lru_cache(maxsize=None)
def tokenizer():
    """A ``PreTrainedTokenizerFast`` over the words ``w0 .. w60`` (no download)."""
    return word_tokenizer(tuple(f"w{i}" for i in range(N_WORDS)))


@functools.lru_cache(maxsize=None)
def word_tokenizer(words: tuple[str, ...]):
    """A word-level ``PreTrainedTokenizerFast``: ids 0-2 are ``<pad> <eos> <unk>``, then ``words``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", padding_side="left")


def config(arch: str):
    import transformers as T

    common = dict(vocab_size=VOCAB_SIZE, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    if arch == "llama":
        return T.LlamaConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=256, **common)
    if arch == "qwen2":
        return T.Qwen2Config(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=256, **common)
    if arch == "gpt2":
        return T.GPT2Config(n_embd=HIDDEN, n_layer=2, n_head=4, n_positions=256, **common)
    if arch == "gemma2":
        return T.Gemma2Config(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                              final_logit_softcapping=3.0, attn_logit_softcapping=50.0, sliding_window=64,
                              **common)
    raise ValueError(f"unknown tiny arch {arch!r}")


@functools.lru_cache(maxsize=None)
def model(arch: str = "llama", seed: int = 0):
    """A tiny random causal LM of ``arch`` in eval mode (cached: do not modify it in a test).

    The output head is scaled up so that its logits spread over a few units, like a trained model's,
    instead of the near-uniform logits of a fresh initialisation.
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(config(arch), attn_implementation="eager")
    with torch.no_grad():
        head = m.get_output_embeddings()
        if m.config.tie_word_embeddings:
            m.config.tie_word_embeddings = False
            head.weight = torch.nn.Parameter(head.weight.detach().clone())
        head.weight.normal_(0.0, 0.3)
    m.generation_config.eos_token_id = 1
    m.generation_config.pad_token_id = 0
    return m.eval()


PROMPTS = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10", "w11 w12", "w13 w14 w15 w16"]


def count_reward(word: str = "w7"):
    """A synthetic reward: how often ``word`` occurs in the response."""

    def reward(prompts, responses):
        return torch.tensor([float(r.split().count(word)) for r in responses])

    return reward


class SoftCountReward:
    """``count_reward(word)`` with a differentiable form for SEA: the expected count of ``word`` under
    the soft response, ``sum_l probs[l, id(word)]`` over the first ``lengths`` positions."""

    def __init__(self, word: str = "w7"):
        self.word = word
        self.token_id = tokenizer().convert_tokens_to_ids(word)
        self._hard = count_reward(word)

    def __call__(self, prompts, responses):
        return self._hard(prompts, responses)

    def soft_reward_fn(self, model, tok):
        token_id = self.token_id

        def soft(prompts, probs, lengths):
            mask = torch.arange(probs.shape[1], device=probs.device).unsqueeze(0) < lengths.to(probs.device).unsqueeze(1)
            return (probs[:, :, token_id] * mask).sum(-1)

        soft.is_soft_reward = True
        return soft


def backend_params():
    """pytest params for the algorithm tests: the reference ``torch`` backend and the fused ``cpu``
    backend (skipped, with the reason, where its extension cannot build)."""
    import pytest

    import fastalign as fa

    reason = fa.available_backends("cpu").get("cpu")
    marks = [] if reason is None else [pytest.mark.skip(reason=f"cpu backend cannot run: {reason}")]
    return [pytest.param("torch", id="torch"), pytest.param("cpu", id="cpu", marks=marks)]
