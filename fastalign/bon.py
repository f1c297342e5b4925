"""Best-of-N: sample N responses per prompt from the base model, keep the one the reward likes best.

The honest baseline for AISP: AISP with ``n`` rollouts x ``K`` iterations scores ``n*K`` responses per
prompt, the same number of reward calls as Best-of-``(n*K)``.

Sampling (temperature, nucleus ``top_p``) draws its uniforms from the fastalign Philox stream: sample
``i`` of a prompt at decode step ``t`` uses ``uniform(stream_seed, i * max_new_tokens + t)``, where the
stream seed hashes ``(seed, prompt text)`` (:func:`fastalign.sampling.stream_seeds`). So a prompt's samples
do not depend on the batch it is in, nor on ``batch_size``.
"""
from __future__ import annotations

import math
import time

import torch

from fastalign import _common, encoding, engine, sampling
from fastalign.results import BestSoFar, fmt
from fastalign.rewards import call_reward

__all__ = ["bon_generate"]


def bon_generate(model, tokenizer, prompts, reward, *, n: int = 32, temperature: float = 1.0, top_p: float = 1.0,
                 seed=0, max_new_tokens: int = 128, batch_size: int = 64, chat_template: bool | None = None,
                 with_base: bool = False, progress: bool = True):
    """Best-of-``n`` sampling.

    Args:
        model, tokenizer, prompts, reward: as in :func:`fastalign.aisp.aisp_generate`.
        n: samples per prompt (= reward calls per prompt).
        temperature: sampling temperature (0 is greedy, which makes every sample identical).
        top_p: nucleus sampling mass (1.0: plain sampling).
        seed: int or one int per prompt (hashed with the prompt text).
        max_new_tokens: generation length limit; EOS ends a sample earlier.
        batch_size: sequences decoded together (all prompts); each round decodes
            ``max(1, batch_size // B)`` samples of every prompt.
        with_base: also decode and score the greedy response (not counted in ``reward_calls``).
        progress: one line per round on stderr.

    Returns:
        one :class:`fastalign.results.AlignResult` for a single prompt string, else a list; the trace has
        one (mean, max) entry per round of samples.
    """
    single = isinstance(prompts, str)
    prompts = encoding.check_prompts(prompts)
    n = _common.check_int(n, "n")
    max_new_tokens = _common.check_int(max_new_tokens, "max_new_tokens")
    batch_size = _common.check_int(batch_size, "batch_size")
    temperature = _common.check_float(temperature, "temperature", lo=0.0, hi=math.inf)
    top_p = _common.check_float(top_p, "top_p", lo=0.0, hi=1.0)
    if top_p == 0.0:
        raise ValueError("top_p: expected a value in (0, 1], got 0.0")
    if not callable(reward):
        raise TypeError(f"reward: expected a callable f(prompts, responses) -> tensor, got {type(reward).__name__}")
    engine.model_interface(model)  # a model the engine cannot decode is rejected before any work
    device = engine.input_device(model)  # where the inputs and the logits are
    say = _common.Progress(progress, "bon")
    t0 = time.perf_counter()

    B = len(prompts)
    seeds = torch.tensor(sampling.stream_seeds(seed, prompts), dtype=torch.int64)
    per_round = max(1, min(n, batch_size // B))
    rounds = math.ceil(n / per_round)
    best = BestSoFar(B)
    with engine.eval_mode(model):
        encoded = _common.encode_and_prefill(model, tokenizer, prompts, chat_template=chat_template, device=device)
        base_texts = base_rewards = None
        if with_base:
            base_texts, base_rewards = _common.greedy_baseline(model, tokenizer, reward, encoded,
                                                               max_new_tokens=max_new_tokens)
        for rnd in range(rounds):
            start = rnd * per_round
            m = min(per_round, n - start)
            sample_idx = torch.arange(start, start + m, dtype=torch.int64, device=device).repeat(B)  # [B*m]
            row_seeds = seeds.to(device).repeat_interleave(m)

            def choose(logits, step, active, sample_idx=sample_idx, row_seeds=row_seeds):
                offsets = sample_idx * max_new_tokens + step
                return sampling.sample_tokens(logits, row_seeds, offsets, temperature=temperature, top_p=top_p)

            roll = encoded.decode(model, repeats=m, max_new_tokens=max_new_tokens, choose=choose)
            texts, id_lists = encoded.responses(tokenizer, roll)
            rewards = call_reward(reward, [p for p in prompts for _ in range(m)], texts).view(B, m)
            best.update(rewards, texts, id_lists)
            say(f"round {rnd + 1}/{rounds} ({start + m}/{n} samples): best "
                + ", ".join(fmt(x) for x in best.reward) + f" ({time.perf_counter() - t0:.1f} s)")

    seconds = time.perf_counter() - t0
    results = [
        best.result(
            b, prompt=prompts[b], method="bon", reward_calls=n, seconds=seconds,
            base_response=base_texts[b] if base_texts is not None else None,
            base_reward=base_rewards[b] if base_rewards is not None else None,
            extra={"n": n, "temperature": temperature, "top_p": top_p, "stream_seed": int(seeds[b])},
        )
        for b in range(B)
    ]
    return results[0] if single else results
