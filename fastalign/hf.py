"""fastalign's methods as Hugging Face ``generate`` decoding methods (``custom_generate``).

Pass one as ``custom_generate`` to any causal LM's ``generate``::

    inputs = tokenizer(prompts, return_tensors="pt", padding=True)        # left padding
    out = model.generate(**inputs, custom_generate=fastalign.hf.aisp, reward=reward, text_tokenizer=tokenizer,
                         n=8, iterations=4, max_new_tokens=48, do_sample=False)
    texts = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

or load the Hub-style folder that ships with fastalign (``fastalign.hf.hub_dir()``, the layout of a
Hub repository with ``custom_generate/generate.py``; ``method=`` picks aisp, bon or sea)::

    out = model.generate(**inputs, custom_generate=str(fastalign.hf.hub_dir()), trust_remote_code=True,
                         method="aisp", reward=reward, tokenizer=tokenizer, n=8, iterations=4)

Conventions (those of a transformers decoding method): ``max_new_tokens`` (or ``max_length``), the EOS
ids and the pad id come from the generation config; the result is a ``LongTensor [B, P + T]`` like
``generate``'s: each row is its prompt ids followed by the best response found for it (EOS included
when the response ended with one), padded with the pad id. One row per prompt: fastalign returns the
best candidate, so ``num_return_sequences`` must be 1.

Each row's tokens (its attention mask's ones, not the padded width) + ``max_new_tokens`` must fit the
model's context (``max_position_embeddings`` or its equivalent, :mod:`fastalign.engine._context`): a row that
does not is refused with ``ValueError`` before any forward, or, with ``truncate_prompt=True``, keeps
its last tokens that fit (with a warning; the returned row still starts with the prompt as given).

What is not supported raises ``ValueError`` instead of being ignored: beam search and its flags, more
than one returned sequence, assisted generation, streamers, logits processors and stopping criteria
other than the ones these methods implement (Best-of-N samples with the config's temperature, top-k and
top-p; AISP decodes greedily, so it needs ``do_sample=False``), ``return_dict_in_generate``, and model
inputs other than ``input_ids``/``attention_mask``.

The reward scores texts, so it needs the policy's tokenizer: ``text_tokenizer=`` in the callable form
(``generate`` keeps ``tokenizer=`` for itself and does not pass it on to a callable), ``tokenizer=`` or
``text_tokenizer=`` in the Hub form. The prompts the reward sees are the decoded ``input_ids``
(special tokens skipped).
"""
from __future__ import annotations

import copy
import inspect
import sys
from pathlib import Path

import torch

from fastalign.methods import _common

from fastalign import engine
from fastalign.methods import aisp as _aisp
from fastalign.methods import bon as _bon
from fastalign.methods import sea as _sea
from fastalign.errors import InputError, InputTypeError

__all__ = ["aisp", "bon", "sea", "generate", "hub_dir"]

#: model_kwargs that ``generate`` prepares for every decoding method and that fastalign's engine
#: computes itself (its own cache, positions and head slicing).
_ENGINE_KWARGS = {"attention_mask", "cache", "past_key_values", "cache_params", "use_cache", "position_ids",
                  "logits_to_keep", "output_attentions", "output_hidden_states"}
#: logits processors / stopping criteria that the methods implement themselves
_SAMPLING_WARPERS = {"TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"}
_STOPPING = {"MaxLengthCriteria", "EosTokenCriteria"}


def hub_dir() -> Path:
    """The folder to pass as ``custom_generate=`` (a Hub repository's layout: ``custom_generate/generate.py``)."""
    return Path(__file__).resolve().parent / "hub"


