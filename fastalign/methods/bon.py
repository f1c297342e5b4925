"""Best-of-N: sample N responses per prompt from the base model, keep the one the reward likes best.

The honest baseline for AISP: AISP with ``n`` rollouts x ``K`` iterations scores ``n*K`` responses per
prompt, the same number of reward calls as Best-of-``(n*K)``.

Sampling (temperature, nucleus ``top_p``) draws its uniforms from the fastalign Philox stream: sample
``i`` of a prompt at decode step ``t`` uses ``uniform(stream_seed, i * max_new_tokens + t)``, where the
stream seed hashes ``(seed, prompt text)`` (:func:`fastalign.engine.sampling.stream_seeds`). So a prompt's samples
do not depend on the batch it is in, nor on ``batch_size``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from fastalign.methods import _common

from fastalign.engine import encoding, sampling

from fastalign import engine
from fastalign.errors import InputError
from fastalign.methods.results import BestSoFar, fmt
from fastalign.scoring.rewards import call_reward

__all__ = ["bon_generate", "run", "BonSettings"]


@dataclass(frozen=True)
class BonSettings:
    """Validated settings of one Best-of-N call (see :func:`bon_generate` for each)."""

    n: int
    temperature: float
    top_p: float
    top_k: int
    seed: object
    max_new_tokens: int
    batch_size: int
    compile: bool = False
    kl_coef: float = 0.0

    @classmethod
    def check(cls, *, n, temperature, top_p, top_k, seed, max_new_tokens, batch_size, compile=False,
              kl_coef=0.0) -> "BonSettings":
        top_p = _common.check_float(top_p, "top_p", lo=0.0, hi=1.0)
        if top_p == 0.0:
            raise InputError("top_p: expected a value in (0, 1], got 0.0")
        return cls(n=_common.check_int(n, "n"),
                   temperature=_common.check_float(temperature, "temperature", lo=0.0, hi=math.inf),
                   top_p=top_p, top_k=_common.check_int(top_k or 0, "top_k", lo=0), seed=seed,
                   max_new_tokens=_common.check_int(max_new_tokens, "max_new_tokens"),
                   batch_size=_common.check_int(batch_size, "batch_size"), compile=bool(compile),
                   kl_coef=_common.check_kl_coef(kl_coef))


def bon_generate(model, tokenizer, prompts, reward, *, n: int = 32, temperature: float = 1.0, top_p: float = 1.0,
                 top_k: int | None = None, seed=0, max_new_tokens: int = 128, batch_size: int = 64,
                 chat_template: bool | None = None, with_base: bool = False, compile: bool = False,
                 kl_coef: float = 0.0, progress: bool = True, metrics: bool = True, truncate_prompt: bool = False):
    """Best-of-``n`` sampling.

    Args:
        model, tokenizer, prompts, reward: as in :func:`fastalign.methods.aisp.aisp_generate`.
        n: samples per prompt (= reward calls per prompt).
        temperature: sampling temperature (0 is greedy, which makes every sample identical).
        top_p: nucleus sampling mass (1.0: plain sampling).
        top_k: sample among the k most likely tokens only (None or 0: all).
        seed: int or one int per prompt (hashed with the prompt text).
        max_new_tokens: generation length limit; EOS ends a sample earlier.
        batch_size: sequences decoded together (all prompts); each round decodes
            ``max(1, batch_size // B)`` samples of every prompt.
        with_base: also decode and score the greedy response (not counted in ``reward_calls``).
        compile: run the rounds' decode step compiled (see :func:`fastalign.methods.aisp.aisp_generate`).
        kl_coef: pick the sample with the highest ``reward + kl_coef * mean_t log p_base(y_t | x, y_<t)``
            (the objective of :func:`fastalign.methods.aisp.aisp_generate`; the log-probabilities come from the
            sampling step's own logits, before temperature and top-p); 0: the highest raw reward.
        metrics: attach text-quality metrics to each result (:mod:`fastalign.scoring.metrics`: base-model
            perplexity of the best and the greedy response, coherence, distinct-2/3 over every scored
            candidate).
        progress: one line per round on stderr.
        truncate_prompt: what a prompt past the model's context does: raise before any forward (False)
            or keep its last tokens that fit, with a warning (see :func:`fastalign.methods.aisp.aisp_generate`).

    Returns:
        one :class:`fastalign.methods.results.AlignResult` for a single prompt string, else a list; the trace has
        one (mean, max) entry per round of samples.
    """
    single = isinstance(prompts, str)
    prompts = encoding.check_prompts(prompts)
    settings = BonSettings.check(n=n, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                                 max_new_tokens=max_new_tokens, batch_size=batch_size, compile=compile,
                                 kl_coef=kl_coef)
    encoded = _common.encode_call(model, tokenizer, prompts, reward, None, chat_template=chat_template,
                                  max_new_tokens=settings.max_new_tokens, truncate_prompt=truncate_prompt)
    results = run(model, tokenizer, encoded, reward, settings, with_base=with_base, progress=progress, metrics=metrics)
    return _common.call_results(results, encoded, single)


def run(model, tokenizer, encoded: _common.EncodedPrompts, reward, settings: BonSettings, *, with_base: bool = False,
        progress: bool = True, metrics: bool = True) -> list:
    """Best-of-N on already encoded prompts (what :func:`bon_generate` and :mod:`fastalign.hf` share)."""
    st = settings
    device = encoded.input_ids.device
    say = _common.Progress(progress, "bon")
    t0 = time.perf_counter()
    prompts = encoded.texts
    B = len(prompts)
    seeds = torch.tensor(sampling.stream_seeds(st.seed, prompts), dtype=torch.int64)
    per_round = max(1, min(st.n, st.batch_size // B))
    rounds = math.ceil(st.n / per_round)
    best = BestSoFar(B)
    with engine.eval_mode(model):
        encoded.prefill(model)
        base_texts = base_rewards = base_ids = None
        if with_base:
            base_texts, base_rewards, base_ids = _common.greedy_baseline(model, tokenizer, reward, encoded,
                                                               max_new_tokens=st.max_new_tokens)
        with _common.compiled_step(model, encoded, st.compile, repeats=per_round,
                                   max_new_tokens=st.max_new_tokens) as step:
            for rnd in range(rounds):
                start = rnd * per_round
                m = min(per_round, st.n - start)
                sample_idx = torch.arange(start, start + m, dtype=torch.int64, device=device).repeat(B)  # [B*m]
                row_seeds = seeds.to(device).repeat_interleave(m)

                def choose(logits, step, active, sample_idx=sample_idx, row_seeds=row_seeds):
                    offsets = sample_idx * st.max_new_tokens + step
                    return sampling.sample_tokens(logits, row_seeds, offsets, temperature=st.temperature,
                                                  top_p=st.top_p, top_k=st.top_k)

                # a shorter last round runs eagerly (the compiled step has a fixed batch)
                roll = encoded.decode(model, repeats=m, max_new_tokens=st.max_new_tokens, choose=choose,
                                      compiled=step if m == per_round else None, base_logprobs=st.kl_coef > 0)
                texts, id_lists = encoded.responses(tokenizer, roll)
                rewards = call_reward(reward, [p for p in prompts for _ in range(m)], texts).view(B, m)
                goal = _common.objective(rewards, roll.mean_base_logprob, st.kl_coef)
                best.update(rewards, texts, id_lists, goal)
                say(f"round {rnd + 1}/{rounds} ({start + m}/{st.n} samples): best "
                    + ", ".join(fmt(x) for x in best.reward) + f" ({time.perf_counter() - t0:.1f} s)")

    seconds = time.perf_counter() - t0
    results = [
        best.result(
            b, prompt=prompts[b], method="bon", reward_calls=st.n, seconds=seconds,
            base_response=base_texts[b] if base_texts is not None else None,
            base_reward=base_rewards[b] if base_rewards is not None else None,
            extra={"n": st.n, "temperature": st.temperature, "top_p": st.top_p, "top_k": st.top_k,
                   "stream_seed": int(seeds[b]), "kl_coef": st.kl_coef},
        )
        for b in range(B)
    ]
    if metrics:
        _common.attach_metrics(model, encoded, reward, results, base_ids, best.candidates)
    return results
