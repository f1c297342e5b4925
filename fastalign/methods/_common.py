"""What the three methods (:mod:`fastalign.methods.aisp`, :mod:`fastalign.methods.sea`, :mod:`fastalign.methods.bon`) share
besides the engine: argument checks, the backend check before any model work, progress lines on
stderr and the greedy baseline response."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch

from fastalign.engine import _context, encoding

from fastalign import _progress, engine
from fastalign.engine.encoding import response_texts
from fastalign.errors import InputError, InputTypeError
from fastalign.scoring.rewards import call_reward

__all__ = ["check_int", "check_float", "check_kl_coef", "objective", "check_backend", "check_model_and_reward",
           "encode_call", "call_results", "check_context", "Progress", "EncodedPrompts", "report_truncated",
           "compiled_step", "greedy_baseline", "attach_metrics"]


def check_int(value, name: str, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise InputError(f"{name}: expected an int >= {lo}, got {value!r}")
    return value


def check_float(value, name: str, *, positive=False, lo=None, hi=None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise InputError(f"{name}: expected a finite number, got {value!r}")
    value = float(value)
    if positive and value <= 0:
        raise InputError(f"{name}: expected a value > 0, got {value}")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise InputError(f"{name}: expected a value in [{lo}, {hi}], got {value}")
    return value


def check_model_and_reward(model, reward, backend) -> tuple[engine.ModelInterface, torch.device]:
    """Checks every method makes before any work: the reward is callable, the engine can decode the
    model (:func:`fastalign.engine.model_interface`), the fused-op backend runs where the output head
    computes (where AISP's control and noise live). Returns the model's interface (resolved here once
    for the whole call: :class:`EncodedPrompts` hands it to the prefill, whose prompt cache carries it
    to every decode) and the input embeddings' device (where the prompts go; another device than the
    head's when the model is spread by ``device_map``)."""
    if not callable(reward):
        raise InputTypeError(f"reward: expected a callable f(prompts, responses) -> tensor, got {type(reward).__name__}")
    api = engine.model_interface(model)
    check_backend(backend, engine.head_device(model))
    return api, engine.input_device(model)


def check_backend(backend, device: torch.device) -> None:
    """Resolve the fused-op backend for ``device`` up front, so that an unknown or unavailable backend
    is reported before the model runs (ValueError naming ``backend``, or BackendUnavailableError)."""
    if backend is not None and not isinstance(backend, str):
        raise InputTypeError(f"backend: expected a backend name (str) or None, got {type(backend).__name__}")
    from fastalign import backends

    backends.resolve(backend, device.type)


def check_context(limit, counts: list[int], max_new_tokens: int, *, truncate: bool = False) -> list[int | None]:
    """:func:`fastalign.engine._context.check_prompt_lengths` for the Python API (``truncate`` must be a bool)."""
    if not isinstance(truncate, bool):
        raise InputTypeError(f"truncate_prompt: expected True or False, got {type(truncate).__name__}")
    return _context.check_prompt_lengths(counts, limit, max_new_tokens, truncate=truncate)


class Progress(_progress.Progress):
    """A method's progress lines on stderr when enabled (``fastalign aisp: ...``, one per iteration):
    fastalign's one reporter, labelled with the method."""

    def __init__(self, enabled: bool, method: str):
        super().__init__(f"fastalign {method}", enabled=enabled)
        self.method = method


@dataclass
class EncodedPrompts:
    """A batch of B prompts ready to decode: the texts (what the reward sees as prompts),
    ``input_ids``/``attention_mask`` ``[B, P]`` (left padded, on the model's device), the ids that end a
    response, the pad id, and the prompt cache (:meth:`prefill`: computed once, forked for every batch
    of rollouts)."""

    texts: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    eos_ids: list[int]
    pad_id: int
    prompt_cache: engine.PromptCache | None = None
    #: the model's interface as the call's check resolved it (None: the prefill resolves it)
    api: engine.ModelInterface | None = None
    #: prompts cut to fit the context (``truncate_prompt``): index -> (the prompt as given, its tokens, kept)
    truncated: dict = field(default_factory=dict)

    @classmethod
    def from_texts(cls, model, tokenizer, prompts: list[str], *, chat_template: bool | None,
                   device: torch.device, max_new_tokens: int | None = None,
                   truncate_prompt: bool = False, api: engine.ModelInterface | None = None) -> "EncodedPrompts":
        """Tokenise ``prompts`` on their own (left padded, through the chat template when there is one).

        With ``max_new_tokens``, every prompt must fit the model's context with that many new tokens
        (:func:`check_context`): else ValueError, or with ``truncate_prompt`` the prompt is cut from the
        left to its last tokens that fit (:func:`fastalign.engine.encoding.truncate_prompt`; a
        :class:`~fastalign.engine._context.PromptTruncatedWarning` says so): its text in ``texts`` (what the
        model, the seeds and the reward see) is the cut one, and ``truncated`` records it for
        :func:`report_truncated`."""
        texts = list(prompts)
        rows = encoding.prompt_token_ids(tokenizer, texts, chat_template=chat_template)
        if max_new_tokens is not None:
            limit = _context.context_limit(getattr(model, "config", None))
            keep = check_context(limit, [len(r) for r in rows], max_new_tokens, truncate=truncate_prompt)
        truncated = {}
        for i, k in enumerate(keep if max_new_tokens is not None else []):
            if k is not None:
                count = len(rows[i])
                texts[i], rows[i] = encoding.truncate_prompt(tokenizer, texts[i], k, chat_template=chat_template)
                truncated[i] = (prompts[i], count, len(rows[i]))
                _context.warn_truncated(f"prompts[{i}]", len(rows[i]), count, limit)
        ids, mask = encoding.left_pad(rows, encoding.pad_token_id(tokenizer), device)
        return cls(texts=texts, input_ids=ids, attention_mask=mask, eos_ids=encoding.eos_token_ids(model, tokenizer),
                   pad_id=encoding.pad_token_id(tokenizer), truncated=truncated, api=api)

    def prefill(self, model) -> "EncodedPrompts":
        """Compute the prompt cache (once; call inside :func:`fastalign.engine.eval_mode`)."""
        if self.prompt_cache is None:
            self.prompt_cache = engine.prefill(model, self.input_ids, self.attention_mask, api=self.api)
        return self

    def decode(self, model, *, repeats: int = 1, **kwargs) -> engine.Rollouts:
        """:func:`fastalign.engine.decode` of ``repeats`` rollouts per prompt from the prompt cache."""
        return engine.decode(model, self.input_ids, self.attention_mask, eos_ids=self.eos_ids, pad_id=self.pad_id,
                             repeats=repeats, prompt_cache=self.prefill(model).prompt_cache, **kwargs)

    def responses(self, tokenizer, rollouts: engine.Rollouts) -> tuple[list[str], list[list[int]]]:
        """Decoded texts and ids of ``rollouts`` (EOS dropped)."""
        return response_texts(tokenizer, rollouts.tokens, rollouts.lengths, self.eos_ids)


def encode_call(model, tokenizer, prompts: list[str], reward, backend, *, chat_template: bool | None,
                max_new_tokens: int, truncate_prompt: bool) -> EncodedPrompts:
    """The start of every ``*_generate`` call: :func:`check_model_and_reward` (the model's interface
    resolved once, here), then the prompts encoded with it (:meth:`EncodedPrompts.from_texts`)."""
    api, device = check_model_and_reward(model, reward, backend)
    return EncodedPrompts.from_texts(model, tokenizer, prompts, chat_template=chat_template, device=device, api=api,
                                     max_new_tokens=max_new_tokens, truncate_prompt=truncate_prompt)


def call_results(results: list, encoded: EncodedPrompts, single: bool):
    """The end of every ``*_generate`` call: each result's prompt as given (:func:`report_truncated`),
    one result for a single prompt, else the list."""
    report_truncated(results, encoded)
    return results[0] if single else results


def report_truncated(results: list, encoded: EncodedPrompts) -> list:
    """Results of prompts that ``truncate_prompt`` cut: ``prompt`` back to the prompt as given, and in
    ``extra``: ``truncated_prompt`` (the cut text the model read), ``prompt_tokens`` (the given
    prompt's count, chat template included) and ``prompt_tokens_kept``."""
    for i, (given, count, kept) in encoded.truncated.items():
        res = results[i]
        res.extra.update(truncated_prompt=res.prompt, prompt_tokens=count, prompt_tokens_kept=kept)
        res.prompt = given
    return results


@contextlib.contextmanager
def compiled_step(model, encoded: EncodedPrompts, enabled: bool, *, repeats: int, max_new_tokens: int,
                  transform=None, base_logprobs: bool = False):
    """A :class:`fastalign.engine.CompiledStep` for ``repeats`` rollouts per prompt when ``enabled``
    (its hook removed afterwards), else None: pass it to ``encoded.decode(compiled=...)``."""
    if not enabled:
        yield None
        return
    step = engine.CompiledStep(model, encoded.prefill(model).prompt_cache, repeats=repeats,
                               max_new_tokens=max_new_tokens, transform=transform, base_logprobs=base_logprobs)
    try:
        yield step
    finally:
        step.close()


def check_kl_coef(kl_coef) -> float:
    """``kl_coef`` (>= 0) of the methods' objective ``reward + kl_coef * mean_t log p_base``."""
    return check_float(kl_coef, "kl_coef", lo=0.0, hi=math.inf)


def objective(rewards: torch.Tensor, mean_logprob, kl_coef: float) -> torch.Tensor | None:
    """``rewards + kl_coef * mean_logprob()`` (any shape; ``mean_logprob()`` returns each response's
    ``mean_t log p_base(y_t | prompt, y_<t)``, as many values as ``rewards``, and is called only when
    ``kl_coef > 0``), float64 on CPU; -inf rewards stay -inf. None when ``kl_coef`` is 0 (the methods
    then maximise the raw reward)."""
    if not kl_coef:
        return None
    lp = torch.as_tensor(mean_logprob()).to(device="cpu", dtype=torch.float64).view(rewards.shape)
    r = rewards.to(torch.float64)
    return torch.where(torch.isneginf(r), r, r + kl_coef * lp)


def greedy_baseline(model, tokenizer, reward, encoded: EncodedPrompts, *,
                    max_new_tokens: int) -> tuple[list[str], list[float], list[list[int]]]:
    """The unperturbed greedy response to each prompt, its reward and its ids (``with_base=True`` of AISP
    and Best-of-N; not counted in ``reward_calls``)."""
    texts, ids = encoded.responses(tokenizer, encoded.decode(model, max_new_tokens=max_new_tokens))
    return texts, call_reward(reward, encoded.texts, texts).tolist(), ids


def attach_metrics(model, encoded: EncodedPrompts, reward, results, base_ids, candidates) -> None:
    """:func:`fastalign.scoring.metrics.attach` in eval mode, for results of ``encoded``'s prompts."""
    from fastalign.scoring import metrics

    with engine.eval_mode(model):
        metrics.attach(results, model, encoded.input_ids, encoded.attention_mask, reward, base_ids=base_ids,
                       candidates=candidates, api=encoded.api)
