"""SEA — Simple Energy Adaptation (arXiv 2505.20081): gradient-based sampling of response logits.

A response of ``L`` tokens is represented by logits ``y [L, V]`` (one chain; B prompts x ``chains``
chains are optimised together as ``y [N, L, V]``). Soft tokens are ``q = softmax(y / soft_temp)`` and
their embeddings ``q @ E`` (E: the base model's input embedding matrix). SEA lowers the energy

    energy(y) = -reward_weight * r_soft(q) + flu_weight * fluency(q)

where ``r_soft`` is a reward differentiable in the soft response (:mod:`fastalign.rewards`) and
``fluency`` is the cross-entropy ``-sum_v p_base(v | prompt, q_<l) log q_l(v)`` between the base model's
next-token distributions along the soft response and the soft tokens, averaged over positions (the
COLD-decoding fluency term that SEA's code inherits). Each step is one fused
:func:`fastalign.ops.sea_step` (gradient-norm clipping + Adam/SGLD update + noise). The response is
decoded by argmax of ``y`` (optionally by re-ranking the top-k tokens of ``y`` with the base model).

Initialisation: a response is sampled from the base model (temperature ``init_sample_temp``, from the
fastalign stream of the chain) and ``y`` starts at the base model's logits along it divided by
``init_temp`` (sharper than the base distribution); positions after the sampled response's EOS are
not optimised.

Noise: by default at the *evaluation point* (the gradient is taken at ``y + std_s * xi`` drawn by
:func:`fastalign.ops.gaussian_perturb`, and ``sea_step`` runs with ``noise_std=0``), as the SEA / COLD
code does; ``noise="langevin"`` adds it in the update instead (``sea_step(noise_std=std_s)``);
never both. ``noise_std`` is a constant or a ``(start, end)`` pair annealed geometrically over steps.

Defaults and where they come from:

* ``optimizer="adam"``, ``lr=0.1``: the SEA authors' code optimises the logits with Adam; lr=0.1,
  ``steps=40``, ``reward_weight=50``, ``flu_weight=1``, ``init_temp=0.5``, eval-point noise annealed
  ``0.1 -> 0.001`` and 32 response tokens are what worked on SmolLM2-135M with the all-MiniLM cosine
  reward (DESIGN.md section 6: decoded reward 0.12 -> 0.31 and 0.05 -> 0.25 on two prompts).
* ``max_norm=1.0`` with ``clip="chain"``: per-chain gradient clipping, the issue's default (the
  SEA paper clips gradients; clipping per chain keeps chains independent of each other).
* ``soft_temp=1.0``: soft tokens are the plain softmax of the logits.
"""
from __future__ import annotations

import math
import time

import torch

from fastalign import _common
from fastalign import encoding
from fastalign import engine
from fastalign.results import AlignResult, fmt
from fastalign.rewards import as_soft_reward, call_reward
from fastalign import sampling
from fastalign import ops

__all__ = ["sea_generate", "noise_schedule"]


def noise_schedule(noise_std, steps: int) -> list[float]:
    """Per-step noise std: a constant, or ``(start, end)`` annealed geometrically (linearly if an end is 0)."""
    if isinstance(noise_std, (tuple, list)):
        if len(noise_std) != 2:
            raise ValueError(f"noise_std: expected a number or a pair (start, end), got {noise_std!r}")
        a = _common.check_float(noise_std[0], "noise_std[0]", lo=0.0, hi=math.inf)
        b = _common.check_float(noise_std[1], "noise_std[1]", lo=0.0, hi=math.inf)
        if steps == 1:
            return [a]
        if a > 0 and b > 0:
            return [a * (b / a) ** (s / (steps - 1)) for s in range(steps)]
        return [a + (b - a) * s / (steps - 1) for s in range(steps)]
    c = _common.check_float(noise_std, "noise_std", lo=0.0, hi=math.inf)
    return [c] * steps


def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp_min(0)


