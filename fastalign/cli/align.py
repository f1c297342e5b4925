"""``fastalign align``: one prompt, or a prompts file to stdout or to ``--out`` (through
:mod:`fastalign.distributed`), with AISP, SEA or Best-of-N.

Adding an ``align`` option is one :class:`Option` entry in :data:`ALIGN_OPTIONS` (placed where its flag
should show in ``--help``). From that entry come the flag (type, help, default), the method's default
(:data:`ALIGN_DEFAULTS`), the refusal when another method is chosen (:data:`_METHOD_OPTIONS`), the
keyword ``_align_batch`` calls the method's function with, and the results' ``settings``. A SEA option,
for example ``--noise-std`` passed to ``sea_generate(noise_std=...)``::

    Option("noise_std", ("--noise-std",), "SEA Langevin noise std (default {sea})",
           argparse=dict(type=nonneg_float, default=None), methods=("sea",),
           defaults=dict(sea=0.01), keywords=dict(sea="noise_std")),

``show="given"`` keeps an option without a default out of ``settings`` unless it is given;
``convert``, ``when``, ``shown_as`` and ``passed_as`` cover the special forms (AISP's three noise
forms, ``--control-cap 0`` meaning none, Best-of-N's n * iterations samples). A new key goes after the
existing ones in ``settings`` (:data:`_SETTINGS_ORDER` keeps the older keys' order). A new method: its
function in ``_METHOD_FUNCTIONS`` and its name in ``METHODS``.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from fastalign.cli import _inputs
from fastalign.errors import InputError
from fastalign.cli._args import (UsageError, backend_name, nonneg_float, nonneg_int, positive_float, positive_int, say,
                                 seed_int, top_p, unit_float)


METHODS = ("aisp", "sea", "bon")


def _read_prompts(args) -> list[dict]:
    if args.prompts_file is not None and args.prompt:
        raise UsageError("give either PROMPT arguments or --prompts-file, not both")
    if args.prompts_file is not None:
        from fastalign import distributed

        _inputs.input_file(args.prompts_file, "--prompts-file")
        try:  # every bad line at once, with its number
            return distributed.read_prompts(args.prompts_file)
        except InputError as exc:
            raise UsageError(f"--prompts-file: {str(exc).removeprefix('prompts_file: ')}") from None
    if not args.prompt:
        raise UsageError("align: give a PROMPT (or several, or --prompts-file FILE.jsonl)")
    for i, prompt in enumerate(args.prompt, 1):
        if not prompt.strip():
            raise UsageError("align: the prompt is empty" if len(args.prompt) == 1 else f"align: prompt {i} is empty")
    return [{"prompt": prompt} for prompt in args.prompt]


# ------------------------------------------------------------------------------ align's options
@dataclass(frozen=True)
class Option:
    """One option of ``fastalign align``, declared once (:data:`ALIGN_OPTIONS`): its flag, which methods
    take it, its default per method, the keyword it reaches the method's function as, and how it shows
    in the results' ``settings``.

    dest, flags, help, argparse: what ``add_argument`` gets (``argparse``: type, action, default,
        choices, metavar, nargs); a ``{method}`` field in ``help`` is filled from ``defaults``.
    group: options with the same group name are mutually exclusive.
    methods: the methods that take the option (the others refuse it: exit 2); None for an option of
        the command rather than of a method (never refused, never in ``settings``).
    defaults: the command's default per method when the option is not given (:data:`ALIGN_DEFAULTS`);
        a method missing here gets None.
    keywords: method -> the keyword the method's function is called with (``_align_batch``); a
        method missing here is not passed the option.
    convert: the value as the method takes it and ``settings`` shows it (``--control-cap 0`` -> None).
    when: the option is passed and shown only when this holds (one of AISP's three noise forms).
    show: in ``settings``: "default" (for every method with a default), "given" (only when given).
    shown_as: the ``settings`` entries for a value (default ``{dest: value}``).
    passed_as: the value the method's function gets, from the shown one (Best-of-N's n * iterations).
    """

    dest: str
    flags: tuple[str, ...]
    help: str | None = None
    argparse: Mapping[str, Any] = field(default_factory=dict)
    group: str | None = None
    methods: tuple[str, ...] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    keywords: Mapping[str, str] = field(default_factory=dict)
    convert: Callable[[Any], Any] | None = None
    when: Callable[[argparse.Namespace], bool] | None = None
    show: str = "default"
    shown_as: Callable[[Any], dict] | None = None
    passed_as: Callable[[argparse.Namespace, str, Any], Any] | None = None

    def value(self, args, method: str):
        """The option's value for ``method``: as given, else the method's default (then ``convert``)."""
        value = getattr(args, self.dest, None)
        value = self.defaults.get(method) if value is None else value
        return self.convert(value) if self.convert is not None else value

    def applies(self, args, method: str) -> bool:
        return self.methods is not None and method in self.methods and (self.when is None or self.when(args))

    def settings(self, args, method: str) -> dict:
        """What ``settings`` shows of this option for ``method`` (empty when nothing)."""
        if not self.applies(args, method):
            return {}
        if self.show == "default" and method not in self.defaults:
            return {}
        if self.show == "given" and getattr(args, self.dest, None) in (None, False):
            return {}
        value = self.value(args, method)
        return self.shown_as(value) if self.shown_as is not None else {self.dest: value}


def _given(dest: str):
    return lambda args: getattr(args, dest, None) is not None


#: ``--kl-coef``'s default for every method: the objective's beta is in reward units, and this value
#: was chosen for the CLI's default reward (a cosine similarity in [-1, 1]) by bench/bench_trust.py; the
#: library's default is 0 (the raw reward), so a reward of another scale starts from the paper's form.
CLI_KL_COEF = 0.08


def _same_keyword(name: str, methods: tuple[str, ...] = METHODS) -> dict:
    return {m: name for m in methods}


#: Every option of ``fastalign align``, in ``--help`` order. The defaults are ``fastalign align``'s when an
#: option is not given: small enough to finish in about a minute per prompt on 2 CPU cores with the
#: embedded default model. AISP's noise, trust region and weights are the library's defaults
#: (fastalign.methods.aisp: rel_sigma 0.1, control_cap 0.5, z-scored rewards with lam 0.5), chosen by
#: bench/bench_trust.py (bench/RESULTS.md); written out here so the CLI starts without torch (a test
#: keeps them equal).
ALIGN_OPTIONS: tuple[Option, ...] = (
    Option("prompt", ("prompt",), "the user prompt(s); several are aligned together in batches",
           argparse=dict(nargs="*")),
    Option("prompts_file", ("--prompts-file",),
           "one JSON object per line with a \"prompt\" (and optionally \"target\"); prints one JSON line each",
           argparse=dict(metavar="F.jsonl")),
    Option("method", ("--method",), argparse=dict(choices=METHODS, default="aisp")),
    Option("target", ("--target",), "description of the wanted response (embedding-similarity reward)"),
    Option("model", ("--model",),
           "causal LM: Hugging Face id, local directory or .gguf (default: embedded SmolLM2-135M-Instruct)"),
    Option("reward", ("--reward",), "sentence-embedding model for the reward (default: embedded all-MiniLM-L6-v2)"),
    Option("n", ("-n", "--rollouts", "--n"),
           "AISP rollouts per iteration (8); Best-of-N samples n*iterations; SEA chains (1). "
           "Under torchrun spell it -n or --rollouts (torchrun's parser rejects --n)",
           argparse=dict(type=positive_int, default=None), methods=METHODS,
           defaults=dict(aisp=8, bon=8, sea=4), keywords=dict(aisp="n", bon="n", sea="chains"),
           passed_as=lambda args, m, n: n * Option.value(_OPTION["iterations"], args, m) if m == "bon" else n),
    Option("iterations", ("--iterations",), "AISP iterations (4) / SEA steps (10, for every --preset)",
           argparse=dict(type=positive_int, default=None), methods=METHODS,
           defaults=dict(aisp=4, bon=4, sea=10), keywords=dict(aisp="iterations", sea="steps")),
    Option("max_new_tokens", ("--max-new-tokens",), "response length in tokens",
           argparse=dict(type=positive_int, default=None), methods=METHODS,
           defaults=dict(aisp=48, bon=48, sea=32), keywords=_same_keyword("max_new_tokens")),
    Option("truncate_prompt", ("--truncate-prompt",),
           "cut a prompt too long for the model's context (its tokens + --max-new-tokens) from the "
           "left, keeping its last tokens, instead of refusing it (exit 2); a note on stderr says so",
           argparse=dict(action="store_true", default=False), keywords=_same_keyword("truncate_prompt")),
    Option("reward_model", ("--reward-model",),
           "reward from a sequence-classification model (AutoModelForSequenceClassification: local "
           "directory or cached hub id) scoring \"prompt\\nresponse\"; instead of --target",
           argparse=dict(metavar="ID_OR_DIR")),
    Option("reward_label", ("--reward-label",),
           "--reward-model: the label whose logit is the reward (needed when it has several)",
           argparse=dict(type=nonneg_int, default=None)),
    Option("reward_fn", ("--reward-fn",),
           "reward from a Python callable f(prompts, responses) -> [N] (MODULE:FUNCTION or "
           "FILE.py:FUNCTION); instead of --target",
           argparse=dict(metavar="MODULE:FUNCTION")),
    Option("rel_sigma", ("--rel-sigma",),
           "AISP noise std relative to the prompt's pre-logits (the default form: {aisp})",
           argparse=dict(type=positive_float, default=None), group="noise", methods=("aisp",),
           defaults=dict(aisp=0.1), keywords=dict(aisp="rel_sigma"),
           when=lambda args: args.sigma is None and args.variance is None),
    Option("sigma", ("--sigma",), "AISP absolute noise std (the paper's form); not with --rel-sigma/--variance",
           argparse=dict(type=positive_float, default=None), group="noise", methods=("aisp",),
           keywords=dict(aisp="sigma"), show="given", when=_given("sigma")),
    Option("variance", ("--variance",), "AISP absolute noise scale as a variance (std = sqrt(variance))",
           argparse=dict(type=positive_float, default=None), group="noise", methods=("aisp",),
           keywords=dict(aisp="variance"), show="given", when=_given("variance"),
           shown_as=lambda v: {"sigma": math.sqrt(v), "variance": v}),
    Option("control_cap", ("--control-cap",),
           "AISP trust region: each step's control at most this times the pre-logit norm "
           "(default {aisp}; 0: no cap)",
           argparse=dict(type=nonneg_float, default=None), methods=("aisp",), defaults=dict(aisp=0.5),
           keywords=dict(aisp="control_cap"), convert=lambda cap: cap or None),  # 0: no trust region (None)
    Option("kl_coef", ("--kl-coef",),
           "maximise reward + KL_COEF * mean log p_base(token) instead of the raw reward "
           "(default {aisp}; keeps the text fluent)",
           argparse=dict(type=nonneg_float, default=None), methods=METHODS,
           defaults=dict(aisp=CLI_KL_COEF, bon=CLI_KL_COEF, sea=CLI_KL_COEF), keywords=_same_keyword("kl_coef")),
    Option("lam", ("--lam",), "AISP weight temperature (default 0.5, on z-scored rewards; see --no-normalize-rewards)",
           argparse=dict(type=positive_float, default=None), methods=("aisp",), defaults=dict(aisp=0.5),
           keywords=dict(aisp="lam")),
    Option("alpha", ("--alpha",), "AISP alpha in [0, 1]", argparse=dict(type=unit_float, default=None),
           methods=("aisp",), defaults=dict(aisp=0.999), keywords=dict(aisp="alpha")),
    Option("horizon", ("--horizon",), "AISP control horizon tau (tokens)",
           argparse=dict(type=positive_int, default=None), methods=("aisp",), keywords=dict(aisp="horizon"),
           show="given"),
    Option("normalize_rewards", ("--normalize-rewards",),
           "AISP: z-score each prompt's rewards before dividing by --lam (default on; "
           "--no-normalize-rewards: the paper's raw r / lam)",
           argparse=dict(action=argparse.BooleanOptionalAction, default=None), methods=("aisp",),
           defaults=dict(aisp=True), keywords=dict(aisp="normalize_rewards")),
    Option("mean_rollout", ("--mean-rollout",),
           "AISP: also decode the noise-free learned mean as a candidate (one more reward call)",
           argparse=dict(action="store_true", default=None), methods=("aisp",), defaults=dict(aisp=False),
           keywords=dict(aisp="mean_rollout")),
    Option("final_samples", ("--final-samples",),
           "AISP: also decode N rollouts around the learned mean as candidates (N more reward calls)",
           argparse=dict(type=nonneg_int, default=None), methods=("aisp",), defaults=dict(aisp=0),
           keywords=dict(aisp="final_samples")),
    Option("top_p", ("--top-p",), "Best-of-N nucleus sampling mass in (0, 1] (1.0)",
           argparse=dict(type=top_p, default=None), methods=("bon",), defaults=dict(bon=1.0),
           keywords=dict(bon="top_p")),
    Option("compile", ("--compile",), "AISP/Best-of-N: compiled decode step (torch.compile; a CUDA graph on a GPU)",
           argparse=dict(action="store_true", default=False), methods=("aisp", "bon"),
           keywords=dict(aisp="compile", bon="compile"), convert=bool, show="given"),
    Option("lr", ("--lr",), "SEA step size (default: the preset's, 0.1 fastalign / 0.01 authors)",
           argparse=dict(type=positive_float, default=None), methods=("sea",), keywords=dict(sea="lr"),
           when=_given("lr"), show="given"),
    Option("preset", ("--preset",), "SEA settings: fastalign (measured defaults) or authors (the SEA authors' "
           "run script, fastalign.methods.sea.AUTHORS; their 199 steps: --iterations 199)", argparse=dict(choices=("fastalign", "authors"), default=None),
           methods=("sea",), defaults=dict(sea="fastalign"), keywords=dict(sea="preset")),
    Option("batch_size", ("--batch-size",), "prompts per batch (default 4)",
           argparse=dict(type=positive_int, default=4)),
    Option("seed", ("--seed",), argparse=dict(type=seed_int, default=0), keywords=_same_keyword("seed")),
    Option("backend", ("--backend",), "fused-op backend (default: auto)",
           argparse=dict(type=backend_name, default=None), keywords=dict(aisp="backend", sea="backend")),
    Option("threads", ("--threads",), "torch threads", argparse=dict(type=positive_int, default=None)),
    Option("out", ("--out",),
           "write one JSON line per prompt (with its \"index\") to this file, in input order; "
           "resumable (rerun the same command after a crash), sharded over the ranks under torchrun",
           argparse=dict(metavar="F.jsonl")),
    Option("device_map", ("--device-map",),
           "spread the policy over the GPUs (and CPU) with accelerate's big-model placement",
           argparse=dict(choices=("auto", "balanced", "balanced_low_0", "sequential"), default=None)),
    Option("json", ("--json",), "print one JSON object per prompt (with --out: the run's summary)",
           argparse=dict(action="store_true")),
    Option("quiet", ("--quiet",), "no progress on stderr", argparse=dict(action="store_true")),
)
_OPTION = {o.dest: o for o in ALIGN_OPTIONS}

#: The order of the results' ``settings`` keys (kept from before the table, so the JSON lines stay
#: byte-identical); an option not named here follows these, in table order.
_SETTINGS_ORDER = ("n", "iterations", "max_new_tokens", "control_cap", "lam", "alpha", "normalize_rewards",
                   "mean_rollout", "final_samples", "top_p", "lr", "kl_coef", "rel_sigma", "sigma", "variance",
                   "horizon", "compile")

#: Defaults of ``fastalign align`` when an option is not given, per method (from :data:`ALIGN_OPTIONS`).
ALIGN_DEFAULTS = {m: {o.dest: o.defaults[m] for o in ALIGN_OPTIONS if m in o.defaults} for m in METHODS}

#: options that only some methods take (the flag as written, the methods)
_METHOD_OPTIONS = {o.dest: o.methods for o in ALIGN_OPTIONS if o.methods is not None and o.methods != METHODS}

#: the function each method runs and what it is always given besides the options
_METHOD_FUNCTIONS = {"aisp": ("fastalign.methods.aisp", "aisp_generate", {"with_base": True}),
                     "bon": ("fastalign.methods.bon", "bon_generate", {"with_base": True}),
                     "sea": ("fastalign.methods.sea", "sea_generate", {})}


def _setting(args, method: str, key: str):
    value = getattr(args, key, None)
    return ALIGN_DEFAULTS[method].get(key) if value is None else value


def _method_keywords(args, method: str) -> dict:
    """The keyword arguments ``method``'s function gets from the command line's options."""
    kwargs = {}
    for opt in ALIGN_OPTIONS:
        name = opt.keywords.get(method)
        if name is None or (opt.when is not None and not opt.when(args)):
            continue
        value = opt.value(args, method)
        kwargs[name] = opt.passed_as(args, method, value) if opt.passed_as is not None else value
    return kwargs


def _align_batch(args, model, tokenizer, reward, prompts: list[str], progress: bool | None = None) -> list:
    """Run the chosen method on one batch of prompts; returns AlignResult objects."""
    progress = not args.quiet if progress is None else progress
    module, name, fixed = _METHOD_FUNCTIONS[args.method]
    generate = getattr(importlib.import_module(module), name)
    return generate(model, tokenizer, prompts, reward, **_method_keywords(args, args.method), **fixed,
                    progress=progress)


def _describe(args) -> dict:
    """The method's settings as a result shows them (its JSON ``settings``)."""
    rank = {key: i for i, key in enumerate(_SETTINGS_ORDER)}
    out = {}
    for opt in sorted(ALIGN_OPTIONS, key=lambda o: rank.get(o.dest, len(rank))):  # stable: table order after
        out.update(opt.settings(args, args.method))
    return out