def _generate_frame_value(name: str):
    """A local variable of the ``generate`` call that invoked a callable ``custom_generate``: transformers
    consumes ``streamer`` and ``assistant_model`` before calling it, so this is the only way to see
    that a caller passed them (and refuse instead of silently ignoring them)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "generate" and "custom_generate" in frame.f_locals:
            return frame.f_locals.get(name)
        frame = frame.f_back
    return None


def _check_supported(generation_config, logits_processor, stopping_criteria, model_kwargs, *, sampling: bool,
                     streamer=None, assistant_model=None) -> None:
    gc = generation_config
    if streamer is not None:
        raise InputError("streamer: fastalign returns the best of many rollouts at the end, so it cannot stream")
    if assistant_model is not None:
        raise InputError("assistant_model: assisted (speculative) generation is not supported by fastalign")
    if getattr(gc, "num_beams", 1) not in (None, 1) or getattr(gc, "num_beam_groups", 1) not in (None, 1):
        raise InputError("num_beams: beam search is not supported by fastalign's methods (use num_beams=1)")
    if getattr(gc, "num_return_sequences", 1) not in (None, 1):
        raise InputError("num_return_sequences: fastalign returns the best candidate per prompt (use 1)")
    if getattr(gc, "return_dict_in_generate", False):
        raise InputError("return_dict_in_generate: fastalign returns token ids only (see AlignResult for the "
                         "rewards and traces: fastalign.aisp_generate and friends)")
    if not sampling and getattr(gc, "do_sample", False):
        raise InputError("do_sample: AISP decodes greedily around its learned control (pass do_sample=False), "
                         "or use fastalign.hf.bon for Best-of-N sampling")
    allowed = _SAMPLING_WARPERS if sampling else set()
    extra = [type(p).__name__ for p in (logits_processor or []) if type(p).__name__ not in allowed]
    if extra:
        raise InputError(f"logits_processor: fastalign does not apply {', '.join(extra)} (from the generation "
                         "config or the call); remove them")
    extra = [type(c).__name__ for c in (stopping_criteria or []) if type(c).__name__ not in _STOPPING]
    if extra:
        raise InputError(f"stopping_criteria: fastalign stops at EOS and max_new_tokens only, not {', '.join(extra)}")
    extra = sorted(k for k, v in model_kwargs.items() if v is not None and k not in _ENGINE_KWARGS)
    if extra:
        raise InputError(f"{', '.join(extra)}: fastalign's methods take input_ids and attention_mask only")


def _max_new_tokens(generation_config, prompt_len: int) -> int:
    gc = generation_config
    if getattr(gc, "max_new_tokens", None) is not None:
        return int(gc.max_new_tokens)
    if getattr(gc, "max_length", None) is not None and gc.max_length > prompt_len:
        return int(gc.max_length) - prompt_len
    raise InputError(f"max_new_tokens: set max_new_tokens (or max_length > the prompt length {prompt_len})")


def _eos_and_pad(generation_config, model) -> tuple[list[int], int]:
    eos = generation_config.eos_token_id
    if eos is None:
        eos = getattr(model.generation_config, "eos_token_id", None)
    eos_ids = [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])
    pad = generation_config.pad_token_id
    if pad is None:
        pad = eos_ids[0] if eos_ids else 0
    return eos_ids, int(pad[0] if isinstance(pad, (list, tuple)) else pad)


def _left_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` with every row's tokens moved to the right end (right padding becomes left)."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.device).long()
    if bool((mask[:, -1] == 1).all()):
        return input_ids, mask
    order = torch.argsort(mask, dim=1, stable=True)  # padding (0) first, tokens (1) after, each in order
    return input_ids.gather(1, order), mask.gather(1, order)


def _fit_context(model, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int,
                 truncate_prompt: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``(ids, mask)`` whose every row's tokens + ``max_new_tokens`` fit the model's context:
    ValueError naming the row (``input_ids[i]``) otherwise, or with ``truncate_prompt`` each long row
    keeps its last tokens that fit (the ids as given are cut: a chat template's header too)."""
    from fastalign.engine import _context

    if not isinstance(truncate_prompt, bool):
        raise InputTypeError(f"truncate_prompt: expected True or False, got {type(truncate_prompt).__name__}")
    limit = _context.context_limit(getattr(model, "config", None))
    counts = [int(c) for c in mask.sum(dim=1).tolist()]
    fit = "" if limit is None else f", max_length={limit.tokens - max_new_tokens}"
    keep = _context.check_prompt_lengths(
        counts, limit, max_new_tokens, truncate=truncate_prompt, names=[f"input_ids[{i}]" for i in range(len(counts))],
        flags={"truncate_prompt": f"truncate_prompt=True (or tokenize with truncation=True{fit}, "
                                  "truncation_side='left')"})
    if all(k is None for k in keep):
        return ids, mask
    mask = mask.clone()
    P = ids.shape[1]
    for i, k in enumerate(keep):
        if k is not None:
            mask[i, :P - k] = 0
            _context.warn_truncated(f"input_ids[{i}]", k, counts[i], limit)
    width = int(mask.sum(dim=1).max())
    return ids[:, P - width:], mask[:, P - width:]


