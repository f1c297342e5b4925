"""AISP — adaptive importance sampling on pre-logits (arXiv 2510.26219) over any Hugging Face causal LM.

For each prompt a control ``u [tau, d]`` (float32, zero at the start) shifts the decoder's final
normalised hidden state at the first ``tau`` decode steps. Each iteration decodes ``n`` rollouts per
prompt greedily with the pre-logits ``h_t + u_t + sigma * eps_{i,t}`` (``eps`` from the fastalign Philox
stream, never stored), scores them with the reward, and moves ``u`` towards the importance-weighted
mean of the noise (:func:`fastalign.ops.aisp_update`). The best response seen is returned.

Mechanics:

* The perturbation is applied to the output head's *input* by a forward-pre-hook, so the logits come
  from the model's own forward (Gemma-2's final soft-capping and the like still apply) and the KV
  cache is unchanged (it holds keys/values of the layers, which the head input does not feed).
* B prompts x n rollouts are decoded together (left padding, attention masks, the KV cache). Each
  step calls :func:`fastalign.ops.aisp_perturb` once for all of them with ``udot`` (the by-product
  ``sum_t u_t . eps_{i,t}``) and ``active`` (rollouts that have not emitted EOS), so the update after
  the iteration regenerates the noise once, in a single pass. EOS ends a rollout and sets its length
  for the update (steps after it contributed nothing). State is O(B * tau * d): there is never a
  ``[B, n, tau, d]`` noise tensor.
* Seeds: each prompt's stream seed is derived from ``(seed, prompt text)`` with a stable hash
  (:func:`fastalign.sampling.stream_seeds`), so a prompt gives the same response alone or inside any
  batch, whatever its position. ``seed`` may also be a list with one int per prompt.

Defaults are the paper's (n=32, K=32 iterations, sigma=0.5 — the paper's best — lam=0.3,
alpha=0.999). The weights are ``softmax(r / lam - ...)``, so ``lam`` only means something relative to
the spread of the rewards: with a cosine-similarity reward (spread ~0.05 on SmolLM2-135M) lam=0.3
gives near-uniform weights and no learning, while lam=0.02 learns (DESIGN.md section 6).
``normalize_rewards=True`` z-scores each prompt's n rewards before dividing by ``lam`` (then lam ~0.5
is a sensible scale whatever the reward); the default keeps the paper's raw form.
"""
from __future__ import annotations

import time

import torch

from fastalign import _common, encoding, engine, ops, sampling
from fastalign.results import BestSoFar, fmt
from fastalign.rewards import call_reward

__all__ = ["aisp_generate", "standardize_rewards"]


def standardize_rewards(rewards: torch.Tensor) -> torch.Tensor:
    """Z-score each row of ``rewards [B, n]`` over its finite entries (``-inf`` stays ``-inf``; a row
    with no spread becomes zeros)."""
    r = rewards.to(torch.float64)
    finite = torch.isfinite(r)
    cnt = finite.sum(-1, keepdim=True).clamp_min(1)
    r0 = torch.where(finite, r, torch.zeros_like(r))
    mean = r0.sum(-1, keepdim=True) / cnt
    var = (torch.where(finite, (r - mean) ** 2, torch.zeros_like(r))).sum(-1, keepdim=True) / cnt
    std = var.sqrt()
    z = torch.where(std > 0, (r - mean) / torch.where(std > 0, std, torch.ones_like(std)), torch.zeros_like(r))
    return torch.where(finite, z, r)


def _head_width(head: torch.nn.Module) -> int:
    width = getattr(head, "in_features", None)
    if width is None:
        width = head.weight.shape[1]
    return int(width)


def _update_control(u, rewards, lengths, udot, *, normalize_rewards, sigma, lam, alpha, seeds, iteration,
                    backend) -> torch.Tensor:
    """One importance-sampling update of ``u [B, tau, d]`` from the iteration's ``rewards [B, n]``; a prompt
    whose every rollout was rejected (-inf) keeps its control."""
    device = u.device
    used = standardize_rewards(rewards) if normalize_rewards else rewards
    hopeless = torch.isneginf(used).all(dim=1)
    used = torch.where(hopeless.unsqueeze(1), torch.zeros_like(used), used)
    u_new, _ = ops.aisp_update(u, used.to(device=device, dtype=torch.float32), sigma=sigma, lam=lam, alpha=alpha,
                               seed=seeds, iteration=iteration, lengths=lengths, udot=udot, backend=backend)
    if bool(hopeless.any()):
        u_new[hopeless.to(device)] = u[hopeless.to(device)]
    return u_new