def _result_dict(res, args, target: str) -> dict:
    """What a JSON line holds for one result: every field of ``res.to_dict()``, the target, the
    settings and the backend."""
    d = res.to_dict()
    d.update(target=target, settings=_describe(args), backend=args.backend or os.environ.get("FASTALIGN_BACKEND", "auto"))
    return d


def _print_result(res, args, target: str) -> None:
    if args.json or args.prompts_file:
        print(json.dumps(_result_dict(res, args, target)), flush=True)
        return
    def fmt(x):
        return "-" if x is None else f"{x:.4f}"
    label = {"aisp": "AISP", "bon": "Best-of-N", "sea": "SEA"}[res.method]
    base_label = "base (sampled start)" if res.method == "sea" else "base (greedy)"
    print(f"prompt: {res.prompt}")
    print(f"target: {target}")
    from fastalign.methods.results import fmt_metrics

    metrics = getattr(res, "metrics", None) or {}
    base_ppl = metrics.get("base_perplexity")
    base_quality = "" if base_ppl is None else f", perplexity {base_ppl:.2f}"
    print(f"\n{base_label}, reward {fmt(res.base_reward)}{base_quality}:\n  {res.base_response}")
    gain = "" if res.base_reward is None else f" ({res.reward - res.base_reward:+.4f})"
    settings = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in _describe(args).items())
    quality = {k: v for k, v in metrics.items() if k != "base_perplexity"}
    quality = f", {fmt_metrics(quality)}" if quality else ""
    objective = "" if res.objective is None else f", objective {fmt(res.objective)}"
    print(f"\naligned ({label}: {settings}), reward {fmt(res.reward)}{gain}{objective}{quality}:\n  {res.response}")
    trace = " ".join(f"{m:.3f}/{x:.3f}" for m, x in res.trace) if res.trace_mean else "-"
    print(f"\nreward calls: {res.reward_calls}   time: {res.seconds:.1f} s   reward mean/max per round: {trace}")
    if res.extra.get("control_norm"):
        print("control |u|/|h| per iteration: " + " ".join(f"{x:.3f}" for x in res.extra["control_norm"])
              + "   weights' ESS: " + " ".join(f"{x:.1f}" for x in res.extra["ess"]) + f" of {res.extra['n']}")
    print("-" * 72, flush=True)