def _encoded(model, checked, text_tokenizer, input_ids, attention_mask, generation_config, max_new_tokens: int,
             truncate_prompt: bool = False) -> _common.EncodedPrompts:
    """The call's prompts as :class:`~fastalign.methods._common.EncodedPrompts`; ``checked``: what
    :func:`~fastalign.methods._common.check_model_and_reward` returned (the interface, the input device)."""
    if text_tokenizer is None:
        raise InputError("text_tokenizer: the reward scores texts, so pass the policy's tokenizer "
                         "(text_tokenizer=tokenizer; generate keeps tokenizer= for itself)")
    api, device = checked
    ids, mask = _left_padded(input_ids.to(device), attention_mask)
    ids, mask = _fit_context(model, ids, mask, max_new_tokens, truncate_prompt)
    texts = [text_tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True) for row, m in zip(ids, mask)]
    eos_ids, pad_id = _eos_and_pad(generation_config, model)
    return _common.EncodedPrompts(texts=texts, input_ids=ids, attention_mask=mask.to(device), eos_ids=eos_ids,
                                  pad_id=pad_id, api=api)


def _as_generate_output(input_ids: torch.Tensor, results, encoded: _common.EncodedPrompts,
                        max_new_tokens: int) -> torch.Tensor:
    """``[B, P + T]``: each prompt row (as given) followed by its best response (+ EOS if it ended with
    one: a response shorter than ``max_new_tokens`` did), padded with the pad id."""
    rows = []
    for r in results:
        ids = list(r.response_ids)
        if len(ids) < max_new_tokens and encoded.eos_ids:
            ids.append(encoded.eos_ids[0])
        rows.append(ids)
    T = max((len(r) for r in rows), default=0)
    out = torch.full((input_ids.shape[0], input_ids.shape[1] + T), encoded.pad_id, dtype=torch.long,
                     device=input_ids.device)
    out[:, :input_ids.shape[1]] = input_ids
    for b, ids in enumerate(rows):
        out[b, input_ids.shape[1]:input_ids.shape[1] + len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def _start(name: str, model, input_ids, generation_config, logits_processor, stopping_criteria, model_kwargs,
           streamer, reward, *, sampling: bool):
    """What every method checks before any work: ``(generation config, max_new_tokens)``."""
    gc = generation_config or model.generation_config
    _check_supported(gc, logits_processor, stopping_criteria, model_kwargs, sampling=sampling,
                     streamer=streamer or _generate_frame_value("streamer"),
                     assistant_model=_generate_frame_value("assistant_model"))
    if reward is None:
        raise InputError(f"reward: fastalign.hf.{name} needs reward=f(prompts, responses) -> [N]")
    return gc, _max_new_tokens(gc, input_ids.shape[1])


def aisp(model, input_ids, logits_processor=None, stopping_criteria=None, generation_config=None,
         synced_gpus=False, streamer=None, *, reward=None, text_tokenizer=None, n: int = 8, iterations: int = 4,
         sigma: float | None = None, variance: float | None = None, rel_sigma: float | None = None,
         control_cap: float | None = _aisp.DEFAULT_CONTROL_CAP, kl_coef: float = _aisp.DEFAULT_KL_COEF,
         lam: float = _aisp.DEFAULT_LAM, alpha: float = 0.999, horizon: int | None = None,
         normalize_rewards: bool = _aisp.DEFAULT_NORMALIZE_REWARDS, mean_rollout: bool = False,
         final_samples: int = 0, seed=0, backend: str | None = None, progress: bool = False,
         truncate_prompt: bool = False, **model_kwargs):
    """AISP as a ``generate`` decoding method: ``model.generate(**inputs, custom_generate=fastalign.hf.aisp,
    reward=..., text_tokenizer=..., n=..., iterations=...)``. The AISP arguments are those of
    :func:`fastalign.methods.aisp.aisp_generate`; see the module docstring for the conventions."""
    generation_config, T = _start("aisp", model, input_ids, generation_config, logits_processor, stopping_criteria,
                                  model_kwargs, streamer, reward, sampling=False)
    settings = _aisp.AispSettings.check(n=n, iterations=iterations, sigma=sigma, variance=variance,
                                        rel_sigma=rel_sigma, control_cap=control_cap, kl_coef=kl_coef, lam=lam,
                                        alpha=alpha, horizon=horizon, max_new_tokens=T,
                                        normalize_rewards=normalize_rewards, mean_rollout=mean_rollout,
                                        final_samples=final_samples, seed=seed, backend=backend)
    checked = _common.check_model_and_reward(model, reward, backend)
    encoded = _encoded(model, checked, text_tokenizer, input_ids, model_kwargs.get("attention_mask"), generation_config, T,
                       truncate_prompt)
    results = _aisp.run(model, text_tokenizer, encoded, reward, settings, progress=progress, metrics=False)
    return _as_generate_output(input_ids, results, encoded, T)


def bon(model, input_ids, logits_processor=None, stopping_criteria=None, generation_config=None,
        synced_gpus=False, streamer=None, *, reward=None, text_tokenizer=None, n: int = 32, seed=0,
        batch_size: int = 64, kl_coef: float = 0.0, progress: bool = False, truncate_prompt: bool = False,
        **model_kwargs):
    """Best-of-N as a ``generate`` decoding method: ``n`` samples per prompt with the generation
    config's ``temperature``, ``top_k`` and ``top_p`` (``do_sample=False``: greedy, every sample equal),
    the one the reward likes best returned."""
    gc, T = _start("bon", model, input_ids, generation_config, logits_processor, stopping_criteria, model_kwargs,
                   streamer, reward, sampling=True)
    sample = bool(getattr(gc, "do_sample", False))
    settings = _bon.BonSettings.check(n=n, temperature=(gc.temperature if gc.temperature is not None else 1.0)
                                      if sample else 0.0, top_p=(gc.top_p or 1.0) if sample else 1.0,
                                      top_k=(gc.top_k or 0) if sample else 0, seed=seed, max_new_tokens=T,
                                      batch_size=batch_size, kl_coef=kl_coef)
    checked = _common.check_model_and_reward(model, reward, None)
    encoded = _encoded(model, checked, text_tokenizer, input_ids, model_kwargs.get("attention_mask"), gc, T, truncate_prompt)
    results = _bon.run(model, text_tokenizer, encoded, reward, settings, progress=progress, metrics=False)
    return _as_generate_output(input_ids, results, encoded, T)


#: SEA's settings (the keyword arguments of :func:`fastalign.methods.sea.sea_generate` that SeaSettings.check takes:
#: the preset's options, left at ``sea.UNSET`` = the preset's value, and the named ones)
_SEA_OPTIONS = {name: p.default for name, p in inspect.signature(_sea.sea_generate).parameters.items()
                if (name in inspect.signature(_sea.SeaSettings.check).parameters or name in _sea.FASTALIGN)
                and name != "max_new_tokens"}


def sea(model, input_ids, logits_processor=None, stopping_criteria=None, generation_config=None,
        synced_gpus=False, streamer=None, *, reward=None, text_tokenizer=None, soft_reward=None,
        progress: bool = False, truncate_prompt: bool = False, **kwargs):
    """SEA as a ``generate`` decoding method: ``model.generate(**inputs, custom_generate=fastalign.hf.sea,
    reward=..., text_tokenizer=..., steps=..., chains=...)``. The SEA options (``chains``, ``steps``,
    ``lr``, ``soft_tokens``, ``fluency``, ``decoding``, ``noise``, ``seed``, ...) are those of
    :func:`fastalign.methods.sea.sea_generate`, with its defaults; ``reward`` must have a differentiable form
    (or pass ``soft_reward``). SEA samples its own starting responses, so it needs ``do_sample=False``."""
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in _SEA_OPTIONS}
    generation_config, T = _start("sea", model, input_ids, generation_config, logits_processor, stopping_criteria,
                                  kwargs, streamer, reward, sampling=False)
    settings = _sea.SeaSettings.check(**{**_SEA_OPTIONS, **options}, max_new_tokens=T)
    checked = _common.check_model_and_reward(model, reward, settings.backend)
    engine.input_embedding(model)  # refuses an offloaded embedding before any work
    encoded = _encoded(model, checked, text_tokenizer, input_ids, kwargs.get("attention_mask"), generation_config, T,
                       truncate_prompt)
    soft = soft_reward if soft_reward is not None else _sea.as_soft_reward(reward, model, text_tokenizer)
    results = _sea.run(model, text_tokenizer, encoded, reward, soft, settings, metrics=False, progress=progress)
    return _as_generate_output(input_ids, results, encoded, T)


