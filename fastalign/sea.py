"""SEA — Simple Energy Adaptation (arXiv 2505.20081): gradient-based sampling of response logits.

A response of ``L`` tokens is represented by logits ``y [L, V]`` (B prompts x ``chains`` chains are
optimised together as ``y [N, L, V]``, N = B * chains, row ``b * chains + c``). SEA lowers the energy

    energy(y) = -reward_weight * r_soft(q) + flu_weight * fluency(y)

over ``y`` with the fused :func:`fastalign.ops.sea_step` (gradient clipping + Adam/SGLD + noise), where

* ``q`` are the *soft tokens*: ``softmax(y / soft_temp)`` (``soft_tokens="soft"``), or their
  straight-through form (``"straight_through"``, the paper; COLD's sharpened ``y / 0.001`` input): the
  forward sees the one-hot ``argmax(y)`` (the LM and the reward score real text, the text that is
  decoded), the backward the softmax's gradient. The LM input is ``(q @ E) * scale``.
* ``r_soft`` is the reward made differentiable in ``q`` (:func:`fastalign.rewards.as_soft_reward`).
* ``fluency`` is COLD's cross-entropy ``-sum_v p_base(v | prompt, q_<l) log softmax(y_l / soft_temp)(v)``,
  averaged over the response positions, against the base LM's next-token distributions along the soft
  response, optionally top-k filtered (``flu_topk``) and either differentiated through the LM
  (``fluency="full"``) or a constant target (``"detached"``, COLD), which removes the backward pass
  through the LM; with straight-through tokens the target only changes where ``argmax(y)`` changes, so
  it is memoised per chain and the LM runs only for the chains whose tokens changed.

Phases (each a function, testable alone): :func:`initial_samples` (a base-model sample per chain and the
logits along it: ``y``'s start), :func:`soft_tokens` + :class:`BaseLM` + :func:`energy_and_grad`
(the energy and its gradient), :func:`update` (the step), :func:`decode_tokens` (decoding) and the
scoring in :func:`run`. The prompts are prefilled once (:class:`fastalign._common.EncodedPrompts`) and
their cache forked to the chains for the initial samples, every LM forward of the energy and the
``lm_topk`` decoding.

Noise: ``"langevin"`` (the paper's update ``y <- y - lr * grad + std * xi``: the noise stays in the
iterate, :func:`~fastalign.ops.sea_step` with ``noise_std``), ``"eval"`` (the gradient is taken at
``y + std * xi`` and the noise dropped, as the SEA/COLD code does), or ``"none"``. ``noise_std`` is a
constant or a ``(start, end)`` pair annealed geometrically.

A chain whose energy or gradient is not finite (seen: a left-padded batch with sdpa attention on
Gemma3n) is reported with a warning and excluded from then on (its gradient zeroed, never chosen);
if every chain of a prompt fails, :class:`FloatingPointError` is raised.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastalign import _common, encoding, engine, ops, sampling
from fastalign.errors import InputError
from fastalign.results import AlignResult, fmt
from fastalign.rewards import as_soft_reward, call_reward

__all__ = ["sea_generate", "run", "SeaSettings", "noise_schedule", "initial_samples", "soft_tokens", "BaseLM",
           "energy_and_grad", "update", "decode_tokens"]


def noise_schedule(noise_std, steps: int) -> list[float]:
    """Per-step noise std: a constant, or ``(start, end)`` annealed geometrically (linearly if an end is 0)."""
    if isinstance(noise_std, (tuple, list)):
        if len(noise_std) != 2:
            raise InputError(f"noise_std: expected a number or a pair (start, end), got {noise_std!r}")
        a = _common.check_float(noise_std[0], "noise_std[0]", lo=0.0, hi=math.inf)
        b = _common.check_float(noise_std[1], "noise_std[1]", lo=0.0, hi=math.inf)
        if steps == 1:
            return [a]
        if a > 0 and b > 0:
            return [a * (b / a) ** (s / (steps - 1)) for s in range(steps)]
        return [a + (b - a) * s / (steps - 1) for s in range(steps)]
    c = _common.check_float(noise_std, "noise_std", lo=0.0, hi=math.inf)
    return [c] * steps


def _choice(value, name: str, allowed: tuple):
    if value not in allowed:
        raise InputError(f"{name}: expected one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
    return value


@dataclass(frozen=True)
class SeaSettings:
    """Validated settings of one SEA call (see :func:`sea_generate` for each)."""

    chains: int
    steps: int
    lr: float
    optimizer: str
    noise: str
    stds: tuple
    max_norm: float | None
    clip: str | None
    init_temp: float
    init_sample_temp: float
    soft_temp: float
    soft_tokens: str
    fluency: str
    flu_topk: int | None
    flu_weight: float
    reward_weight: float
    decoding: str
    decode_topk: int
    max_new_tokens: int
    eval_every: int | None
    seed: object
    backend: str | None
    kl_coef: float = 0.0

    @classmethod
    def check(cls, *, chains, steps, lr, optimizer, noise, noise_std, max_norm, clip, init_temp, init_sample_temp,
              soft_temp, soft_tokens, fluency, flu_topk, flu_weight, reward_weight, decoding, decode_topk,
              max_new_tokens, eval_every, seed, backend, kl_coef=0.0) -> "SeaSettings":
        steps = _common.check_int(steps, "steps", lo=0)
        noise = _choice(noise, "noise", ("langevin", "eval", "none"))
        clip = _choice(clip, "clip", ("chain", "row", "global", None))
        if clip is None:
            max_norm = None
        elif max_norm is not None:
            max_norm = _common.check_float(max_norm, "max_norm", positive=True)
        stds = noise_schedule(noise_std, max(steps, 1)) if noise != "none" else [0.0] * max(steps, 1)
        return cls(chains=_common.check_int(chains, "chains"), steps=steps,
                   lr=_common.check_float(lr, "lr", lo=0.0, hi=math.inf),
                   optimizer=_choice(optimizer, "optimizer", ("adam", "sgld")), noise=noise, stds=tuple(stds),
                   max_norm=max_norm, clip=clip,
                   init_temp=_common.check_float(init_temp, "init_temp", positive=True),
                   init_sample_temp=_common.check_float(init_sample_temp, "init_sample_temp", lo=0.0, hi=math.inf),
                   soft_temp=_common.check_float(soft_temp, "soft_temp", positive=True),
                   soft_tokens=_choice(soft_tokens, "soft_tokens", ("soft", "straight_through")),
                   fluency=_choice(fluency, "fluency", ("full", "detached")),
                   flu_topk=None if flu_topk is None else _common.check_int(flu_topk, "flu_topk"),
                   flu_weight=_common.check_float(flu_weight, "flu_weight", lo=0.0, hi=math.inf),
                   reward_weight=_common.check_float(reward_weight, "reward_weight", lo=0.0, hi=math.inf),
                   decoding=_choice(decoding, "decoding", ("argmax", "lm_topk")),
                   decode_topk=_common.check_int(decode_topk, "decode_topk"),
                   max_new_tokens=_common.check_int(max_new_tokens, "max_new_tokens"),
                   eval_every=None if eval_every is None else _common.check_int(eval_every, "eval_every"),
                   seed=seed, backend=backend, kl_coef=_common.check_kl_coef(kl_coef))


def sea_generate(model, tokenizer, prompts, reward, *, chains: int = 4, steps: int = 40, lr: float = 0.1,
                 optimizer: str = "adam", noise: str = "langevin", noise_std=(0.1, 0.001), max_norm: float | None = 1.0,
                 clip: str | None = "chain", init_temp: float = 0.5, init_sample_temp: float = 1.0,
                 soft_temp: float = 1.0, soft_tokens: str = "straight_through", fluency: str = "detached",
                 flu_topk: int | None = None, flu_weight: float = 1.0, reward_weight: float = 50.0,
                 decoding: str = "lm_topk", decode_topk: int = 5, max_new_tokens: int = 32,
                 eval_every: int | None = None, soft_reward=None, seed=0, backend: str | None = None,
                 kl_coef: float = 0.0,
                 chat_template: bool | None = None, metrics: bool = True, progress: bool = True,
                 truncate_prompt: bool = False):
    """Align responses to ``prompts`` with SEA (defaults measured on SmolLM2-135M-Instruct with the
    all-MiniLM cosine reward, ``bench/bench_sea.py`` and ``bench/RESULTS.md`` *SEA options*; the paper's /
    COLD's choice is named beside each). Measured there: soft tokens with argmax decoding (the pre-issue
    sampler) and straight-through with argmax decoding raise the reward (0.127 -> 0.315 / 0.369) but
    their text is word salad (perplexity 856 / 1314 against 20.5 for the sampled start); COLD's LM-top-k
    decoding keeps it fluent (perplexity 11.2, reward 0.208).

    Args:
        model, tokenizer, prompts: as in :func:`fastalign.aisp.aisp_generate`.
        reward: the string reward ``reward(prompts, responses) -> [N]``, used to score decoded
            responses; unless ``soft_reward`` is given it must also provide the differentiable form
            (``reward.soft_reward_fn(model, tokenizer)``, see :func:`fastalign.rewards.as_soft_reward`).
        chains: chains per prompt, each from its own base sample; the best-rewarded final response is
            kept (4; the paper: 4, its ablation finds 1 chain clearly worse).
        steps: optimisation steps (40).
        lr: step size (0.1 with Adam; the SEA code uses Adam on the logits).
        optimizer: ``"adam"`` (the SEA code) or ``"sgld"`` (textbook Langevin).
        noise: ``"langevin"`` (the paper's update: the noise stays in ``y``; measured: 0.246 against
            0.218 for ``"eval"`` on two prompts, perplexity 9.1 against 10.4), ``"eval"`` (the SEA/COLD
            code: noise at the evaluation point, dropped) or ``"none"``.
        noise_std: constant or ``(start, end)`` annealed geometrically (0.1 -> 0.001).
        max_norm, clip: gradient-norm clipping before the update, inside the fused step: each clip group's
            gradient is scaled by ``min(1, max_norm / (norm + 1e-6))`` (``clip``: ``"chain"`` per chain, the
            default, keeps chains independent; ``"row"`` per position; ``"global"`` whole tensor as
            ``clip_grad_norm_``; ``max_norm=None`` or ``clip=None``: none). The paper clips; 1.0.
        init_temp: ``y`` starts at the base logits along the sample divided by this (0.5).
        init_sample_temp: temperature of the initial samples (1.0; 0 for the greedy response).
        soft_temp: soft tokens are ``softmax(y / soft_temp)`` (1.0).
        soft_tokens: ``"straight_through"`` (the paper; COLD feeds ``y / 0.001`` straight-through: the
            forward sees ``argmax(y)``) or ``"soft"`` (the plain softmax blend of embeddings).
        fluency: ``"detached"`` (COLD: the base LM's distributions are a constant target, no backward
            through the LM) or ``"full"`` (differentiated through the LM).
        flu_topk: keep only the base LM's top-k tokens in the fluency target (COLD filters it; None: all).
        flu_weight, reward_weight: energy weights (1 and 50).
        decoding: ``"lm_topk"`` (COLD: at each position the base LM's ``decode_topk`` most likely tokens
            given the decoded prefix, the one ``y`` ranks highest) or ``"argmax"`` (``argmax(y)``).
        decode_topk: k of ``"lm_topk"`` (5).
        max_new_tokens: response length L (32).
        eval_every: also decode and score the responses every this many steps (more reward calls;
            the initial and final responses are always scored).
        soft_reward: the differentiable reward ``soft(prompts, probs [N, L, V], lengths [N]) -> [N]``.
        seed: int or one int per prompt; chain c of a prompt hashes (seed, prompt, c).
        kl_coef: pick the final chain by ``reward + kl_coef * mean_t log p_base(y_t | x, y_<t)`` (the
            objective of :func:`fastalign.aisp.aisp_generate`; one teacher-forced pass of the base model
            over the final chains); 0: by the raw reward.
        backend: fused-op backend for ``sea_step`` / ``gaussian_perturb``.
        metrics: attach text-quality metrics (:mod:`fastalign.metrics`; distinct-n over the final chains).
        progress: a line per evaluation on stderr.
        truncate_prompt: what a prompt past the model's context does: raise before any forward (False)
            or keep its last tokens that fit, with a warning (see :func:`fastalign.aisp.aisp_generate`).

    Returns:
        :class:`fastalign.results.AlignResult` (a list for a list of prompts): the best final response over
        the prompt's (finite) chains, its reward, ``base_response`` / ``base_reward`` (the first chain's
        sampled initial response), the decoded-reward trace (mean/max over chains per evaluation) and in
        ``extra``: ``energy``, ``soft_reward``, ``fluency`` (mean over finite chains per step, at the
        evaluation point), ``grad_norm`` (per step, one value per chain: its clip-group norm, the largest
        row norm for ``clip="row"``, the global norm for ``clip="global"``), ``failed_chains``,
        ``lm_forward_rows`` (LM rows run for the energy; fewer than ``steps * chains`` when memoised).
    """
    single = isinstance(prompts, str)
    prompts = encoding.check_prompts(prompts)
    st = SeaSettings.check(chains=chains, steps=steps, lr=lr, optimizer=optimizer, noise=noise, noise_std=noise_std,
                           max_norm=max_norm, clip=clip, init_temp=init_temp, init_sample_temp=init_sample_temp,
                           soft_temp=soft_temp, soft_tokens=soft_tokens, fluency=fluency, flu_topk=flu_topk,
                           flu_weight=flu_weight, reward_weight=reward_weight, decoding=decoding,
                           decode_topk=decode_topk, max_new_tokens=max_new_tokens, eval_every=eval_every, seed=seed,
                           backend=backend, kl_coef=kl_coef)
    device = _common.check_model_and_reward(model, reward, backend)
    engine.input_embedding(model)  # refuses an offloaded embedding before any work
    encoded = _common.EncodedPrompts.from_texts(model, tokenizer, prompts, chat_template=chat_template, device=device,
                                                max_new_tokens=st.max_new_tokens, truncate_prompt=truncate_prompt)
    soft = soft_reward if soft_reward is not None else as_soft_reward(reward, model, tokenizer)
    results = run(model, tokenizer, encoded, reward, soft, st, metrics=metrics, progress=progress)
    _common.report_truncated(results, encoded)  # each result's prompt as given
    return results[0] if single else results


# ------------------------------------------------------------------------------------------------
# phase 1: initial samples and logits
# ------------------------------------------------------------------------------------------------
def chain_seeds(seed, prompts: list[str], chains: int) -> torch.Tensor:
    """``[B * chains]`` int64 stream seeds: chain c of a prompt hashes (seed, prompt, c)."""
    per_prompt = list(seed) if isinstance(seed, (list, tuple)) else [seed] * len(prompts)
    if len(per_prompt) != len(prompts):
        raise InputError(f"seed: expected an int or {len(prompts)} ints (one per prompt), got {len(per_prompt)}")
    return torch.tensor([sampling.stream_seeds(sd, [p], salt=f"sea-chain-{c}")[0]
                         for sd, p in zip(per_prompt, prompts) for c in range(chains)], dtype=torch.int64)


def initial_samples(model, encoded: _common.EncodedPrompts, seeds: torch.Tensor, st: SeaSettings,
                    device: torch.device) -> tuple[engine.Rollouts, torch.Tensor, torch.Tensor]:
    """A base-model sample per chain (temperature ``init_sample_temp``, from the chain's stream).

    Returns ``(rollouts, y [N, L, V] float32, resp_mask [N, L] bool)``: ``y`` is the base logits along the
    sample divided by ``init_temp``, zero after the sample's length (EOS included); ``resp_mask`` marks
    the optimised positions. All on ``device``."""
    def choose(logits, step, active):
        offsets = torch.full((logits.shape[0],), step, dtype=torch.int64)
        return sampling.sample_tokens(logits, seeds, offsets, temperature=st.init_sample_temp)

    init = encoded.decode(model, repeats=st.chains, max_new_tokens=st.max_new_tokens, choose=choose,
                          return_logits=True)
    L = init.tokens.shape[1]
    lengths = init.lengths.to(device)
    resp_mask = torch.arange(L, device=device).unsqueeze(0) < lengths.unsqueeze(1)
    y = (init.logits.to(device).float() / st.init_temp) * resp_mask.unsqueeze(-1)
    return init, y.contiguous(), resp_mask


# ------------------------------------------------------------------------------------------------
# phase 2: the energy and its gradient
# ------------------------------------------------------------------------------------------------
def soft_tokens(y: torch.Tensor, mode: str, temp: float = 1.0) -> torch.Tensor:
    """Soft tokens ``q [N, L, V]`` of logits ``y [N, L, V]``: ``softmax(y / temp)`` (``"soft"``), or
    straight-through (``"straight_through"``): the value is exactly ``one_hot(argmax y)``, the gradient
    that of the softmax."""
    q = torch.softmax(y / temp, dim=-1)
    if mode == "soft":
        return q
    hard = F.one_hot(y.argmax(-1), y.shape[-1]).to(q.dtype)
    return hard + (q - q.detach())


class BaseLM:
    """The base LM's next-token logits along soft responses of the N chains, from the prompt cache.

    Each forward feeds ``[last prompt token, (q @ E) * scale]`` (``[n, 1 + L, d]``) on a fork of the
    prompts' cache (prefilled once), with the prompt+response attention mask, and returns the float32
    logits ``[n, L, V]`` on ``device`` (position l predicts response token l). With ``detached=True`` the
    forward runs without autograd and, for one-hot inputs, is memoised per chain: :meth:`target` reruns
    only the chains whose tokens changed since the previous call.
    """

    def __init__(self, model, encoded: _common.EncodedPrompts, chains: int, resp_mask: torch.Tensor,
                 device: torch.device):
        self.model, self.chains, self.device = model, chains, device
        self.api = engine.model_interface(model)
        self.E, self.scale = engine.input_embedding(model)
        self.cache = encoded.prefill(model).prompt_cache.cache
        ids = encoded.input_ids.repeat_interleave(chains, dim=0)
        in_dev = ids.device
        with torch.no_grad():
            self.last = model.get_input_embeddings()(ids[:, -1:]).detach()  # [N, 1, d]
        mask = torch.cat([encoded.attention_mask.repeat_interleave(chains, dim=0).long(),
                          resp_mask.to(in_dev).long()], dim=1)
        self.mask = mask
        self.position_ids = engine.position_ids(mask)[:, encoded.input_ids.shape[1] - 1:]
        self.memo_tokens: torch.Tensor | None = None
        self.memo_logits: torch.Tensor | None = None
        self.rows_run = 0

    def _fork(self, rows: torch.Tensor):
        if self.cache is None:
            return None
        forked = copy.deepcopy(self.cache)
        reorder = getattr(forked, "reorder_cache", None)
        if not callable(reorder):
            raise InputError(f"model: its cache ({type(self.cache).__name__}) cannot be forked to SEA's chains "
                             "(it has no reorder_cache)")
        reorder((rows // self.chains).to(self.mask.device))
        return forked

    def logits(self, q: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[n, L, V]`` along soft tokens ``q [n, L, V]`` of the chains ``rows`` (default: all)."""
        emb = (q.to(device=self.E.device, dtype=self.E.dtype) @ self.E) * self.scale
        return self._forward(emb, rows)

    def _forward(self, emb: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        rows = torch.arange(emb.shape[0]) if rows is None else rows.cpu()
        r = rows.to(self.mask.device)
        kwargs = {"inputs_embeds": torch.cat([self.last[r], emb.to(self.last.device)], dim=1),
                  "attention_mask": self.mask[r], "use_cache": self.cache is not None}
        cache = self._fork(rows)
        if cache is not None:
            kwargs[self.api.cache_kwarg] = cache
        if self.api.position_ids:
            kwargs["position_ids"] = self.position_ids[r]
        self.rows_run += len(rows)
        L = emb.shape[1]
        return self.model(**kwargs).logits[:, :L].to(device=self.device, dtype=torch.float32)

    @torch.no_grad()
    def target(self, q: torch.Tensor, one_hot: bool) -> torch.Tensor:
        """Detached logits ``[N, L, V]``; for one-hot ``q`` the embedding is a row lookup (the same
        values as ``q @ E``) and the logits are memoised per chain."""
        if not one_hot:
            return self.logits(q)
        tokens = q.argmax(-1)
        if self.memo_tokens is None:
            changed = torch.arange(tokens.shape[0], device=tokens.device)
            self.memo_logits = torch.empty(0)
        else:
            changed = (tokens != self.memo_tokens).any(-1).nonzero().squeeze(1)
        if len(changed):
            emb = self.E[tokens[changed].to(self.E.device)] * self.scale
            fresh = self._forward(emb, changed)
            if self.memo_tokens is None:
                self.memo_logits = fresh
            else:
                self.memo_logits[changed] = fresh
            self.memo_tokens = tokens
        return self.memo_logits


def fluency_target(logits: torch.Tensor, topk: int | None) -> torch.Tensor:
    """``p_base [N, L, V]``: softmax of ``logits``, restricted to its top-k tokens (renormalised) when given."""
    if topk is not None and topk < logits.shape[-1]:
        kth = logits.topk(topk, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    return torch.softmax(logits, dim=-1)


@dataclass
class Energy:
    """Per chain ``[N]``: energy, soft reward, fluency; the gradient ``[N, L, V]`` (zero outside the
    response, and for chains whose energy or gradient is not finite); ``finite [N]`` bool."""

    energy: torch.Tensor
    soft_reward: torch.Tensor
    fluency: torch.Tensor
    grad: torch.Tensor
    finite: torch.Tensor


def energy_and_grad(y_eval: torch.Tensor, lm: BaseLM, soft, prompts_rep: list[str], resp_mask: torch.Tensor,
                    st: SeaSettings) -> Energy:
    """The energy of ``y_eval [N, L, V]`` and its gradient (see the module docstring)."""
    lengths = resp_mask.sum(-1)
    with torch.enable_grad():
        y_eval = y_eval.detach().requires_grad_(True)
        q = soft_tokens(y_eval, st.soft_tokens, st.soft_temp)
        if st.fluency == "detached":
            logits = lm.target(q.detach(), one_hot=st.soft_tokens == "straight_through")
        else:
            logits = lm.logits(q)
        p_base = fluency_target(logits, st.flu_topk)
        log_q = torch.log_softmax(y_eval / st.soft_temp, dim=-1)
        ce = -(p_base * log_q).sum(-1)  # [N, L]
        m = resp_mask.to(ce.dtype)
        fluency = (ce * m).sum(-1) / m.sum(-1).clamp_min(1)
        r_soft = soft(prompts_rep, q, lengths).to(fluency.dtype)
        energy = -st.reward_weight * r_soft + st.flu_weight * fluency  # [N]
        (grad,) = torch.autograd.grad(energy.sum(), y_eval)
    finite = torch.isfinite(energy) & torch.isfinite(grad).flatten(1).all(1)
    grad = torch.where(finite[:, None, None] & resp_mask.unsqueeze(-1), grad, torch.zeros((), device=grad.device))
    return Energy(energy.detach(), r_soft.detach(), fluency.detach(), grad.contiguous(), finite)


# ------------------------------------------------------------------------------------------------
# phase 3: the step
# ------------------------------------------------------------------------------------------------
def evaluation_point(y: torch.Tensor, st: SeaSettings, seeds: torch.Tensor, step: int) -> torch.Tensor:
    """Where the gradient of step ``step`` is taken: ``y + std * xi`` for ``noise="eval"``, else ``y``."""
    std = st.stds[step]
    if st.noise == "eval" and std > 0:
        return ops.gaussian_perturb(y, std=std, seed=seeds, step=step, backend=st.backend)
    return y


def update(y: torch.Tensor, grad: torch.Tensor, st: SeaSettings, seeds: torch.Tensor, step: int, state):
    """One fused :func:`fastalign.ops.sea_step` (clip -> Adam/SGLD -> Langevin noise when
    ``noise="langevin"``): ``(y_new [N, L, V], grad_norm)``."""
    return ops.sea_step(y, grad, lr=st.lr, noise_std=st.stds[step] if st.noise == "langevin" else 0.0,
                        max_norm=st.max_norm, clip=st.clip, seed=seeds, step=step, optimizer=st.optimizer,
                        state=state, backend=st.backend)


# ------------------------------------------------------------------------------------------------
# phase 4: decoding and scoring
# ------------------------------------------------------------------------------------------------
def decode_tokens(model, encoded: _common.EncodedPrompts, y: torch.Tensor, st: SeaSettings) -> torch.Tensor:
    """Response ids ``[N, L]`` from ``y [N, L, V]``: ``argmax(y)``, or COLD's LM-top-k rule (at each
    position, among the base LM's ``decode_topk`` most likely next tokens given the prompt and the
    decoded prefix, the one with the highest ``y``; padding after an EOS)."""
    if st.decoding == "argmax":
        return y.argmax(-1)
    N, L, V = y.shape
    k = min(st.decode_topk, V)

    def choose(logits, step, active):
        cand = logits.topk(k, dim=-1).indices.to(y.device)  # [N, k]
        best = y[:, step].gather(-1, cand).argmax(-1, keepdim=True)
        return cand.gather(-1, best).squeeze(-1).to(logits.device)

    roll = encoded.decode(model, repeats=st.chains, max_new_tokens=L, choose=choose)
    tokens = torch.full((N, L), encoded.pad_id, dtype=torch.long, device=y.device)
    tokens[:, :roll.tokens.shape[1]] = roll.tokens.to(y.device)
    return tokens


def _eos_lengths(tokens: torch.Tensor, lengths: torch.Tensor, eos_ids) -> torch.Tensor:
    """Per row: ``lengths`` cut after the first EOS token (which is kept, as in :func:`engine.decode`)."""
    L = tokens.shape[1]
    if not eos_ids:
        return lengths.clamp_max(L)
    is_eos = torch.isin(tokens, torch.tensor(list(eos_ids), device=tokens.device))
    pos = torch.arange(L, device=tokens.device).expand_as(tokens)
    first = torch.where(is_eos, pos, torch.full_like(pos, L)).min(dim=-1).values
    return torch.minimum(lengths.to(tokens.device).clamp_max(L), first + 1)


class _Scores:
    """Decoded responses scored by the reward, with the per-prompt trace over the finite chains."""

    def __init__(self, tokenizer, encoded, reward, B: int, chains: int, lengths: torch.Tensor, say):
        self.tokenizer, self.encoded, self.reward, self.B, self.chains = tokenizer, encoded, reward, B, chains
        self.lengths, self.say, self.calls = lengths, say, 0
        self.prompts_rep = [p for p in encoded.texts for _ in range(chains)]
        self.trace_mean = [[] for _ in range(B)]
        self.trace_max = [[] for _ in range(B)]

    def __call__(self, tokens: torch.Tensor, alive: torch.Tensor, label: str):
        """Texts, ids and rewards ``[N]`` of ``tokens [N, L]`` (cut at each chain's length and first EOS)."""
        texts, ids = encoding.response_texts(self.tokenizer, tokens.cpu(),
                                             _eos_lengths(tokens, self.lengths, self.encoded.eos_ids).cpu(),
                                             self.encoded.eos_ids)
        r = call_reward(self.reward, self.prompts_rep, texts)
        self.calls += 1
        rb, ab = r.view(self.B, self.chains), alive.cpu().view(self.B, self.chains)
        for b in range(self.B):
            live = rb[b][ab[b]]
            self.trace_mean[b].append(float(live.mean()))
            self.trace_max[b].append(float(live.max()))
        self.say(f"{label}: decoded reward " + ", ".join(fmt(t[-1]) for t in self.trace_max))
        return texts, ids, r


def _check_finite(e: Energy, alive: torch.Tensor, prompts: list[str], chains: int, step: int) -> torch.Tensor:
    """``alive & e.finite``; warns for each chain that fails now, raises when a prompt has none left."""
    now = alive & e.finite.to(alive.device)
    for i in (alive & ~now).nonzero().flatten().tolist():
        warnings.warn(f"sea: chain {i % chains} of prompt {i // chains} ({prompts[i // chains][:40]!r}) has a "
                      f"non-finite energy or gradient at step {step} (energy {float(e.energy[i])}); it is excluded",
                      RuntimeWarning, stacklevel=3)
    dead = ~now.view(len(prompts), chains).any(-1)
    if bool(dead.any()):
        b = int(dead.nonzero()[0])
        raise FloatingPointError(f"sea: every chain of prompt {b} ({prompts[b][:40]!r}) has a non-finite energy or "
                                 f"gradient (step {step}); no response. Check the model in float32 / eager attention "
                                 "and the padding side")
    return now


def _masked_mean(x: torch.Tensor, alive: torch.Tensor, B: int) -> list[float]:
    a = alive.view(B, -1).to(x.device)
    x = torch.where(a, x.view(B, -1), torch.zeros((), device=x.device))
    return (x.sum(1) / a.sum(1)).tolist()


def _final_objective(model, encoded, rewards: torch.Tensor, ids: list[list[int]], chains: int,
                     kl_coef: float) -> torch.Tensor:
    """What picks each prompt's final chain: the raw ``rewards [N]``, or with ``kl_coef > 0``
    :func:`fastalign._common.objective`, the base log-probabilities from one teacher-forced pass over
    the decoded chains (an empty response scores -inf)."""
    from fastalign import metrics

    def mean_logprob():
        with engine.eval_mode(model):
            lp = metrics.mean_logprobs(model, encoded.input_ids, encoded.attention_mask,
                                       [i // chains for i in range(len(ids))], ids)
        return [x if x == x else -math.inf for x in lp]

    goal = _common.objective(rewards, mean_logprob, kl_coef)
    return rewards.double() if goal is None else goal


def run(model, tokenizer, encoded: _common.EncodedPrompts, reward, soft, st: SeaSettings, *,
        metrics: bool = True, progress: bool = True) -> list:
    """SEA on already encoded prompts: one :class:`~fastalign.results.AlignResult` per prompt."""
    device = engine.head_device(model)  # y, the noise and the fused step live where the head computes
    say = _common.Progress(progress, "sea")
    t0 = time.perf_counter()
    prompts = encoded.texts
    B, C = len(prompts), st.chains
    seeds = chain_seeds(st.seed, prompts, C)
    seeds_dev = seeds.to(device)
    with engine.eval_mode(model):
        init, y, resp_mask = initial_samples(model, encoded, seeds, st, device)
        lengths = resp_mask.sum(-1)
        alive = torch.ones(B * C, dtype=torch.bool, device=device)
        scores = _Scores(tokenizer, encoded, reward, B, C, lengths, say)
        base_texts, base_ids, base_r = scores(init.tokens.to(device), alive, "initial sample")
        lm = BaseLM(model, encoded, C, resp_mask, device)
        state = (torch.zeros_like(y), torch.zeros_like(y)) if st.optimizer == "adam" else None
        traces = {"energy": [], "soft_reward": [], "fluency": [], "grad_norm": []}
        for s in range(st.steps):
            e = energy_and_grad(evaluation_point(y, st, seeds_dev, s), lm, soft, scores.prompts_rep, resp_mask, st)
            alive = _check_finite(e, alive, prompts, C, s)
            y, gnorm = update(y, e.grad, st, seeds_dev, s, state)
            for key in ("energy", "soft_reward", "fluency"):
                traces[key].append(_masked_mean(getattr(e, key), alive, B))
            if gnorm is not None:  # per chain: its norm ("chain"), its largest row norm ("row"), the global norm
                g = gnorm.detach().float()
                g = g.expand(B * C) if g.dim() == 0 else (g.amax(-1) if g.dim() == 2 else g)
                traces["grad_norm"].append(g.view(B, C).tolist())
            if st.eval_every is not None and (s + 1) % st.eval_every == 0 and s + 1 < st.steps:
                scores(decode_tokens(model, encoded, y, st), alive, f"step {s + 1}/{st.steps}")
            elif (s + 1) % 10 == 0:
                say(f"step {s + 1}/{st.steps}: energy " + ", ".join(f"{v:.3f}" for v in traces["energy"][-1])
                    + f" ({time.perf_counter() - t0:.1f} s)")
        texts, ids, r = scores(decode_tokens(model, encoded, y, st), alive, f"final (step {st.steps})")
    seconds = time.perf_counter() - t0
    goal = _final_objective(model, encoded, r, ids, C, st.kl_coef)
    pick = torch.where(alive.cpu(), goal, torch.full_like(goal, -math.inf)).view(B, C).argmax(-1)
    results = []
    for b in range(B):
        i = b * C + int(pick[b])
        results.append(AlignResult(
            prompt=prompts[b], response=texts[i], reward=float(r[i]), method="sea",
            trace_mean=scores.trace_mean[b], trace_max=scores.trace_max[b], reward_calls=scores.calls * C,
            seconds=seconds, response_ids=ids[i], base_response=base_texts[b * C], base_reward=float(base_r[b * C]),
            objective=float(goal[i]) if st.kl_coef else None,
            extra={**{k: [v[b] for v in t] for k, t in traces.items()},
                   "chains": C, "steps": st.steps, "lr": st.lr, "optimizer": st.optimizer, "noise": st.noise,
                   "soft_tokens": st.soft_tokens, "fluency_mode": st.fluency, "decoding": st.decoding,
                   "length": int(lengths[i]), "chain": int(pick[b]), "lm_forward_rows": lm.rows_run,
                   "failed_chains": [c for c in range(C) if not bool(alive[b * C + c])]}))
    if metrics:
        live = alive.cpu().tolist()
        cands = [[texts[b * C + c] for c in range(C) if live[b * C + c]] for b in range(B)]
        _common.attach_metrics(model, encoded, reward, results, [base_ids[b * C] for b in range(B)], cands)
    return results