class _Aligner:
    """The policy and the reward encoder, loaded once by :meth:`load`, and the chosen method over
    batches of prompt items (one target per batch)."""

    def __init__(self, args, default_target: str):
        self.args, self.default_target = args, default_target
        self.rewards: dict = {}

    def target(self, item: dict) -> str:
        """The batch key and the "target" of a result: the item's target for the embedding reward, else a
        description of the reward (``--reward-model``/``--reward-fn`` score every prompt the same way)."""
        if self.args.reward_model is not None:
            return f"reward model {self.args.reward_model}"
        if self.args.reward_fn is not None:
            return f"reward fn {self.args.reward_fn}"
        return item.get("target", self.default_target)

    def load(self, placement: dict, announce: bool) -> None:
        """Load the models; ``placement``: device or device_map keywords of ``models.load_model``."""
        from fastalign import engine
        from fastalign.scoring import models

        if announce:
            say("fastalign align: loading the model and the reward")
        self.model, self.tokenizer = models.load_model(self.args.model, **placement)
        device = engine.input_device(self.model) if placement else None
        if self.args.reward_model is not None:
            self.fixed_reward = models.load_reward_model(self.args.reward_model, label_index=self.args.reward_label,
                                                         device=device)
        elif self.args.reward_fn is not None:
            self.fixed_reward = models.load_reward_fn(self.args.reward_fn)
        else:
            self.fixed_reward = None
            self.encoder, self.enc_tokenizer = models.load_embedding_model(self.args.reward, device=device)

    def reward(self, target: str):
        """The reward of a batch: the fixed one, or the embedding similarity with ``target`` (built once)."""
        from fastalign.scoring.rewards import EmbeddingSimilarityReward

        if self.fixed_reward is not None:
            return self.fixed_reward
        if target not in self.rewards:
            self.rewards[target] = EmbeddingSimilarityReward(target, model=self.encoder, tokenizer=self.enc_tokenizer)
        return self.rewards[target]

    def __call__(self, batch: list[dict], progress: bool | None = None) -> list:
        import warnings

        from fastalign.engine._context import PromptTruncatedWarning

        with warnings.catch_warnings():  # cmd_align has said which prompts --truncate-prompt cuts
            warnings.simplefilter("ignore", PromptTruncatedWarning)
            results = _align_batch(self.args, self.model, self.tokenizer, self.reward(self.target(batch[0])),
                                   [it["prompt"] for it in batch], progress=progress)
        return results if isinstance(results, list) else [results]


