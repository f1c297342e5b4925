"""SEA — Simple Energy Adaptation (arXiv 2505.20081): gradient-based sampling of response logits.

A response of ``L`` tokens is represented by logits ``y [L, V]`` (B prompts x ``chains`` chains are
optimised together as ``y [N, L, V]``, N = B * chains, row ``b * chains + c``). SEA lowers the energy

    energy(y) = -reward_weight * r_soft(y) + flu_weight * fluency(y)

over ``y`` with the fused :func:`fastalign.ops.sea_step` (gradient clipping + Adam/SGLD + noise), where

* ``q`` are the *soft tokens* the base LM reads: ``softmax(y / soft_temp)`` (``soft_tokens="soft"``), or
  their straight-through form (``"straight_through"``, the paper; COLD's sharpened ``y / 0.001``
  input): the forward sees the one-hot ``argmax(y)``, the backward the softmax's gradient. The LM
  input is ``(q @ E) * scale``.
* ``r_soft`` is the reward made differentiable (:func:`fastalign.scoring.rewards.as_soft_reward`), reading ``q``
  (``reward_input="tokens"``) or ``softmax(y / reward_temp)`` (``"soft"``, the SEA authors').
* ``fluency`` compares ``softmax(y_l / soft_temp)`` with the base LM's next-token distribution
  ``p_LM(. | prompt, tokens_<l)``: COLD's forward cross-entropy ``-sum_v p_LM(v) log softmax(y_l)(v)``
  (``flu_form="forward"``, optionally top-k filtered by ``flu_topk``) or the authors' reverse
  ``-sum_v softmax(y_l)(v) log p_LM(v)`` (``"reverse"``), averaged over the response positions, either
  differentiated through the LM (``fluency="full"``) or a constant target (``"detached"``), which
  removes the backward pass through the LM. Detached, the target is computed along ``argmax(y)`` or
  along the point's decoded tokens (``lm_input``) and memoised per chain (:meth:`BaseLM.logits_along`):
  the LM runs only for the chains whose tokens changed.

The answer (``select="best"``): every ``eval_every`` steps each chain's point is decoded and scored, and
each chain keeps its best iterate (:class:`BestIterate`), its initial sample included; ``patience``
stops when no chain improved for that many evaluations; the best chain answers. Iterates and chains are
ranked by the raw reward or, with ``kl_coef``, by ``reward + kl_coef * mean log p_base``.

Presets: :data:`FASTALIGN` (the default) and :data:`AUTHORS` (the SEA authors' run script, each choice
with where it comes from); an option given explicitly overrides the preset.

Phases (each a function, testable alone): :func:`initial_samples` (a base-model sample per chain and the
logits along it: ``y``'s start), :func:`soft_tokens` + :class:`BaseLM` + :func:`energy_and_grad`
(the energy and its gradient), :func:`update` (the step), :func:`decode_tokens` /
:func:`decode_parallel` (decoding), :class:`BestIterate` and the scoring in :func:`run`. The prompts
are prefilled once (:class:`fastalign.methods._common.EncodedPrompts`) and their cache forked to the
chains for the initial samples, every LM forward of the energy and the ``lm_topk`` decoding.

Noise: ``"langevin"`` (the paper's update ``y <- y - lr * grad + std * xi``: the noise stays in the
iterate, :func:`~fastalign.ops.sea_step` with ``noise_std``), ``"eval"`` (the gradient is taken at
``y + std * xi`` with fresh noise each step and the noise dropped, as the SEA/COLD code does; that
point is also the one decoded), or ``"none"``. ``noise_std`` is a constant, a ``(start, end)`` pair
annealed geometrically or piecewise constant (:func:`noise_schedule`).

A chain whose energy or gradient is not finite (seen: a left-padded batch with sdpa attention on
Gemma3n) is reported with a warning and excluded from then on (its gradient zeroed, never chosen);
if every chain of a prompt fails, :class:`FloatingPointError` is raised.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import torch

from fastalign.methods import _common

from fastalign.engine import encoding, sampling

from fastalign import engine, ops
from fastalign.errors import InputError
from fastalign.methods.results import AlignResult, fmt
from fastalign.scoring.rewards import as_soft_reward, call_reward

__all__ = ["sea_generate", "run", "SeaSettings", "PRESETS", "FASTALIGN", "AUTHORS", "UNSET", "noise_schedule",
           "initial_samples", "soft_tokens", "BaseLM", "energy_and_grad", "update", "decode_tokens",
           "decode_parallel", "BestIterate"]


def noise_schedule(noise_std, steps: int) -> list[float]:
    """Per-step noise std (``steps`` values), from one of three forms:

    * a number: constant;
    * ``(start, end)``: annealed geometrically (linearly if an end is 0);
    * ``((until_1, std_1), (until_2, std_2), ...)``: piecewise constant, ``std_i`` for the steps
      ``s < until_i`` not covered by an earlier piece, the last std after the last piece (the SEA
      authors' ``--large-noise-iters 50,100,150,200 --large-gs-std 0.1,0.05,0.01,0.001``).
    """
    if isinstance(noise_std, (tuple, list)) and noise_std and all(isinstance(x, (tuple, list)) for x in noise_std):
        pieces = []
        for i, piece in enumerate(noise_std):
            if len(piece) != 2:
                raise InputError(f"noise_std[{i}]: expected a pair (until_step, std), got {piece!r}")
            until = _common.check_int(piece[0], f"noise_std[{i}][0]", lo=0)
            if pieces and until <= pieces[-1][0]:
                raise InputError(f"noise_std: the pieces' steps must increase, got {noise_std!r}")
            pieces.append((until, _common.check_float(piece[1], f"noise_std[{i}][1]", lo=0.0, hi=math.inf)))
        return [next((std for until, std in pieces if s < until), pieces[-1][1]) for s in range(steps)]
    if isinstance(noise_std, (tuple, list)):
        if len(noise_std) != 2:
            raise InputError(f"noise_std: expected a number, a pair (start, end) or pairs (until_step, std), "
                             f"got {noise_std!r}")
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


class _Unset:
    """The default of every tunable SEA option: "take it from the preset"."""

    def __repr__(self) -> str:
        return "<preset>"


UNSET = _Unset()

#: fastalign's SEA: the settings ``preset="fastalign"`` (the default) stands for; each chosen by the rule
#: of bench/RESULTS.md *SEA as its authors run it (issue 22)* unless a comment says otherwise.
FASTALIGN = dict(
    chains=4, steps=10, lr=0.1, optimizer="adam", noise="langevin", noise_std=(0.1, 0.001), max_norm=1.0,
    clip="chain", init_temp=0.5, init_sample_temp=0.8, soft_temp=1.0, soft_tokens="straight_through",
    fluency="detached", flu_form="forward", flu_topk=None, flu_weight=1.0, reward_weight=50.0,
    reward_input="tokens", reward_temp=0.1, lm_input="argmax", decoding="lm_topk", decode_topk=5,
    select="best", eval_every=5, patience=None,
)

#: The SEA authors' run script (their released code: the ``main.py`` options, ``decoding.py``'s loop and
#: ``util.py``'s ``initialize`` / ``soft_nll``; the run script passes ``--num-iters 200 --lr 0.01
#: --reward-weight 1 --flu-weight 0.1 --topk 10 --div RKL --detach --init-temp 10 --reward-temp 0.1
#: --straight-through --large-noise-iters 50,100,150,200 --large-gs-std 0.1,0.05,0.01,0.001 --batch-size 4
#: --patience 100``), choice by choice:
AUTHORS = dict(
    chains=4,                       # --batch-size 4: chains per prompt
    steps=199,                      # --num-iters 200: 200 evaluations, the last without an update
    lr=0.01, optimizer="adam",      # --lr 0.01, --optim adam (torch.optim.Adam on the logits)
    noise="eval",                   # y_eval = epsilon + noise, fresh noise each iteration, never accumulated
    noise_std=((1, 0.0), (51, 0.1), (101, 0.05), (151, 0.01), (201, 0.001)),  # drawn after iteration i-1
    max_norm=None, clip=None,       # clip_grad_norm_ is commented out in their loop
    init_temp=10.0,                 # --init-temp 10: y0 = base logits along the sample / 10 (a flat start)
    init_sample_temp=0.8,           # initialize(): model.generate(do_sample=True, temperature=0.8)
    soft_temp=1.0,                  # --input-lgt-temp 1
    soft_tokens="straight_through", # --straight-through: the LM sees (near) one-hot tokens
    fluency="detached",             # --detach: the LM's output is a constant target
    flu_form="reverse",             # --div RKL: -sum softmax(y) log p_LM
    flu_topk=None,                  # RKL filters neither side
    flu_weight=0.1, reward_weight=1.0,  # --flu-weight 0.1 --reward-weight 1
    reward_input="soft", reward_temp=0.1,  # the reward model embeds softmax(y / 0.1)
    lm_input="decoded",             # their LM input is y filtered to the LM's top-k (the decoding rule)
    decoding="lm_topk", decode_topk=10,    # decode_with_model_topk with --topk 10
    select="best", eval_every=1,    # every iteration decodes and scores each chain, keeps its best
    patience=100,                   # --patience 100: stop after 100 iterations without a better chain
)
PRESETS = {"fastalign": FASTALIGN, "authors": AUTHORS}


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
    flu_form: str
    flu_topk: int | None
    flu_weight: float
    reward_weight: float
    reward_input: str
    reward_temp: float
    lm_input: str
    decoding: str
    decode_topk: int
    select: str
    eval_every: int | None
    patience: int | None
    max_new_tokens: int
    seed: object
    backend: str | None
    kl_coef: float = 0.0
    preset: str = "fastalign"

    @classmethod
    def check(cls, *, preset="fastalign", max_new_tokens, seed, backend, kl_coef=0.0, **options) -> "SeaSettings":
        """Settings from ``preset`` (a name of :data:`PRESETS`) with ``options`` on top (an option left
        at :data:`UNSET` takes the preset's value)."""
        base = PRESETS.get(preset) if isinstance(preset, str) else None
        if base is None:
            raise InputError(f"preset: expected one of {', '.join(repr(p) for p in PRESETS)}, got {preset!r}")
        unknown = sorted(set(options) - set(base))
        if unknown:
            raise InputError(f"sea: unknown option(s) {', '.join(unknown)}; the options are {', '.join(base)}")
        o = {**base, **{k: v for k, v in options.items() if v is not UNSET}}
        steps = _common.check_int(o["steps"], "steps", lo=0)
        noise = _choice(o["noise"], "noise", ("langevin", "eval", "none"))
        clip = _choice(o["clip"], "clip", ("chain", "row", "global", None))
        max_norm = None if clip is None or o["max_norm"] is None else \
            _common.check_float(o["max_norm"], "max_norm", positive=True)
        # "langevin": one std per update (steps); "eval": one per evaluation point (steps + 1, the last
        # one decoded after the last update)
        points = steps + 1 if noise == "eval" else max(steps, 1)
        stds = noise_schedule(o["noise_std"], points) if noise != "none" else [0.0] * points
        flu_form = _choice(o["flu_form"], "flu_form", ("forward", "reverse"))
        flu_topk = None if o["flu_topk"] is None else _common.check_int(o["flu_topk"], "flu_topk")
        if flu_topk is not None and flu_form == "reverse":
            raise InputError("flu_topk: filters the forward form's target only (flu_form='forward')")
        fluency = _choice(o["fluency"], "fluency", ("full", "detached"))
        lm_input = _choice(o["lm_input"], "lm_input", ("argmax", "decoded"))
        decoding = _choice(o["decoding"], "decoding", ("argmax", "lm_topk"))
        if lm_input == "decoded" and (fluency != "detached" or decoding != "lm_topk"):
            raise InputError("lm_input='decoded': needs fluency='detached' and decoding='lm_topk' (the LM reads "
                             "the decoded tokens)")
        select = _choice(o["select"], "select", ("best", "final"))
        eval_every = None if o["eval_every"] is None else _common.check_int(o["eval_every"], "eval_every")
        if select == "best" and eval_every is None:
            raise InputError("eval_every: select='best' keeps the best evaluated iterate; give how often to "
                             "evaluate (1: every step)")
        return cls(chains=_common.check_int(o["chains"], "chains"), steps=steps,
                   lr=_common.check_float(o["lr"], "lr", lo=0.0, hi=math.inf),
                   optimizer=_choice(o["optimizer"], "optimizer", ("adam", "sgld")), noise=noise, stds=tuple(stds),
                   max_norm=max_norm, clip=clip,
                   init_temp=_common.check_float(o["init_temp"], "init_temp", positive=True),
                   init_sample_temp=_common.check_float(o["init_sample_temp"], "init_sample_temp", lo=0.0,
                                                        hi=math.inf),
                   soft_temp=_common.check_float(o["soft_temp"], "soft_temp", positive=True),
                   soft_tokens=_choice(o["soft_tokens"], "soft_tokens", ("soft", "straight_through")),
                   fluency=fluency, flu_form=flu_form, flu_topk=flu_topk,
                   flu_weight=_common.check_float(o["flu_weight"], "flu_weight", lo=0.0, hi=math.inf),
                   reward_weight=_common.check_float(o["reward_weight"], "reward_weight", lo=0.0, hi=math.inf),
                   reward_input=_choice(o["reward_input"], "reward_input", ("tokens", "soft")),
                   reward_temp=_common.check_float(o["reward_temp"], "reward_temp", positive=True),
                   lm_input=lm_input, decoding=decoding,
                   decode_topk=_common.check_int(o["decode_topk"], "decode_topk"), select=select,
                   eval_every=eval_every,
                   patience=None if o["patience"] is None else _common.check_int(o["patience"], "patience"),
                   max_new_tokens=_common.check_int(max_new_tokens, "max_new_tokens"),
                   seed=seed, backend=backend, kl_coef=_common.check_kl_coef(kl_coef), preset=preset)


def sea_generate(model, tokenizer, prompts, reward, *, preset: str = "fastalign", chains=UNSET, steps=UNSET,
                 lr=UNSET, optimizer=UNSET, noise=UNSET, noise_std=UNSET, max_norm=UNSET, clip=UNSET,
                 init_temp=UNSET, init_sample_temp=UNSET, soft_temp=UNSET, soft_tokens=UNSET, fluency=UNSET,
                 flu_form=UNSET, flu_topk=UNSET, flu_weight=UNSET, reward_weight=UNSET, reward_input=UNSET,
                 reward_temp=UNSET, lm_input=UNSET, decoding=UNSET, decode_topk=UNSET, select=UNSET,
                 eval_every=UNSET, patience=UNSET, max_new_tokens: int = 32, soft_reward=None, seed=0,
                 backend: str | None = None, kl_coef: float = 0.0, chat_template: bool | None = None,
                 metrics: bool = True, progress: bool = True, truncate_prompt: bool = False):
    """Align responses to ``prompts`` with SEA.

    Every optimisation option defaults to the ``preset``'s value: ``"fastalign"`` (:data:`FASTALIGN`,
    measured on SmolLM2-135M-Instruct with the all-MiniLM cosine reward, ``bench/RESULTS.md`` *SEA as its
    authors run it*) or ``"authors"`` (:data:`AUTHORS`, the SEA authors' run script, choice by choice
    with where each comes from); an option given here overrides the preset. Below, "fastalign: x;
    authors: z" names both presets' values.

    Args:
        model, tokenizer, prompts: as in :func:`fastalign.methods.aisp.aisp_generate`.
        reward: the string reward ``reward(prompts, responses) -> [N]``, used to score decoded
            responses; unless ``soft_reward`` is given it must also provide the differentiable form
            (``reward.soft_reward_fn(model, tokenizer)``, see :func:`fastalign.scoring.rewards.as_soft_reward`).
        preset: ``"fastalign"`` or ``"authors"``.
        chains: chains per prompt, each from its own base sample (4; the paper's ablation finds 1 chain
            clearly worse).
        steps: optimisation steps (updates) (fastalign: 10; authors: 199, their 200 iterations of which
            the last does not update).
        lr, optimizer: step size and ``"adam"`` (both presets) or ``"sgld"`` (textbook Langevin)
            (fastalign: 0.1; authors: 0.01).
        noise: ``"langevin"`` (the noise stays in ``y``: the paper's update; fastalign), ``"eval"`` (the
            gradient is taken, and the point decoded, at ``y + std * xi`` with fresh noise each step, never
            accumulated: the authors' code) or ``"none"``.
        noise_std: a constant, ``(start, end)`` annealed geometrically (fastalign: 0.1 -> 0.001) or
            piecewise ``((until_step, std), ...)`` (authors: none at the start, then 0.1 / 0.05 / 0.01 /
            0.001 switching at evaluations 51 / 101 / 151): see :func:`noise_schedule`.
        max_norm, clip: gradient-norm clipping before the update, inside the fused step: each clip group's
            gradient is scaled by ``min(1, max_norm / (norm + 1e-6))`` (``clip``: ``"chain"`` per chain,
            ``"row"`` per position, ``"global"`` whole tensor as ``clip_grad_norm_``; None: none)
            (fastalign: per chain at 1.0; authors: none, their ``clip_grad_norm_`` is commented out).
        init_temp: ``y`` starts at the base logits along the initial sample divided by this (fastalign:
            0.5; authors: 10, a flat start that moves easily).
        init_sample_temp: temperature of the initial samples (0.8 in both presets: the authors', and chosen
            for fastalign by the fluent-start study of bench/RESULTS.md; 0: greedy).
        soft_temp: the fluency term's distribution is ``softmax(y / soft_temp)`` (1.0).
        soft_tokens: what the base LM reads: ``"straight_through"`` (one-hot forward, softmax gradient;
            both presets) or ``"soft"`` (the plain softmax blend of embeddings).
        fluency: ``"detached"`` (the base LM's distributions are a constant target, no backward through
            the LM; both presets) or ``"full"`` (differentiated through the LM).
        flu_form: ``"forward"``: COLD's ``-sum_v p_LM(v) log softmax(y)(v)`` (fastalign) or
            ``"reverse"``: ``-sum_v softmax(y)(v) log p_LM(v)`` (authors, ``--div RKL``); averaged over
            the response positions.
        flu_topk: keep only the base LM's top-k tokens in the forward form's target (None: all).
        flu_weight, reward_weight: energy weights (fastalign: 1 and 50; authors: 0.1 and 1).
        reward_input: what the differentiable reward reads: ``"tokens"`` (the LM's input, e.g. the
            straight-through one-hot; fastalign) or ``"soft"``: ``softmax(y / reward_temp)`` blended
            embeddings (authors).
        reward_temp: temperature of ``reward_input="soft"`` (0.1).
        lm_input: the tokens the detached fluency target is computed along: ``"argmax"`` (``argmax(y)``;
            fastalign) or ``"decoded"`` (this step's LM-top-k decoding of ``y``, which the authors' LM
            input approximates by one parallel sweep: their ``y`` filtered to the previous iteration's
            LM top-k).
        decoding: ``"lm_topk"`` (COLD: at each position the base LM's ``decode_topk`` most likely tokens
            given the decoded prefix, the one ``y`` ranks highest; both presets) or ``"argmax"``.
        decode_topk: k of ``"lm_topk"`` (fastalign: 5; authors: 10).
        select: ``"best"``: every ``eval_every`` steps each chain's point is decoded and scored and
            each chain keeps its best iterate among those scoring at least the prompt's best initial
            sample (the starts included), so no answer scores below the best start, with ``kl_coef``
            too; the best chain answers (both presets). ``"final"``: the best of the chains' final
            points (the former behaviour).
        eval_every: steps between evaluations, the start and the last point always evaluated (fastalign:
            5; authors: 1; with ``"final"`` None evaluates the end only). An evaluation's LM-top-k
            decoding is one memoised parallel sweep from the previous decoding when that settles it
            (no LM rows when no choice moved, :func:`decode_parallel`), else incremental.
        patience: stop once this many evaluations in a row improved no chain (fastalign: None, never;
            authors: 100).
        max_new_tokens: response length L (32; the authors use 50).
        soft_reward: the differentiable reward ``soft(prompts, probs [N, L, V], lengths [N]) -> [N]``.
        seed: int or one int per prompt; chain c of a prompt hashes (seed, prompt, c).
        kl_coef: rank iterates and chains by ``reward + kl_coef * mean_t log p_base(y_t | x, y_<t)`` (the
            objective of :func:`fastalign.methods.aisp.aisp_generate`; the log-probabilities come from the LM
            forwards the decoding already ran); 0: by the raw reward.
        backend: fused-op backend for ``sea_step`` / ``gaussian_perturb``.
        metrics: attach text-quality metrics (:mod:`fastalign.scoring.metrics`; distinct-n over the chains' answers).
        progress: a line per evaluation on stderr.
        truncate_prompt: what a prompt past the model's context does: raise before any forward (False)
            or keep its last tokens that fit, with a warning (see :func:`fastalign.methods.aisp.aisp_generate`).

    Returns:
        :class:`fastalign.methods.results.AlignResult` (a list for a list of prompts): the answer of the prompt's
        best (finite) chain, its reward, ``base_response`` / ``base_reward`` (the first chain's sampled
        initial response), the decoded-reward trace (mean/max over chains per evaluation) and in ``extra``:
        ``energy``, ``soft_reward``, ``fluency`` (mean over finite chains per step, at the evaluation
        point), ``grad_norm`` (per step, one value per chain: its clip-group norm, the largest row norm
        for ``clip="row"``, the global norm for ``clip="global"``), ``best_step`` (per chain, the
        evaluation its best iterate comes from; -1: its initial sample; -2: none reached the prompt's best
        start), ``start_reward`` (per chain),
        ``steps_run`` (fewer than ``steps`` after an early stop), ``failed_chains``, ``lm_forward_rows``
        (LM rows run for the energy and the parallel decoding sweeps; memoised rows are not run again; the
        incremental decodings are not counted).
    """
    single = isinstance(prompts, str)
    prompts = encoding.check_prompts(prompts)
    st = SeaSettings.check(preset=preset, chains=chains, steps=steps, lr=lr, optimizer=optimizer, noise=noise,
                           noise_std=noise_std, max_norm=max_norm, clip=clip, init_temp=init_temp,
                           init_sample_temp=init_sample_temp, soft_temp=soft_temp, soft_tokens=soft_tokens,
                           fluency=fluency, flu_form=flu_form, flu_topk=flu_topk, flu_weight=flu_weight,
                           reward_weight=reward_weight, reward_input=reward_input, reward_temp=reward_temp,
                           lm_input=lm_input, decoding=decoding, decode_topk=decode_topk, select=select,
                           eval_every=eval_every, patience=patience, max_new_tokens=max_new_tokens, seed=seed,
                           backend=backend, kl_coef=kl_coef)
    encoded = _common.encode_call(model, tokenizer, prompts, reward, backend, chat_template=chat_template,
                                  max_new_tokens=st.max_new_tokens, truncate_prompt=truncate_prompt)
    engine.input_embedding(model)  # refuses an offloaded embedding before any work
    soft = soft_reward if soft_reward is not None else as_soft_reward(reward, model, tokenizer)
    results = run(model, tokenizer, encoded, reward, soft, st, metrics=metrics, progress=progress)
    return _common.call_results(results, encoded, single)


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
class _StraightThrough(torch.autograd.Function):
    """Forward ``one_hot(argmax y)``; backward the softmax's vector-Jacobian product
    ``q * (g - sum(g * q)) / temp`` with ``q = softmax(y / temp)``, computed from ``y`` in the backward
    (no ``[N, L, V]`` softmax kept from the forward, no int64 one-hot, no ``hard + q - q.detach()``)."""

    @staticmethod
    def forward(ctx, y, temp):
        ctx.save_for_backward(y)
        ctx.temp = temp
        return torch.zeros_like(y).scatter_(-1, y.argmax(-1, keepdim=True), 1.0)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        q = torch.softmax(y / ctx.temp, dim=-1)
        return q * (g - (g * q).sum(-1, keepdim=True)) / ctx.temp, None


def soft_tokens(y: torch.Tensor, mode: str, temp: float = 1.0) -> torch.Tensor:
    """Soft tokens ``q [N, L, V]`` of logits ``y [N, L, V]``: ``softmax(y / temp)`` (``"soft"``), or
    straight-through (``"straight_through"``): the value is exactly ``one_hot(argmax y)``, the gradient
    that of the softmax."""
    if mode == "soft":
        return torch.softmax(y / temp, dim=-1)
    return _StraightThrough.apply(y, temp)


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
        prompt_cache = encoded.prefill(model).prompt_cache
        self.api, self.cache = prompt_cache.api, prompt_cache.cache
        self.E, self.scale = engine.input_embedding(model)
        ids = encoded.input_ids.repeat_interleave(chains, dim=0)
        in_dev = ids.device
        with torch.no_grad():
            self.last = model.get_input_embeddings()(ids[:, -1:]).detach()  # [N, 1, d]
        mask = torch.cat([encoded.attention_mask.repeat_interleave(chains, dim=0).long(),
                          resp_mask.to(in_dev).long()], dim=1)
        self.mask = mask
        self.position_ids = engine.position_ids(mask)[:, encoded.input_ids.shape[1] - 1:]
        #: memo slot name -> (tokens [N, L], logits [N, L, V]): the latest logits along each kind of tokens
        self.memo: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.rows_run = 0

    def logits(self, q: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[n, L, V]`` along soft tokens ``q [n, L, V]`` of the chains ``rows`` (default: all)."""
        emb = (q.to(device=self.E.device, dtype=self.E.dtype) @ self.E) * self.scale
        return self._forward(emb, rows)

    def _forward(self, emb: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        rows = torch.arange(emb.shape[0]) if rows is None else rows.cpu()
        r = rows.to(self.mask.device)
        kwargs = engine.forward_kwargs(
            self.api, inputs_embeds=torch.cat([self.last[r], emb.to(self.last.device)], dim=1),
            attention_mask=self.mask[r], use_cache=self.cache is not None,
            cache=engine.fork_cache(self.cache, (rows // self.chains).to(self.mask.device)),
            position_ids=self.position_ids[r])
        self.rows_run += len(rows)
        L = emb.shape[1]
        return self.model(**kwargs).logits[:, :L].to(device=self.device, dtype=torch.float32)

    @torch.no_grad()
    def target(self, q: torch.Tensor, one_hot: bool) -> torch.Tensor:
        """Detached logits ``[N, L, V]`` along soft tokens ``q``; for one-hot ``q`` the logits along its
        tokens, memoised (:meth:`logits_along`)."""
        if not one_hot:
            return self.logits(q)
        return self.logits_along(q.argmax(-1), "argmax")

    @torch.no_grad()
    def logits_along(self, tokens: torch.Tensor, slot: str) -> torch.Tensor:
        """Detached logits ``[N, L, V]`` along the response ids ``tokens [N, L]`` (position l predicts
        token l). Memoised per chain: a chain whose tokens equal those of the latest call for any slot
        reuses that call's logits; only the other chains run (one forward, their cache forked from the
        prompts'), and the result is kept as ``slot``'s latest. The embedding is a row lookup (the same
        values as ``one_hot @ E``)."""
        tokens = tokens.to(self.device)
        N = tokens.shape[0]
        have = torch.zeros(N, dtype=torch.bool, device=self.device)
        out = None
        for memo_tokens, memo_logits in self.memo.values():
            same = (memo_tokens == tokens).all(-1) & ~have
            if out is None and bool(same.all()):  # one memo covers every chain: no copy (never written to)
                out, have = memo_logits, same
                break
            if bool(same.any()):
                out = torch.empty_like(memo_logits) if out is None else out
                out[same] = memo_logits[same]
                have |= same
        missing = (~have).nonzero().squeeze(1)
        if len(missing):
            emb = self.E[tokens[missing].to(self.E.device)] * self.scale
            fresh = self._forward(emb, missing)
            if out is None and len(missing) == N:
                out = fresh
            else:
                out = fresh.new_empty((N,) + fresh.shape[1:]) if out is None else out
                out[missing.to(out.device)] = fresh
        self.remember(slot, tokens, out)
        return out

    def remember(self, slot: str, tokens: torch.Tensor, logits: torch.Tensor) -> None:
        """Keep ``logits [N, L, V]`` along ``tokens [N, L]`` as ``slot``'s latest (e.g. the incremental
        decoding's own logits, which :meth:`logits_along` then reuses)."""
        self.memo[slot] = (tokens.to(self.device).clone(), logits.to(self.device))


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


def _fluency_logits(y_eval: torch.Tensor, lm: BaseLM, st: SeaSettings, decoded: torch.Tensor | None):
    """The base LM's logits ``[N, L, V]`` the fluency term compares ``y`` with, and the LM's soft tokens
    ``q`` when the energy needs them (``None`` otherwise)."""
    if st.fluency == "full":
        q = soft_tokens(y_eval, st.soft_tokens, st.soft_temp)
        return lm.logits(q), q
    if st.lm_input == "decoded":
        return lm.logits_along(decoded, "decoded"), None
    if st.soft_tokens == "straight_through":
        return lm.logits_along(y_eval.detach().argmax(-1), "argmax"), None
    q = soft_tokens(y_eval, st.soft_tokens, st.soft_temp)
    return lm.target(q.detach(), one_hot=False), q


def energy_and_grad(y_eval: torch.Tensor, lm: BaseLM, soft, prompts_rep: list[str], resp_mask: torch.Tensor,
                    st: SeaSettings, decoded: torch.Tensor | None = None) -> Energy:
    """The energy of ``y_eval [N, L, V]`` and its gradient (see the module docstring); ``decoded [N, L]``:
    this point's decoded tokens (needed for ``lm_input="decoded"``)."""
    lengths = resp_mask.sum(-1)
    with torch.enable_grad():
        y_eval = y_eval.detach().requires_grad_(True)
        logits, q = _fluency_logits(y_eval, lm, st, decoded)
        if st.flu_form == "forward":  # COLD: -sum p_LM log softmax(y)
            ce = -(fluency_target(logits, st.flu_topk) * torch.log_softmax(y_eval / st.soft_temp, dim=-1)).sum(-1)
        else:  # the SEA authors' RKL: -sum softmax(y) log p_LM
            ce = -(torch.softmax(y_eval / st.soft_temp, dim=-1) * torch.log_softmax(logits, dim=-1)).sum(-1)
        m = resp_mask.to(ce.dtype)
        fluency = (ce * m).sum(-1) / m.sum(-1).clamp_min(1)  # [N]
        if st.reward_input == "soft":
            r_in = torch.softmax(y_eval / st.reward_temp, dim=-1)
        else:
            r_in = q if q is not None else soft_tokens(y_eval, st.soft_tokens, st.soft_temp)
        r_soft = soft(prompts_rep, r_in, lengths).to(fluency.dtype)
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
    if st.noise == "eval" and st.stds[step] > 0:
        return ops.gaussian_perturb(y, std=st.stds[step], seed=seeds, step=step, backend=st.backend)
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
def decode_tokens(model, encoded: _common.EncodedPrompts, y: torch.Tensor, st: SeaSettings, *,
                  with_logits: bool = False):
    """Response ids ``[N, L]`` from ``y [N, L, V]``: ``argmax(y)``, or COLD's LM-top-k rule (at each
    position, among the base LM's ``decode_topk`` most likely next tokens given the prompt and the
    decoded prefix, the one with the highest ``y``; padding after an EOS), decoded incrementally on the
    prompts' cache. ``with_logits`` (LM-top-k only): also the LM's float32 logits along the ids
    ``[N, L, V]`` (the decoding's own; zero where no row was still running)."""
    if st.decoding == "argmax":
        return y.argmax(-1)
    N, L, V = y.shape
    k = min(st.decode_topk, V)

    def choose(logits, step, active):
        cand = logits.topk(k, dim=-1).indices.to(y.device)  # [N, k]
        best = y[:, step].gather(-1, cand).argmax(-1, keepdim=True)
        return cand.gather(-1, best).squeeze(-1).to(logits.device)

    roll = encoded.decode(model, repeats=st.chains, max_new_tokens=L, choose=choose, return_logits=with_logits)
    T = roll.tokens.shape[1]
    tokens = torch.full((N, L), encoded.pad_id, dtype=torch.long, device=y.device)
    tokens[:, :T] = roll.tokens.to(y.device)
    if not with_logits:
        return tokens
    logits = torch.zeros(N, L, roll.logits.shape[-1], dtype=torch.float32, device=y.device)
    logits[:, :T] = roll.logits.to(device=y.device, dtype=torch.float32)
    return tokens, logits


def _pad_after_eos(tokens: torch.Tensor, eos_ids, pad_id: int) -> torch.Tensor:
    """``tokens [N, L]`` with every position after each row's first EOS set to ``pad_id`` (the EOS kept:
    :func:`_eos_lengths`' cut)."""
    N, L = tokens.shape
    cut = _eos_lengths(tokens, torch.full((N,), L, device=tokens.device), eos_ids)
    return tokens.masked_fill(torch.arange(L, device=tokens.device) >= cut.unsqueeze(1), pad_id)


def lm_topk_choice(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """COLD's LM-top-k rule at every position at once: among the ``k`` tokens with the highest
    ``logits [N, L, V]``, the one ``y [N, L, V]`` ranks highest (ties: the LM's order). ``[N, L]`` ids."""
    cand = logits.topk(min(k, logits.shape[-1]), dim=-1).indices.to(y.device)  # [N, L, k]
    best = y.gather(-1, cand).argmax(-1, keepdim=True)
    return cand.gather(-1, best).squeeze(-1)


@torch.no_grad()
def decode_parallel(lm: BaseLM, y: torch.Tensor, st: SeaSettings, eos_ids, pad_id: int,
                    start: torch.Tensor | None = None, max_sweeps: int | None = None):
    """The LM-top-k decoding of ``y [N, L, V]`` (:func:`decode_tokens`'s ids) as a fixed point, with
    the LM's logits along it: ``(tokens [N, L], logits [N, L, V])``.

    Position l's choice depends only on the tokens before it, so from any start the iteration
    ``d <- pad_after_eos(lm_topk_choice(logits_along(d), y))`` fixes one more position per sweep at least
    and reaches the sequential decoding after at most L sweeps (+1 to see it unchanged). Started from
    the previous evaluation's tokens (``start``) and :meth:`BaseLM.logits_along` memoised, the first sweep
    runs no LM row at all: when ``y``'s change since then moved no choice, that one sweep is the whole
    decoding. When a choice moves, every later position can move with it and each sweep (a full forward
    of the rows that changed) fixes about one position: measured on SmolLM2-135M, 30-32 sweeps for
    L = 32 after an Adam step, far slower than the incremental decoding. :func:`run` therefore tries
    one sweep (``max_sweeps=1``) and falls back to :func:`decode_tokens`. Returns None when
    ``max_sweeps`` sweeps did not reach the fixed point.
    """
    d = _pad_after_eos((y.argmax(-1) if start is None else start).to(y.device), eos_ids, pad_id)
    for _ in range(y.shape[1] + 1 if max_sweeps is None else max_sweeps):
        logits = lm.logits_along(d, "decoded")
        new = _pad_after_eos(lm_topk_choice(logits, y, st.decode_topk), eos_ids, pad_id)
        if torch.equal(new, d):
            return d, logits
        d = new
    if max_sweeps is None:
        raise AssertionError("decode_parallel: no fixed point after L + 1 sweeps")  # cannot happen (see above)
    return None


def _id_lengths(ids: list[list[int]]) -> torch.Tensor:
    """``[N]`` lengths of the scored responses' ids (EOS excluded: the objective's log-probabilities are
    those of the text the reward read)."""
    return torch.tensor([len(i) for i in ids], dtype=torch.long)


def _mean_logprob(logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[N]`` float64 ``mean_{t < lengths} log softmax(logits)[t, tokens_t]`` (-inf for an empty response)."""
    lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1).to(logits.device)).squeeze(-1)
    pos = torch.arange(tokens.shape[1], device=lp.device)
    m = (pos.unsqueeze(0) < lengths.to(lp.device).unsqueeze(1)).to(lp.dtype)
    n = m.sum(-1)
    mean = (lp * m).sum(-1).double() / n.clamp_min(1).double()
    return torch.where(n > 0, mean, torch.full_like(mean, -math.inf)).cpu()


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
        cut = _eos_lengths(tokens, self.lengths, self.encoded.eos_ids).cpu()
        texts, ids = encoding.response_texts(self.tokenizer, tokens.cpu(), cut, self.encoded.eos_ids)
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


class BestIterate:
    """Each chain's best evaluated iterate so far: by ``goal`` (the objective, or the raw reward), among
    the iterates whose raw reward is at least ``floor`` (per chain; :func:`run` sets it to the best raw
    reward among the prompt's initial samples, so that with ``kl_coef`` too no answer scores below the
    best start). Strictly better replaces (the earliest of equal iterates stays); chains not ``alive``
    never change. A chain with no eligible iterate keeps ``goal`` -inf and no text."""

    def __init__(self, n: int, floor: torch.Tensor | None = None):
        self.goal = torch.full((n,), -math.inf, dtype=torch.float64)
        self.reward = torch.full((n,), math.nan, dtype=torch.float64)
        self.step = torch.full((n,), -2, dtype=torch.long)
        self.floor = torch.full((n,), -math.inf, dtype=torch.float64) if floor is None else \
            floor.to(device="cpu", dtype=torch.float64)
        self.texts: list[str | None] = [None] * n
        self.ids: list[list[int] | None] = [None] * n

    def update(self, goal: torch.Tensor, reward: torch.Tensor, texts: list[str], ids: list[list[int]], step: int,
               alive: torch.Tensor) -> torch.Tensor:
        """Keep the iterate of ``step`` for the chains it improves; returns them ``[N]`` bool."""
        goal, reward = goal.to(torch.float64).cpu(), reward.to(torch.float64).cpu()
        better = alive.cpu() & (goal > self.goal) & (reward >= self.floor)
        self.goal = torch.where(better, goal, self.goal)
        self.reward = torch.where(better, reward, self.reward)
        self.step = torch.where(better, torch.full_like(self.step, step), self.step)
        for i in better.nonzero().flatten().tolist():
            self.texts[i], self.ids[i] = texts[i], ids[i]
        return better


def _goal(r: torch.Tensor, mean_logprob, kl_coef: float) -> torch.Tensor:
    """What ranks iterates and chains: the raw rewards ``r [N]``, or the objective
    ``r + kl_coef * mean_logprob()`` (:func:`fastalign.methods._common.objective`); float64 on CPU."""
    goal = _common.objective(r, mean_logprob, kl_coef)
    return r.double().cpu() if goal is None else goal


def _decode(model, encoded, lm: BaseLM, y_eval: torch.Tensor, st: SeaSettings, start):
    """``(tokens [N, L], logits along them [N, L, V] or None)`` of ``y_eval``: for LM-top-k, one
    memoised parallel sweep from the previous decoding ``start`` (free when no choice moved), else the
    incremental decoding, whose logits are remembered as the ``"decoded"`` memo."""
    if st.decoding != "lm_topk":
        return y_eval.argmax(-1), None
    if start is not None:
        done = decode_parallel(lm, y_eval, st, encoded.eos_ids, encoded.pad_id, start=start, max_sweeps=1)
        if done is not None:
            return done
    tokens, logits = decode_tokens(model, encoded, y_eval, st, with_logits=True)
    lm.remember("decoded", tokens, logits)
    return tokens, logits


def _evaluate(model, y_eval, lm, encoded, scores, best, st, alive, step, start):
    """Decode ``y_eval``, score it and keep each chain's best: ``(tokens [N, L], improved [N] bool)``."""
    tokens, logits = _decode(model, encoded, lm, y_eval, st, start)
    label = "start" if step == 0 else f"step {step}/{st.steps}"
    texts, ids, r = scores(tokens, alive, label)
    if logits is None and st.kl_coef:
        logits = lm.logits_along(tokens, "decoded")
    goal = _goal(r, lambda: _mean_logprob(logits, tokens, _id_lengths(ids)), st.kl_coef)
    return tokens, best.update(goal, r, texts, ids, step, alive)


def _due(st: SeaSettings, s: int) -> bool:
    """Whether evaluation point ``s`` (0 .. steps) is decoded and scored."""
    if s == st.steps:
        return True
    return st.eval_every is not None and s % st.eval_every == 0 and (s > 0 or st.select == "best")


def _record_step(traces: dict, e, gnorm, alive: torch.Tensor, B: int, C: int) -> None:
    """Append one update's per-prompt means (energy, soft reward, fluency) and per-chain gradient norms
    (its norm for clip "chain", its largest row norm for "row", the global norm for "global")."""
    for key in ("energy", "soft_reward", "fluency"):
        traces[key].append(_masked_mean(getattr(e, key), alive, B))
    if gnorm is not None:
        g = gnorm.detach().float()
        g = g.expand(B * C) if g.dim() == 0 else (g.amax(-1) if g.dim() == 2 else g)
        traces["grad_norm"].append(g.view(B, C).tolist())


def _choose_chains(best: BestIterate, alive: torch.Tensor, starts: tuple, B: int, C: int) -> torch.Tensor:
    """``[B]`` each prompt's answering chain: the live chain with the best objective. A prompt whose every
    eligible iterate has objective -inf (empty responses) answers its best start, which is then written
    into ``best`` (``starts``: the starts' texts, ids, rewards and objectives, ``[B * C]`` each)."""
    base_texts, base_ids, base_r, start_goal = starts
    live_goal = torch.where(alive.cpu(), best.goal, torch.full_like(best.goal, -math.inf)).view(B, C)
    start_pick = torch.where(alive.cpu(), base_r.double().cpu(), torch.full_like(best.goal, -math.inf)).view(B, C)
    pick = torch.where(torch.isfinite(live_goal).any(-1), live_goal.argmax(-1), start_pick.argmax(-1))
    for i in (b * C + int(pick[b]) for b in range(B)):
        if best.texts[i] is None:  # that fallback: the start itself
            best.texts[i], best.ids[i], best.reward[i] = base_texts[i], base_ids[i], float(base_r[i])
            best.goal[i], best.step[i] = float(start_goal[i]), -1
    return pick


def run(model, tokenizer, encoded: _common.EncodedPrompts, reward, soft, st: SeaSettings, *,
        metrics: bool = True, progress: bool = True) -> list:
    """SEA on already encoded prompts: one :class:`~fastalign.methods.results.AlignResult` per prompt."""
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
        start_goal = _goal(base_r, lambda: _mean_logprob(init.logits, init.tokens, _id_lengths(base_ids)),
                           st.kl_coef)
        floor = base_r.double().view(B, C).amax(-1).repeat_interleave(C)  # each prompt's best start
        best = BestIterate(B * C, floor if st.select == "best" else None)
        if st.select == "best":  # the starts are iterates: no answer ends below the prompt's best start
            best.update(start_goal, base_r, base_texts, base_ids, -1, alive)
        lm = BaseLM(model, encoded, C, resp_mask, device)
        state = (torch.zeros_like(y), torch.zeros_like(y)) if st.optimizer == "adam" else None
        traces = {"energy": [], "soft_reward": [], "fluency": [], "grad_norm": []}
        decoded, stall, steps_run = None, 0, 0
        for s in range(st.steps + 1):
            y_eval = evaluation_point(y, st, seeds_dev, s)
            if _due(st, s):
                if st.select == "final" and s == st.steps:
                    best = BestIterate(B * C)  # "final": the last point's decoding only
                decoded, improved = _evaluate(model, y_eval, lm, encoded, scores, best, st, alive, s, decoded)
                stall = 0 if bool(improved.any()) else stall + 1
                if st.patience is not None and stall >= st.patience and s < st.steps:
                    say(f"step {s}: no chain improved for {stall} evaluations; stopping")
                    break
            if s == st.steps:
                break
            if st.lm_input == "decoded" and not _due(st, s):
                decoded, _ = _decode(model, encoded, lm, y_eval, st, decoded)
            e = energy_and_grad(y_eval, lm, soft, scores.prompts_rep, resp_mask, st, decoded)
            alive = _check_finite(e, alive, prompts, C, s)
            y, gnorm = update(y, e.grad, st, seeds_dev, s, state)
            steps_run = s + 1
            _record_step(traces, e, gnorm, alive, B, C)
            if (s + 1) % 10 == 0:
                say(f"step {s + 1}/{st.steps}: energy " + ", ".join(f"{v:.3f}" for v in traces["energy"][-1])
                    + f" ({time.perf_counter() - t0:.1f} s)")
    seconds = time.perf_counter() - t0
    pick = _choose_chains(best, alive, (base_texts, base_ids, base_r, start_goal), B, C)
    results = []
    for b in range(B):
        i = b * C + int(pick[b])
        chains_of_b = range(b * C, (b + 1) * C)
        results.append(AlignResult(
            prompt=prompts[b], response=best.texts[i], reward=float(best.reward[i]), method="sea",
            trace_mean=scores.trace_mean[b], trace_max=scores.trace_max[b], reward_calls=scores.calls * C,
            seconds=seconds, response_ids=best.ids[i], base_response=base_texts[b * C],
            base_reward=float(base_r[b * C]), objective=float(best.goal[i]) if st.kl_coef else None,
            extra={**{k: [v[b] for v in t] for k, t in traces.items()},
                   "chains": C, "steps": st.steps, "steps_run": steps_run, "lr": st.lr, "optimizer": st.optimizer,
                   "noise": st.noise, "soft_tokens": st.soft_tokens, "fluency_mode": st.fluency,
                   "flu_form": st.flu_form, "reward_input": st.reward_input, "decoding": st.decoding,
                   "select": st.select, "preset": st.preset, "length": int(lengths[i]), "chain": int(pick[b]),
                   "best_step": [int(best.step[c]) for c in chains_of_b],
                   "start_reward": [float(base_r[c]) for c in chains_of_b],
                   "lm_forward_rows": lm.rows_run,
                   "failed_chains": [c for c in range(C) if not bool(alive[b * C + c])]}))
    if metrics:
        live = alive.cpu().tolist()
        cands = [[best.texts[b * C + c] for c in range(C) if live[b * C + c] and best.texts[b * C + c] is not None]
                 for b in range(B)]  # the chains' kept answers (a chain with none below the floor has none)
        _common.attach_metrics(model, encoded, reward, results, [base_ids[b * C] for b in range(B)], cands)
    return results
