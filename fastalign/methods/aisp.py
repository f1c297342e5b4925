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
  (:func:`fastalign.engine.sampling.stream_seeds`), so a prompt gives the same response alone or inside any
  batch, whatever its position. ``seed`` may also be a list with one int per prompt.

Defaults and where each comes from (one rule for every prompt and reward, nothing tuned per prompt;
evidence in ``bench/RESULTS.md``, "Control health and the objective" and "AISP against Best-of-N over
budgets"):

* ``n=32``, ``K=32``, ``alpha=0.999``: the paper (arXiv 2510.26219).
* noise: **relative**, ``rel_sigma`` = :data:`DEFAULT_REL_SIGMA`: the std is that fraction of the RMS of a
  pre-logit coordinate of the prompt (``|h| / sqrt(d)``, ``|h|`` recorded by the prefill forward), so
  the noise vector is ``rel_sigma`` times as long as the pre-logit vector on any model (SmolLM2's
  pre-logits have norm ~55 at d=576; a 4096-wide model's are on another scale, where one absolute
  sigma cannot fit both). ``sigma=``/``variance=`` keep the paper's absolute form. The former default,
  an absolute variance of 0.5 (std 0.707, about rel 0.3 on SmolLM2), won the first budget study on
  best-so-far reward but random-walked: the control's norm grew every iteration to 0.67 of the
  pre-logit norm while the mean reward per iteration stayed flat, and the chosen answers had a median
  perplexity of 361 (word salad), against 8.2 for ordinary temperature-1 samples (``bench/bench_trust.py``).
* trust region: ``control_cap`` = :data:`DEFAULT_CONTROL_CAP`: after every update each step's control is
  scaled down to at most that fraction of the pre-logit norm (one small pass over ``u [B, tau, d]``,
  negligible beside a forward). An independent rerun of AISP saw the same oversteering (a final
  control norm about 8x that of a constrained method).
* objective: ``kl_coef=0`` (the raw reward; the library's default, since beta is in reward units).
  ``kl_coef > 0`` maximises ``reward + kl_coef * mean_t log p_base(y_t | x, y_<t)``; the CLI sets it
  for its cosine reward (``fastalign.cli.CLI_KL_COEF``).
* ``normalize_rewards=True`` with ``lam=0.5`` (:data:`DEFAULT_LAM`): each prompt's n rewards are z-scored
  before dividing by ``lam``, so the weight temperature is relative to the reward spread and the same
  default works for a cosine reward (spread ~0.05) and a reward model's logits (spread of units). The
  paper's raw form is ``softmax(r / lam - ...)`` with lam=0.3, which with a cosine reward gives
  near-uniform weights and no learning (docs/design.md#measured); raw lam=0.02 tied with the normalised
  form on the cosine reward (0.285 vs 0.283) but only fits that reward's scale. ``normalize_rewards=False``
  restores the paper's raw form.
* ``horizon`` = the whole response: reviewers read the paper as using a shorter control window tau; a
  window of 8 of 32 tokens was clearly worse in the budget study (0.230 vs 0.285).
* ``mean_rollout=False``, ``final_samples=0``: a reimplementation adds the noise-free mean (and a batch
  around it) as candidates; in the budget study the mean rollout never beat the best rollout.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from fastalign.methods import _common

from fastalign.engine import encoding, sampling

from fastalign import engine, ops
from fastalign.errors import InputError
from fastalign.methods.results import BestSoFar, fmt
from fastalign.scoring.rewards import call_reward

__all__ = ["aisp_generate", "run", "AispSettings", "resolve_sigma", "resolve_noise", "noise_stds", "clamp_control",
           "control_health", "standardize_rewards", "DEFAULT_SIGMA", "DEFAULT_VARIANCE", "DEFAULT_REL_SIGMA",
           "DEFAULT_CONTROL_CAP", "DEFAULT_KL_COEF", "DEFAULT_LAM", "DEFAULT_NORMALIZE_REWARDS"]

#: The former default, absolute, as a *variance* (the paper's "sigma = 0.5" read as sigma^2, as third-party
#: reruns do); kept for callers that name it. The default is now relative (:data:`DEFAULT_REL_SIGMA`).
DEFAULT_VARIANCE = 0.5
#: sqrt(DEFAULT_VARIANCE) = 0.707, the former default std.
DEFAULT_SIGMA = math.sqrt(DEFAULT_VARIANCE)
#: Default noise std relative to the prompt's pre-logits (``rel_sigma``; see the module docstring).
DEFAULT_REL_SIGMA = 0.1
#: Default trust region: each step's control at most this times the pre-logit norm (``control_cap``).
DEFAULT_CONTROL_CAP = 0.5
#: Default beta of the objective ``reward + beta * mean_t log p_base`` (``kl_coef``).
DEFAULT_KL_COEF = 0.0
#: Default weight temperature, on z-scored rewards (``normalize_rewards=True``, the default).
DEFAULT_LAM = 0.5
DEFAULT_NORMALIZE_REWARDS = True


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


def _per_prompt(sigmas: list[float]) -> list[tuple[slice, float]]:
    """The prompt ranges that share one noise std: the whole batch when every prompt has the same
    sigma (absolute noise: one op call), else one range per prompt (relative noise)."""
    if all(x == sigmas[0] for x in sigmas):
        return [(slice(0, len(sigmas)), sigmas[0])]
    return [(slice(b, b + 1), x) for b, x in enumerate(sigmas)]


def _update_control(u, rewards, lengths, udot, *, normalize_rewards, sigmas, lam, alpha, seeds, iteration,
                    backend) -> tuple[torch.Tensor, torch.Tensor]:
    """One importance-sampling update of ``u [B, tau, d]`` from the iteration's ``rewards [B, n]`` (the
    raw rewards, or the objective); a prompt whose every rollout was rejected (-inf) keeps its control.
    Returns ``(u_new, weights [B, n])`` (a kept control's weights are those of all-zero rewards)."""
    device = u.device
    used = standardize_rewards(rewards) if normalize_rewards else rewards
    hopeless = torch.isneginf(used).all(dim=1)
    used = torch.where(hopeless.unsqueeze(1), torch.zeros_like(used), used).to(device=device, dtype=torch.float32)
    u_new, weights = torch.empty_like(u), torch.empty(used.shape, dtype=torch.float32, device=device)
    for rows, sigma in _per_prompt(sigmas):
        u_new[rows], weights[rows] = ops.aisp_update(u[rows], used[rows], sigma=sigma, lam=lam, alpha=alpha,
                                                     seed=seeds[rows], iteration=iteration, lengths=lengths[rows],
                                                     udot=udot[rows], backend=backend)
    if bool(hopeless.any()):
        u_new[hopeless.to(device)] = u[hopeless.to(device)]
    return u_new, weights


def clamp_control(u: torch.Tensor, caps: torch.Tensor) -> torch.Tensor:
    """The trust region: each step's control ``u[b, t] [d]`` scaled down to L2 norm ``caps[b]`` when it is
    longer (``u [B, tau, d]``, ``caps [B]``); in place, and returned."""
    norms = u.norm(dim=-1, keepdim=True)
    scale = (caps.to(u).view(-1, 1, 1) / norms.clamp_min(torch.finfo(u.dtype).tiny)).clamp_max(1.0)
    return u.mul_(scale)


def control_health(u: torch.Tensor, head_norm: torch.Tensor, weights: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per prompt: the control's mean step norm relative to the pre-logit norm, ``mean_t |u[b, t]| /
    head_norm[b]``, and the effective sample size of the importance weights, ``1 / sum_i w[b, i]^2``
    (1: one rollout took all the weight; n: uniform weights)."""
    rel = (u.float().norm(dim=-1).mean(dim=-1).cpu() / head_norm.float().cpu()).tolist()
    ess = (1.0 / weights.double().pow(2).sum(dim=-1)).cpu().tolist()
    return rel, ess


def resolve_sigma(sigma: float | None, variance: float | None, default: float) -> float:
    """The noise std from ``sigma`` (a std) or ``variance`` (sigma**2); ``default`` (a std) when neither."""
    if sigma is not None and variance is not None:
        raise InputError(f"sigma, variance: give the noise scale once, as a std (sigma) or as a variance, "
                         f"got sigma={sigma} and variance={variance}")
    if variance is not None:
        return math.sqrt(_common.check_float(variance, "variance", positive=True))
    return _common.check_float(default if sigma is None else sigma, "sigma", positive=True)


def resolve_noise(sigma: float | None, variance: float | None, rel_sigma: float | None) -> tuple[float | None, float | None]:
    """``(absolute std, relative std)``, exactly one of them set: ``sigma``/``variance`` give the absolute
    form, ``rel_sigma`` the relative one; none given: the default (:data:`DEFAULT_REL_SIGMA`, relative)."""
    if rel_sigma is not None:
        if sigma is not None or variance is not None:
            given = "sigma" if sigma is not None else "variance"
            raise InputError(f"rel_sigma, {given}: give the noise scale once, relative to the pre-logits "
                             f"(rel_sigma) or absolute (sigma or variance)")
        return None, _common.check_float(rel_sigma, "rel_sigma", positive=True)
    if sigma is None and variance is None:
        return None, DEFAULT_REL_SIGMA
    return resolve_sigma(sigma, variance, DEFAULT_SIGMA), None


def noise_stds(settings: "AispSettings", head_norm: torch.Tensor, d: int) -> list[float]:
    """Each prompt's noise std: the absolute ``sigma``, or ``rel_sigma`` times the RMS of a pre-logit
    coordinate of that prompt, ``head_norm[b] / sqrt(d)`` (so the noise vector's expected norm,
    ``sigma * sqrt(d)``, is ``rel_sigma`` times the pre-logit norm)."""
    if settings.sigma is not None:
        return [settings.sigma] * len(head_norm)
    return [settings.rel_sigma * float(x) / math.sqrt(d) for x in head_norm]


class _Perturbation:
    """The head transform of one AISP call: ``z = h + u[:, step] + sigma * eps`` for the ``n`` rollouts of
    each prompt at the current iteration, accumulating ``udot`` for the update (``[B, n]``).

    Its tensors (control, ``udot``, iteration counter) are updated in place between iterations, so a
    compiled decode step (:class:`fastalign.engine.CompiledStep`) traces it once: there ``step`` arrives
    as an int64 device tensor and the iteration goes in as one too (past the horizon the op itself
    returns ``h``)."""

    def __init__(self, u: torch.Tensor, n: int, sigmas: list[float], seeds: torch.Tensor, backend):
        self.u, self.n, self.seeds, self.backend = u.clone(), n, seeds, backend
        self.groups = _per_prompt(sigmas)
        B = u.shape[0]
        self.udot = torch.zeros(B, n, dtype=torch.float32, device=u.device)
        self.iteration = 0
        self.iteration_t = torch.zeros(1, dtype=torch.int64, device=u.device)

    def start(self, iteration: int, u: torch.Tensor) -> None:
        """Reset for an iteration that decodes around the control ``u``."""
        self.u.copy_(u)
        self.udot.zero_()
        self.iteration = iteration
        self.iteration_t.fill_(iteration)

    def __call__(self, h: torch.Tensor, step, active: torch.Tensor) -> torch.Tensor:
        B, tau, d = self.u.shape
        traced = isinstance(step, torch.Tensor)
        if not traced and step >= tau:
            return h
        h3, act = h.reshape(B, self.n, d), active.view(B, self.n).to(self.u.device)
        iteration = self.iteration_t if traced else self.iteration
        parts = [ops.aisp_perturb(h3[rows], self.u[rows], sigma=sigma, seed=self.seeds[rows], iteration=iteration,
                                  step=step, udot=self.udot[rows], active=act[rows], backend=self.backend)
                 for rows, sigma in self.groups]
        z = parts[0] if len(parts) == 1 else torch.cat(parts)
        return z.view(B * self.n, d)


def _mean_control(u: torch.Tensor):
    """The noise-free head transform ``z = h + u[:, step]`` (one rollout per prompt)."""
    tau = u.shape[1]

    def shift(h, step, active):
        return h if step >= tau else h + u[:, step].to(h.dtype)

    return shift


@dataclass(frozen=True)
class AispSettings:
    """Validated settings of one AISP call (see :func:`aisp_generate` for each)."""

    n: int
    iterations: int
    sigma: float | None
    lam: float
    alpha: float
    horizon: int
    max_new_tokens: int
    normalize_rewards: bool
    mean_rollout: bool
    final_samples: int
    seed: object
    backend: str | None
    compile: bool = False
    rel_sigma: float | None = None
    control_cap: float | None = None
    kl_coef: float = 0.0

    @classmethod
    def check(cls, *, n, iterations, sigma, variance, lam, alpha, horizon, max_new_tokens, normalize_rewards,
              mean_rollout, final_samples, seed, backend, compile=False, rel_sigma=None,
              control_cap=DEFAULT_CONTROL_CAP, kl_coef=DEFAULT_KL_COEF) -> "AispSettings":
        max_new_tokens = _common.check_int(max_new_tokens, "max_new_tokens")
        tau = max_new_tokens if horizon is None else _common.check_int(horizon, "horizon")
        if tau > max_new_tokens:
            raise InputError(f"horizon: expected 1 <= horizon <= max_new_tokens={max_new_tokens}, got {tau}")
        abs_sigma, rel = resolve_noise(sigma, variance, rel_sigma)
        cap = None if control_cap is None else _common.check_float(control_cap, "control_cap", positive=True)
        return cls(n=_common.check_int(n, "n"), iterations=_common.check_int(iterations, "iterations"),
                   sigma=abs_sigma, rel_sigma=rel, control_cap=cap, kl_coef=_common.check_kl_coef(kl_coef),
                   lam=_common.check_float(lam, "lam", positive=True),
                   alpha=_common.check_float(alpha, "alpha", lo=0.0, hi=1.0), horizon=tau,
                   max_new_tokens=max_new_tokens, normalize_rewards=bool(normalize_rewards),
                   mean_rollout=bool(mean_rollout), final_samples=_common.check_int(final_samples, "final_samples", lo=0),
                   seed=seed, backend=backend, compile=bool(compile))

    @property
    def reward_calls(self) -> int:
        return self.n * self.iterations + self.final_samples + int(self.mean_rollout)


def aisp_generate(model, tokenizer, prompts, reward, *, n: int = 32, iterations: int = 32, sigma: float | None = None,
                  variance: float | None = None, rel_sigma: float | None = None,
                  control_cap: float | None = DEFAULT_CONTROL_CAP, kl_coef: float = DEFAULT_KL_COEF,
                  lam: float = DEFAULT_LAM, alpha: float = 0.999,
                  horizon: int | None = None, max_new_tokens: int = 128,
                  normalize_rewards: bool = DEFAULT_NORMALIZE_REWARDS, mean_rollout: bool = False,
                  final_samples: int = 0, seed=0, backend: str | None = None, chat_template: bool | None = None,
                  with_base: bool = False, compile: bool = False, progress: bool = True, metrics: bool = True,
                  truncate_prompt: bool = False):
    """Align responses to ``prompts`` with AISP.

    Args:
        model: a Hugging Face causal LM (anything :func:`fastalign.engine.model_interface` accepts). Run in
            eval mode (the caller's modes are restored afterwards), under ``torch.no_grad``.
        tokenizer: its tokenizer. Prompts go through its chat template when it has one
            (``chat_template=False`` to feed raw text).
        prompts: a string or a list of B strings.
        reward: ``reward(prompts, responses) -> [N]`` (see :mod:`fastalign.scoring.rewards`).
        n: rollouts per prompt and iteration (paper: 32).
        iterations: K, number of importance-sampling iterations (paper: 32).
        sigma: absolute noise **std** on the pre-logits (the paper's form; not together with ``variance`` or
            ``rel_sigma``). Default: none of the three given means the relative form with
            :data:`DEFAULT_REL_SIGMA`.
        variance: the absolute noise scale as a variance (``sigma = sqrt(variance)``).
        rel_sigma: the noise std relative to the prompt's pre-logits: ``sigma_b = rel_sigma * |h_b| /
            sqrt(d)`` with ``|h_b|`` the L2 norm of the head input at the prompt's last prefilled position
            (recorded by the prefill forward), so the noise vector is ``rel_sigma`` times as long as a
            pre-logit vector whatever the model's width and scale. See the module docstring.
        control_cap: the trust region: after every update each step's control is scaled down to at most
            ``control_cap * |h_b|`` (None: no cap). See the module docstring.
        kl_coef: beta of the objective ``reward + beta * mean_t log p_base(y_t | x, y_<t)`` that the weights
            and the best response use when > 0 (0: the raw reward, the paper's form). For a rollout
            decoded greedily around the control this is the KL-regularised objective of RLHF,
            ``r - beta * KL(q || p_base)`` with ``q`` the point mass on the rollout (``KL = -log
            p_base(y)``), normalised per token so length does not pay; the base log-probabilities are
            recorded while decoding (the head runs on perturbed and unperturbed inputs together).
        lam: temperature of the importance weights ``softmax(r / lam - ...)``; default 0.5 on z-scored
            rewards (``normalize_rewards``); the paper's raw form used 0.3. See the module docstring.
        alpha: prior strength in the weights, ``(1 - alpha)/sigma * udot`` (paper: 0.999).
        horizon: tau, number of leading decode steps that are controlled (default: ``max_new_tokens``;
            reviewers read the paper as using a window shorter than the response).
        max_new_tokens: generation length limit; EOS ends a rollout earlier.
        normalize_rewards: z-score each prompt's n rewards before dividing by ``lam`` (default True, so
            ``lam`` is relative to the reward spread; False: the paper's raw ``r / lam``).
        mean_rollout: after the last update, also decode the noise-free mean control ``h + u`` greedily
            and keep it as a candidate (one more reward call per prompt), as a reimplementation does.
        final_samples: after the last update, also decode this many rollouts around the learned mean
            (fresh noise) as candidates (counted in ``reward_calls``; no update follows).
        seed: int, or one int per prompt; each prompt's stream seed hashes it with the prompt text.
        backend: fused-op backend (None: ``$FASTALIGN_BACKEND``, else ``"auto"``).
        with_base: also decode the greedy unperturbed response and score it (``base_response``,
            ``base_reward``; not counted in ``reward_calls``).
        compile: run the iterations' decode step compiled (:class:`fastalign.engine.CompiledStep`: a static
            cache, ``torch.compile(fullgraph=True)`` of the forward with the fused op inside, replayed as a
            CUDA graph on a GPU). Pays a compilation once per call; the tokens equal the eager ones up to
            rounding of the compiled kernels.
        metrics: attach text-quality metrics to each result (:mod:`fastalign.scoring.metrics`: base-model
            perplexity of the best and the greedy response, coherence, distinct-2/3 over every scored
            candidate).
        progress: one line per iteration on stderr.
        truncate_prompt: a prompt whose tokens (chat template included) + ``max_new_tokens`` exceed the
            model's context (``max_position_embeddings`` or its equivalent, see :mod:`fastalign.engine._context`)
            raises ValueError before any forward; True instead keeps the prompt's last tokens that fit
            (the template stays whole) and warns (``PromptTruncatedWarning``); the result's ``prompt`` stays
            the prompt as given, its ``extra`` holds ``truncated_prompt`` (the text the model read),
            ``prompt_tokens`` and ``prompt_tokens_kept``.

    Returns:
        :class:`fastalign.methods.results.AlignResult` for a single prompt string, else a list of them (one per
        prompt): best response over every candidate (by the objective when ``kl_coef > 0``), its raw reward
        and objective, the per-round reward trace (mean and max over each round's candidates),
        ``reward_calls = n * iterations + mean_rollout + final_samples``, wall-clock; ``extra`` holds the
        control's health per iteration: ``control_norm`` (``mean_t |u_t| / |h|`` after the update),
        ``ess`` (``1 / sum_i w_i^2`` of the update's weights), and ``objective_mean`` when there is one.
    """
    single = isinstance(prompts, str)
    prompts = encoding.check_prompts(prompts)
    settings = AispSettings.check(n=n, iterations=iterations, sigma=sigma, variance=variance, rel_sigma=rel_sigma,
                                  control_cap=control_cap, kl_coef=kl_coef, lam=lam, alpha=alpha,
                                  horizon=horizon, max_new_tokens=max_new_tokens, normalize_rewards=normalize_rewards,
                                  mean_rollout=mean_rollout, final_samples=final_samples, seed=seed, backend=backend,
                                  compile=compile)
    encoded = _common.encode_call(model, tokenizer, prompts, reward, backend, chat_template=chat_template,
                                  max_new_tokens=settings.max_new_tokens, truncate_prompt=truncate_prompt)
    results = run(model, tokenizer, encoded, reward, settings, with_base=with_base, progress=progress, metrics=metrics)
    return _common.call_results(results, encoded, single)


def _iteration_line(it: int, iterations: int, best: BestSoFar, rel, ess, seconds: float) -> str:
    """The progress line of iteration ``it``: each prompt's mean and best reward, control norm and ESS."""
    B = len(rel)
    return (f"iteration {it + 1}/{iterations}: mean reward "
            + ", ".join(fmt(best.trace_mean[b][-1]) for b in range(B)) + "; best "
            + ", ".join(fmt(best.reward[b]) for b in range(B)) + "; |u|/|h| "
            + ", ".join(f"{x:.3f}" for x in rel) + "; ESS " + ", ".join(f"{x:.1f}" for x in ess)
            + f" ({seconds:.1f} s)")


def _final_candidates(model, encoded, u, sigmas, seeds, st: AispSettings, score, record_lp: bool) -> None:
    """The extra candidates around the learned control, scored by ``score``: ``final_samples`` rollouts
    with fresh noise and the noise-free mean (``mean_rollout``)."""
    if st.final_samples:
        final = _Perturbation(u, st.final_samples, sigmas, seeds, st.backend)
        # the first stream block past every iteration's noise: k >= iterations * n * tau * d, fresh noise
        final.start(-(-st.iterations * st.n // st.final_samples), u)
        score(encoded.decode(model, repeats=st.final_samples, max_new_tokens=st.max_new_tokens, transform=final,
                             base_logprobs=record_lp), st.final_samples)
    if st.mean_rollout:
        score(encoded.decode(model, max_new_tokens=st.max_new_tokens, transform=_mean_control(u),
                             base_logprobs=record_lp), 1)


def run(model, tokenizer, encoded: _common.EncodedPrompts, reward, settings: AispSettings, *, with_base: bool = False,
        progress: bool = True, metrics: bool = True) -> list:
    """AISP on already encoded prompts (what :func:`aisp_generate` and :mod:`fastalign.hf` share): one
    :class:`~fastalign.methods.results.AlignResult` per prompt."""
    st = settings
    head = engine.output_head(model)
    device = engine.head_device(model)  # control and noise live where the head computes
    say = _common.Progress(progress, "aisp")
    t0 = time.perf_counter()
    prompts = encoded.texts
    B = len(prompts)
    seeds = torch.tensor(sampling.stream_seeds(st.seed, prompts), dtype=torch.int64, device=device)
    best = BestSoFar(B)

    record_lp = st.kl_coef > 0

    def score(roll: engine.Rollouts, repeats: int) -> torch.Tensor:
        """The rollouts' rewards, and the objective the method maximises ([B, repeats] each)."""
        texts, id_lists = encoded.responses(tokenizer, roll)
        rewards = call_reward(reward, [p for p in prompts for _ in range(repeats)], texts).view(B, repeats)
        goal = _common.objective(rewards, roll.mean_base_logprob, st.kl_coef)
        best.update(rewards, texts, id_lists, goal)
        return rewards if goal is None else goal

    d = _head_width(head)
    health = {"control_norm": [[] for _ in range(B)], "ess": [[] for _ in range(B)]}
    with engine.eval_mode(model):
        encoded.prefill(model)
        head_norm = engine.prompt_head_norm(model, encoded.prompt_cache).float()
        sigmas = noise_stds(st, head_norm, d)
        caps = None if st.control_cap is None else st.control_cap * head_norm
        base_texts = base_rewards = base_ids = None
        if with_base:
            base_texts, base_rewards, base_ids = _common.greedy_baseline(model, tokenizer, reward, encoded,
                                                               max_new_tokens=st.max_new_tokens)
        u = torch.zeros(B, st.horizon, d, dtype=torch.float32, device=device)
        perturb = _Perturbation(u, st.n, sigmas, seeds, st.backend)
        with _common.compiled_step(model, encoded, st.compile, repeats=st.n, max_new_tokens=st.max_new_tokens,
                                   transform=perturb, base_logprobs=record_lp) as step:
            for it in range(st.iterations):
                perturb.start(it, u)
                roll = encoded.decode(model, repeats=st.n, max_new_tokens=st.max_new_tokens, compiled=step,
                                      transform=None if step else perturb, base_logprobs=record_lp)
                goal = score(roll, st.n)
                lengths = roll.lengths.clamp_max(st.horizon).view(B, st.n).to(device)
                u, weights = _update_control(u, goal, lengths, perturb.udot, normalize_rewards=st.normalize_rewards,
                                             sigmas=sigmas, lam=st.lam, alpha=st.alpha, seeds=seeds, iteration=it,
                                             backend=st.backend)
                if caps is not None:
                    clamp_control(u, caps)
                rel, ess = control_health(u, head_norm, weights)
                for b in range(B):
                    health["control_norm"][b].append(rel[b])
                    health["ess"][b].append(ess[b])
                say(_iteration_line(it, st.iterations, best, rel, ess, time.perf_counter() - t0))
        _final_candidates(model, encoded, u, sigmas, seeds, st, score, record_lp)

    seconds = time.perf_counter() - t0
    results = [
        best.result(
            b, prompt=prompts[b], method="aisp", reward_calls=st.reward_calls, seconds=seconds,
            base_response=base_texts[b] if base_texts is not None else None,
            base_reward=base_rewards[b] if base_rewards is not None else None,
            extra={"n": st.n, "iterations": st.iterations, "sigma": sigmas[b], "rel_sigma": st.rel_sigma,
                   "head_norm": float(head_norm[b]), "control_cap": st.control_cap, "kl_coef": st.kl_coef,
                   "lam": st.lam, "alpha": st.alpha, "horizon": st.horizon, "normalize_rewards": st.normalize_rewards,
                   "mean_rollout": st.mean_rollout, "final_samples": st.final_samples, "stream_seed": int(seeds[b]),
                   "control_norm": health["control_norm"][b], "ess": health["ess"][b],
                   **({"objective_mean": best.trace_objective[b]} if record_lp else {})},
        )
        for b in range(B)
    ]
    if metrics:
        _common.attach_metrics(model, encoded, reward, results, base_ids, best.candidates)
    return results