#: align options that do not change the results: left out of the settings a resumed --out run must match
_NOT_RESULT_SETTINGS = {"func", "command", "prompt", "prompts_file", "out", "quiet", "json", "threads"}


def _run_settings(args) -> dict:
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_RESULT_SETTINGS}
    settings["resolved"] = _describe(args)
    return settings


def _align_to_file(args, items: list[dict], aligner: _Aligner) -> int:
    """``align --out F``: through :func:`fastalign.distributed.align_file` (sharded under torchrun, resumable)."""
    from fastalign import distributed

    d = distributed.init()
    try:
        def align_batch(batch):
            target = aligner.target(batch[0])
            return [_result_dict(res, args, target) for res in aligner(batch, progress=False)]

        summary = distributed.align_file(
            items, args.out, align_batch, batch_size=args.batch_size, group_key=aligner.target,
            prepare=lambda: aligner.load(distributed.model_placement(d, args.device_map), announce=False),
            settings=_run_settings(args), dist=d, progress=not args.quiet)
    finally:
        distributed.close(d)
    if summary is not None and args.json:
        print(json.dumps(summary), flush=True)
    return 0


def _check_method_options(args) -> None:
    """Options given for a method that does not take them: UsageError (argparse refuses --sigma with --variance)."""
    for key, methods in _METHOD_OPTIONS.items():
        value = getattr(args, key, None)
        given = value is not None and (value is not False or key == "normalize_rewards")
        if given and args.method not in methods:
            flag = "--" + key.replace("_", "-")
            if key == "normalize_rewards" and value is False:
                flag = "--no-normalize-rewards"
            raise UsageError(f"{flag}: only --method {' or '.join(methods)} takes it")