def _declare_options(fn, options: dict) -> None:
    """List ``options`` as keyword-only parameters in ``fn``'s signature: ``generate`` passes a callable
    only the arguments its signature names (the rest it refuses as unused model kwargs)."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    extra = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in options.items()]
    fn.__signature__ = sig.replace(parameters=params + extra + [sig.parameters["kwargs"]])


_declare_options(sea, _SEA_OPTIONS)
_METHODS = {"aisp": aisp, "bon": bon, "sea": sea}
#: ``generate`` arguments the Hub calling convention passes that are not generation-config fields
_CALL_ARGS = ("inputs", "generation_config", "logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn",
              "synced_gpus", "assistant_model", "streamer", "negative_prompt_ids", "negative_prompt_attention_mask")


def generate(model, method: str = "aisp", **kwargs):
    """The Hub calling convention (``custom_generate="<folder>"``): every ``generate`` argument arrives
    here. ``method`` picks ``"aisp"``, ``"bon"`` or ``"sea"``; the rest are the method's arguments and generation
    config fields (``max_new_tokens``, ``do_sample``, ``temperature``, ...)."""
    if method not in _METHODS:
        raise InputError(f"method: expected one of {sorted(_METHODS)}, got {method!r}")
    call = {k: kwargs.pop(k, None) for k in _CALL_ARGS}
    for name in ("prefix_allowed_tokens_fn", "negative_prompt_ids", "negative_prompt_attention_mask",
                 "assistant_model"):
        if call[name] is not None:
            raise InputError(f"{name}: not supported by fastalign's methods")
    input_ids = kwargs.pop("input_ids", None)
    input_ids = call["inputs"] if input_ids is None else input_ids
    if input_ids is None:
        raise InputError("input_ids: pass the tokenised prompts (input_ids=..., attention_mask=...)")
    text_tokenizer = kwargs.pop("text_tokenizer", None) or kwargs.pop("tokenizer", None)
    gc = copy.deepcopy(call["generation_config"] or model.generation_config)
    method_kwargs = gc.update(**kwargs)  # generation-config fields are consumed, the rest returned
    return _METHODS[method](model, input_ids, call["logits_processor"], call["stopping_criteria"], gc,
                            streamer=call["streamer"], text_tokenizer=text_tokenizer, **method_kwargs)