def sea_generate(model, tokenizer, prompts, reward, *, chains: int = 1, steps: int = 40, lr: float = 0.1,
                 optimizer: str = "adam", noise: str = "eval", noise_std=(0.1, 0.001), max_norm: float | None = 1.0,
                 clip: str | None = "chain", init_temp: float = 0.5, init_sample_temp: float = 1.0,
                 soft_temp: float = 1.0, flu_weight: float = 1.0, reward_weight: float = 50.0,
                 max_new_tokens: int = 32, rerank_top_k: int | None = None, eval_every: int | None = None,
                 soft_reward=None, seed=0, backend: str | None = None, chat_template: bool | None = None,
                 progress: bool = True):
    """Align responses to ``prompts`` with SEA.

    Args:
        model, tokenizer, prompts: as in :func:`fastalign.aisp.aisp_generate`.
        reward: the string reward ``reward(prompts, responses) -> [N]``, used to score decoded
            responses; unless ``soft_reward`` is given it must also provide the differentiable form
            (``reward.soft_reward_fn(model, tokenizer)``, see :func:`fastalign.rewards.as_soft_reward`).
        chains: independent chains per prompt (each from its own sampled initial response).
        steps: optimisation steps (40).
        lr: step size (Adam 0.1).
        optimizer: ``"adam"`` (the SEA authors' code) or ``"sgld"``.
        noise: ``"eval"`` (noise at the evaluation point), ``"langevin"`` (in the update) or ``"none"``.
        noise_std: constant or ``(start, end)`` annealed geometrically (0.1 -> 0.001).
        max_norm, clip: gradient clipping (``clip`` in "chain", "row", "global"; ``max_norm=None``: none).
        init_temp: ``y`` starts at the base logits along the sampled response divided by this (0.5).
        init_sample_temp: temperature of the initial sample (1.0; 0 for the greedy response).
        soft_temp: soft tokens are ``softmax(y / soft_temp)`` (1.0).
        flu_weight, reward_weight: energy weights (1 and 50).
        max_new_tokens: response length L (32).
        rerank_top_k: also decode by re-ranking the top-k tokens of ``y`` at each position with the
            base model (greedy over that candidate set) and keep the better-scoring response.
        eval_every: also decode and score the responses every this many steps (more reward calls;
            the initial and final responses are always scored).
        soft_reward: the differentiable reward ``soft(prompts, probs [N, L, V], lengths [N]) -> [N]``.
        seed: int or one int per prompt; chain c of a prompt hashes (seed, prompt, c).
        backend: fused-op backend for ``sea_step`` / ``gaussian_perturb``.
        progress: a line per evaluation on stderr.

    Returns:
        :class:`fastalign.results.AlignResult` (a list for a list of prompts): the best final response over
        the prompt's chains, its reward, ``base_response`` / ``base_reward`` (the first chain's sampled
        initial response), the decoded-reward trace (mean/max over chains per evaluation) and in
        ``extra``: ``energy``, ``soft_reward``, ``fluency`` (mean over chains per step, at the evaluation
        point) and ``grad_norm`` (per step, one value per chain of the prompt: its clip-group norm, the largest
        row norm for ``clip="row"``, the global norm for ``clip="global"``).
    """
    single = isinstance(prompts, str)
    prompts = encoding.check_prompts(prompts)
    chains = _common.check_int(chains, "chains")
    steps = _common.check_int(steps, "steps", lo=0)
    max_new_tokens = _common.check_int(max_new_tokens, "max_new_tokens")
    lr = _common.check_float(lr, "lr", lo=0.0, hi=math.inf)
    init_temp = _common.check_float(init_temp, "init_temp", positive=True)
    init_sample_temp = _common.check_float(init_sample_temp, "init_sample_temp", lo=0.0, hi=math.inf)
    soft_temp = _common.check_float(soft_temp, "soft_temp", positive=True)
    flu_weight = _common.check_float(flu_weight, "flu_weight", lo=0.0, hi=math.inf)
    reward_weight = _common.check_float(reward_weight, "reward_weight", lo=0.0, hi=math.inf)
    if optimizer not in ("adam", "sgld"):
        raise ValueError(f"optimizer: expected 'adam' or 'sgld', got {optimizer!r}")
    if noise not in ("eval", "langevin", "none"):
        raise ValueError(f"noise: expected 'eval', 'langevin' or 'none', got {noise!r}")
    if clip not in ("chain", "row", "global", None):
        raise ValueError(f"clip: expected 'chain', 'row', 'global' or None, got {clip!r}")
    if clip is None:
        max_norm = None
    elif max_norm is not None:
        max_norm = _common.check_float(max_norm, "max_norm", positive=True)
    stds = noise_schedule(noise_std, max(steps, 1)) if noise != "none" else [0.0] * max(steps, 1)
    if rerank_top_k is not None:
        rerank_top_k = _common.check_int(rerank_top_k, "rerank_top_k")
    if eval_every is not None:
        eval_every = _common.check_int(eval_every, "eval_every")
    if not callable(reward):
        raise TypeError(f"reward: expected a callable f(prompts, responses) -> tensor, got {type(reward).__name__}")
    engine.output_head(model)
    soft = soft_reward if soft_reward is not None else as_soft_reward(reward, model, tokenizer)
    E, emb_scale = engine.input_embedding(model)
    emb_module = model.get_input_embeddings()
    device = E.device
    _common.check_backend(backend, device)
    say = _common.Progress(progress, "sea")
    t0 = time.perf_counter()

    B = len(prompts)
    N = B * chains
    per_prompt = list(seed) if isinstance(seed, (list, tuple)) else [seed] * B
    if len(per_prompt) != B:
        raise ValueError(f"seed: expected an int or {B} ints (one per prompt), got {len(per_prompt)}")
    chain_seeds = torch.tensor([sampling.stream_seeds(sd, [p], salt=f"sea-chain-{c}")[0]
                                for sd, p in zip(per_prompt, prompts) for c in range(chains)], dtype=torch.int64)
    seeds_dev = chain_seeds.to(device)
    prompts_rep = [p for p in prompts for _ in range(chains)]
    ids, mask = encoding.encode_prompts(tokenizer, prompts, chat_template=chat_template, device=device)
    ids, mask = ids.repeat_interleave(chains, dim=0), mask.repeat_interleave(chains, dim=0)
    eos = encoding.eos_token_ids(model, tokenizer)
    pad = encoding.pad_token_id(tokenizer)
    P = ids.shape[1]

    # 1. initial responses sampled from the base model, with the logits along them
    def choose(logits, step, active):
        offsets = torch.full((logits.shape[0],), step, dtype=torch.int64)
        return sampling.sample_tokens(logits, chain_seeds, offsets, temperature=init_sample_temp)

    init = engine.decode(model, ids, mask, max_new_tokens=max_new_tokens, eos_ids=eos, pad_id=pad, choose=choose,
                      return_logits=True)
    L = init.tokens.shape[1]
    lengths = init.lengths.to(device)  # [N] response positions that are optimised (EOS included)
    resp_mask = (torch.arange(L, device=device).unsqueeze(0) < lengths.unsqueeze(1))  # [N, L]
    y = (init.logits.to(device) / init_temp).float() * resp_mask.unsqueeze(-1)
    y = y.contiguous()
    V = y.shape[-1]
    state = (torch.zeros_like(y), torch.zeros_like(y)) if optimizer == "adam" else None

    with torch.no_grad():
        prompt_emb = emb_module(ids).detach()  # [N, P, d], includes any embedding scale
    full_mask = torch.cat([mask, resp_mask.long()], dim=1)
    position_ids = _position_ids(full_mask)

    score_calls = 0
    trace_mean = [[] for _ in range(B)]
    trace_max = [[] for _ in range(B)]

    def argmax_tokens(yy):
        return yy.argmax(dim=-1)

    def score(token_rows: torch.Tensor) -> tuple[torch.Tensor, list[str], list[list[int]]]:
        """Decode [N, L] ids (cut at each chain's length and at the first EOS) and score them."""
        nonlocal score_calls
        texts, id_lists = encoding.response_texts(tokenizer, token_rows.cpu(), _eos_lengths(token_rows, lengths, eos).cpu(),
                                             eos)
        r = call_reward(reward, prompts_rep, texts)
        score_calls += 1
        return r, texts, id_lists

    def record(r: torch.Tensor, label: str):
        rb = r.view(B, chains)
        for b in range(B):
            trace_mean[b].append(float(rb[b].mean()))
            trace_max[b].append(float(rb[b].max()))
        say(f"{label}: decoded reward " + ", ".join(fmt(trace_max[b][-1]) for b in range(B))
            + f" ({time.perf_counter() - t0:.1f} s)")

    base_r, base_texts, _ = score(init.tokens.to(device))
    record(base_r, "initial sample")

    energy_trace, soft_trace, flu_trace, norm_trace = [], [], [], []

    for s in range(steps):
        std = stds[s]
        if noise == "eval" and std > 0:
            y_eval = ops.gaussian_perturb(y, std=std, seed=seeds_dev, step=s, backend=backend)
        else:
            y_eval = y
        with torch.enable_grad():
            y_eval = y_eval.detach().requires_grad_(True)
            q = torch.softmax(y_eval / soft_temp, dim=-1)  # [N, L, V]
            soft_emb = (q.to(E.dtype) @ E) * emb_scale  # [N, L, d]
            inputs = torch.cat([prompt_emb, soft_emb], dim=1)
            out = model(inputs_embeds=inputs, attention_mask=full_mask, position_ids=position_ids, use_cache=False)
            logits = out.logits[:, P - 1:P - 1 + L].to(device=device, dtype=torch.float32)  # the head's device may differ
            base_logp = torch.log_softmax(logits, dim=-1)  # predicts position l
            p_base = base_logp.exp()
            log_q = torch.log_softmax(y_eval / soft_temp, dim=-1)
            ce = -(p_base * log_q).sum(-1)  # [N, L]
            m = resp_mask.to(ce.dtype)
            fluency = (ce * m).sum(-1) / m.sum(-1).clamp_min(1)
            r_soft = soft(prompts_rep, q, lengths).to(fluency.dtype)
            energy = -reward_weight * r_soft + flu_weight * fluency  # [N]
            (grad,) = torch.autograd.grad(energy.sum(), y_eval)
        grad = (grad * resp_mask.unsqueeze(-1)).contiguous()
        y, gnorm = ops.sea_step(y, grad, lr=lr, noise_std=std if noise == "langevin" else 0.0,
                                max_norm=max_norm, clip=clip, seed=seeds_dev, step=s, optimizer=optimizer,
                                state=state, backend=backend)
        energy_trace.append(energy.detach().view(B, chains).mean(1).tolist())
        soft_trace.append(r_soft.detach().view(B, chains).mean(1).tolist())
        flu_trace.append(fluency.detach().view(B, chains).mean(1).tolist())
        if gnorm is not None:  # per chain: its norm ("chain"), its largest row norm ("row"), the global norm
            g = gnorm.detach().float()
            g = g.expand(N) if g.dim() == 0 else (g.amax(-1) if g.dim() == 2 else g)
            norm_trace.append(g.view(B, chains).tolist())
        if eval_every is not None and (s + 1) % eval_every == 0 and s + 1 < steps:
            r, _, _ = score(argmax_tokens(y))
            record(r, f"step {s + 1}/{steps}")
        elif progress and (s + 1) % 10 == 0:
            say(f"step {s + 1}/{steps}: energy " + ", ".join(f"{e:.3f}" for e in energy_trace[-1])
                + f" ({time.perf_counter() - t0:.1f} s)")

    # final decoding: argmax, optionally top-k re-ranking with the base model
    final_r, final_texts, final_ids = score(argmax_tokens(y))
    record(final_r, f"final (step {steps})")
    if rerank_top_k is not None:
        top = y.topk(min(rerank_top_k, V), dim=-1).indices  # [N, L, k]

        def choose_topk(logits, step, active):
            if step >= L:
                return logits.argmax(-1)
            cand = top[:, step].to(logits.device)
            return cand.gather(-1, logits.gather(-1, cand).argmax(-1, keepdim=True)).squeeze(-1)

        rr = engine.decode(model, ids, mask, max_new_tokens=L, eos_ids=eos, pad_id=pad, choose=choose_topk)
        tokens = torch.full((N, L), pad, dtype=torch.long, device=device)
        tokens[:, :rr.tokens.shape[1]] = rr.tokens
        rerank_r, rerank_texts, rerank_ids = score(tokens)
        better = rerank_r > final_r
        for i in range(N):
            if bool(better[i]):
                final_r[i], final_texts[i], final_ids[i] = rerank_r[i], rerank_texts[i], rerank_ids[i]

    seconds = time.perf_counter() - t0
    results = []
    fr = final_r.view(B, chains)
    for b in range(B):
        c = int(fr[b].argmax())
        i = b * chains + c
        results.append(AlignResult(
            prompt=prompts[b], response=final_texts[i], reward=float(final_r[i]), method="sea",
            trace_mean=trace_mean[b], trace_max=trace_max[b], reward_calls=score_calls * chains, seconds=seconds, response_ids=final_ids[i],
            base_response=base_texts[b * chains], base_reward=float(base_r[b * chains]),
            extra={
                "energy": [e[b] for e in energy_trace],
                "soft_reward": [e[b] for e in soft_trace],
                "fluency": [e[b] for e in flu_trace],
                "grad_norm": [g[b] for g in norm_trace],
                "chains": chains, "steps": steps, "lr": lr, "optimizer": optimizer, "noise": noise,
                "length": int(lengths[i]),
            },
        ))
    return results[0] if single else results


def _eos_lengths(tokens: torch.Tensor, lengths: torch.Tensor, eos_ids) -> torch.Tensor:
    """Per row: ``lengths`` cut after the first EOS token (which is kept, as in :func:`engine.decode`)."""
    L = tokens.shape[1]
    if not eos_ids:
        return lengths.clamp_max(L)
    is_eos = torch.isin(tokens, torch.tensor(list(eos_ids), device=tokens.device))
    pos = torch.arange(L, device=tokens.device).expand_as(tokens)
    first = torch.where(is_eos, pos, torch.full_like(pos, L)).min(dim=-1).values
    return torch.minimum(lengths.to(tokens.device).clamp_max(L), first + 1)