def _check_reward_options(args, items: list[dict]) -> None:
    """One reward source, checked before any model loads: the reward model exists here and is a
    sequence classifier (with --reward-label when it has several labels), the callable imports."""
    from fastalign.scoring import models

    sources = [f for f, v in (("--reward-model", args.reward_model), ("--reward-fn", args.reward_fn),
                              ("--target", args.target), ("--reward", args.reward)) if v is not None]
    if len(sources) > 1 and set(sources) & {"--reward-model", "--reward-fn"}:
        raise UsageError(f"{', '.join(sources)}: give one reward (--reward-model, --reward-fn, or the "
                         "sentence-embedding --target/--reward)")
    if args.reward_label is not None and args.reward_model is None:
        raise UsageError("--reward-label: only --reward-model takes it")
    if args.reward_model is None and args.reward_fn is None:
        return
    with_target = [i + 1 for i, it in enumerate(items) if "target" in it]
    if with_target:
        raise UsageError(f"--prompts-file: prompt {with_target[0]} has a \"target\", which only the sentence-"
                         "embedding reward uses (not --reward-model/--reward-fn)")
    if args.reward_model is not None:
        models.check_reward_model(args.reward_model, label_index=args.reward_label)
    else:
        models.load_reward_fn(args.reward_fn)