def aisp_generate(model, tokenizer, prompts, reward, *, n: int = 32, iterations: int = 32, sigma: float = 0.5,
                  lam: float = 0.3, alpha: float = 0.999, horizon: int | None = None, max_new_tokens: int = 128,
                  normalize_rewards: bool = False, seed=0, backend: str | None = None,
                  chat_template: bool | None = None, with_base: bool = False, progress: bool = True):
    """Align responses to ``prompts`` with AISP.

    Args:
        model: a Hugging Face causal LM (anything with ``get_output_embeddings()``; Llama, Qwen2, GPT-2,
            Gemma(-2) and the like). Used in eval mode, under ``torch.no_grad``.
        tokenizer: its tokenizer. Prompts go through its chat template when it has one
            (``chat_template=False`` to feed raw text).
        prompts: a string or a list of B strings.
        reward: ``reward(prompts, responses) -> [N]`` (see :mod:`fastalign.rewards`).
        n: rollouts per prompt and iteration (paper: 32).
        iterations: K, number of importance-sampling iterations (paper: 32).
        sigma: noise scale on the pre-logits (paper's best: 0.5).
        lam: temperature of the importance weights ``softmax(r / lam - ...)`` (paper: 0.3); see the
            module docstring on reward scale.
        alpha: prior strength in the weights, ``(1 - alpha)/sigma * udot`` (paper: 0.999).
        horizon: tau, number of leading decode steps that are controlled (default: ``max_new_tokens``).
        max_new_tokens: generation length limit; EOS ends a rollout earlier.
        normalize_rewards: z-score each prompt's n rewards before dividing by ``lam``.
        seed: int, or one int per prompt; each prompt's stream seed hashes it with the prompt text.
        backend: fused-op backend (None: ``$FASTALIGN_BACKEND``, else ``"auto"``).
        with_base: also decode the greedy unperturbed response and score it (``base_response``,
            ``base_reward``; not counted in ``reward_calls``).
        progress: one line per iteration on stderr.

    Returns:
        :class:`fastalign.results.AlignResult` for a single prompt string, else a list of them (one per
        prompt): best response over all ``n * iterations`` rollouts, its reward, the per-iteration
        reward trace (mean and max over the n rollouts), ``reward_calls = n * iterations``, wall-clock.
    """
    single = isinstance(prompts, str)
    prompts = encoding.check_prompts(prompts)
    n = _common.check_int(n, "n")
    iterations = _common.check_int(iterations, "iterations")
    max_new_tokens = _common.check_int(max_new_tokens, "max_new_tokens")
    sigma = _common.check_float(sigma, "sigma", positive=True)
    lam = _common.check_float(lam, "lam", positive=True)
    alpha = _common.check_float(alpha, "alpha", lo=0.0, hi=1.0)
    tau = max_new_tokens if horizon is None else _common.check_int(horizon, "horizon")
    if tau > max_new_tokens:
        raise ValueError(f"horizon: expected 1 <= horizon <= max_new_tokens={max_new_tokens}, got {tau}")
    if not callable(reward):
        raise TypeError(f"reward: expected a callable f(prompts, responses) -> tensor, got {type(reward).__name__}")
    engine.model_interface(model)  # a model the engine cannot decode is rejected before any work
    head = engine.output_head(model)
    d = _head_width(head)
    device = head.weight.device
    _common.check_backend(backend, device)
    say = _common.Progress(progress, "aisp")
    t0 = time.perf_counter()

    B = len(prompts)
    seeds = torch.tensor(sampling.stream_seeds(seed, prompts), dtype=torch.int64, device=device)
    prompts_rep = [p for p in prompts for _ in range(n)]
    with engine.eval_mode(model):
        encoded = _common.encode_and_prefill(model, tokenizer, prompts, chat_template=chat_template, device=device)
        base_texts = base_rewards = None
        if with_base:
            base_texts, base_rewards = _common.greedy_baseline(model, tokenizer, reward, encoded,
                                                               max_new_tokens=max_new_tokens)

        u = torch.zeros(B, tau, d, dtype=torch.float32, device=device)
        best = BestSoFar(B)
        for it in range(iterations):
            udot = torch.zeros(B, n, dtype=torch.float32, device=device)

            def perturb(h, step, active, it=it, udot=udot):
                if step >= tau:
                    return h
                z = ops.aisp_perturb(h.reshape(B, n, d), u, sigma=sigma, seed=seeds, iteration=it, step=step,
                                     udot=udot, active=active.view(B, n), backend=backend)
                return z.view(B * n, d)

            roll = encoded.decode(model, repeats=n, max_new_tokens=max_new_tokens, transform=perturb)
            texts, id_lists = encoded.responses(tokenizer, roll)
            rewards = call_reward(reward, prompts_rep, texts).view(B, n)
            lengths = roll.lengths.clamp_max(tau).view(B, n).to(device)
            u = _update_control(u, rewards, lengths, udot, normalize_rewards=normalize_rewards, sigma=sigma,
                                lam=lam, alpha=alpha, seeds=seeds, iteration=it, backend=backend)
            best.update(rewards, texts, id_lists)
            say(f"iteration {it + 1}/{iterations}: mean reward "
                + ", ".join(fmt(best.trace_mean[b][-1]) for b in range(B)) + "; best "
                + ", ".join(fmt(best.reward[b]) for b in range(B))
                + f" ({time.perf_counter() - t0:.1f} s)")

    seconds = time.perf_counter() - t0
    results = [
        best.result(
            b, prompt=prompts[b], method="aisp", reward_calls=n * iterations, seconds=seconds,
            base_response=base_texts[b] if base_texts is not None else None,
            base_reward=base_rewards[b] if base_rewards is not None else None,
            extra={"n": n, "iterations": iterations, "sigma": sigma, "lam": lam, "alpha": alpha, "horizon": tau,
                   "normalize_rewards": bool(normalize_rewards), "stream_seed": int(seeds[b])},
        )
        for b in range(B)
    ]
    return results[0] if single else results