def cmd_align(args) -> int:
    items = _read_prompts(args)
    if args.target is not None and not args.target.strip():
        raise UsageError("--target: the target description is empty")
    _check_method_options(args)
    if args.method == "aisp" and args.horizon is not None and args.horizon > _setting(args, "aisp", "max_new_tokens"):
        raise UsageError("--horizon: expected at most --max-new-tokens")
    from fastalign.scoring import models

    _check_reward_options(args, items)

    default_target = args.target or models.DEFAULT_TARGET
    if args.out is None and _int_env("WORLD_SIZE") > 1:
        raise UsageError("--out: the processes of a torchrun job write their results to a file: give --out FILE.jsonl")
    _inputs.check_align_out(args.out, args.prompts_file)
    if args.device_map is not None:
        models.require("accelerate", "--device-map")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.backend not in (None, "auto"):
        import torch

        from fastalign import backends as registry

        device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            registry.get(args.backend, device)
        except registry.BackendUnavailableError as exc:
            raise UsageError(f"--backend: {exc}") from None
    models.check_source(args.model, "--model")
    if args.reward_model is None and args.reward_fn is None:
        models.check_source(args.reward, "--reward", reward=True)
    notes = _inputs.check_align_prompts(items, args.model, _setting(args, args.method, "max_new_tokens"),
                                        truncate=args.truncate_prompt, prompts_file=args.prompts_file)
    if _int_env("RANK") == 0:
        for note in notes:
            say(f"fastalign align: {note}")
    aligner = _Aligner(args, default_target)
    if args.out is not None:
        return _align_to_file(args, items, aligner)
    from fastalign.distributed import make_batches

    aligner.load({"device_map": args.device_map} if args.device_map else {}, announce=not args.quiet)
    # consecutive prompts with the same target form a batch of at most --batch-size (as with --out)
    for batch in make_batches(items, args.batch_size, aligner.target):
        batch_items = [items[i] for i in batch]
        for res in aligner(batch_items):
            _print_result(res, args, aligner.target(batch_items[0]))
    return 0


def _int_env(name: str) -> int:
    try:
        return int(os.environ.get(name, "") or 0)
    except ValueError:
        return 0


def add_parser(sub) -> None:
    """``align``'s arguments, one per :data:`ALIGN_OPTIONS` entry."""
    a = sub.add_parser("align", help="align a response with AISP, SEA or Best-of-N")
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for opt in ALIGN_OPTIONS:
        if opt.group is not None and opt.group not in groups:
            groups[opt.group] = a.add_mutually_exclusive_group()
        target = a if opt.group is None else groups[opt.group]
        kwargs = dict(opt.argparse)
        if opt.help is not None:
            kwargs["help"] = opt.help.format(**opt.defaults) if "{" in opt.help else opt.help
        if opt.flags[0].startswith("-"):
            kwargs["dest"] = opt.dest
        target.add_argument(*opt.flags, **kwargs)
    a.set_defaults(func=cmd_align)
