"""The model's context limit, and the prompt-length check every method makes before any forward.

A prompt of ``c`` tokens answered with up to ``max_new_tokens`` new tokens occupies positions
``0 .. c + max_new_tokens - 1`` (left padding takes no position: positions come from the attention
mask), so it fits when ``c + max_new_tokens <= limit``. ``c`` is the prompt's own token count after
the chat template, never the padded width of its batch.

Where the limit comes from (:func:`context_limit`), and why:

* the model's config: ``max_position_embeddings`` or the architecture's name for it (GPT-2's
  ``n_positions``, ``n_ctx``, ``max_sequence_length``, ``seq_length``, ``max_seq_len``); of the text
  model (``config.get_text_config()``) for a multimodal config. Past it, learned position embeddings
  (GPT-2) index out of range and rotary ones run at positions the model never saw: transformers does not
  refuse either (a 9,001-token prompt to SmolLM2, whose limit is 8,192, ran and answered), so fastalign
  does.
* a **sliding window** (Mistral, Gemma 2/3, Qwen2 with ``use_sliding_window``) is not a limit: its
  layers attend to the last ``sliding_window`` tokens at any length, and the positions still run up to
  ``max_position_embeddings``, which stays the limit.
* **rope scaling** (``rope_parameters``, formerly ``rope_scaling``) extends the limit only where the
  config says that ``max_position_embeddings`` is the pre-trained length and transformers scales past
  it: ``"dynamic"`` (NTK scaling that transformers grows with the sequence beyond
  ``max_position_embeddings``) and ``"yarn"``/``"longrope"``/``"llama3"``/``"linear"`` whose
  ``original_max_position_embeddings`` is at least ``max_position_embeddings`` (Qwen2.5's documented
  YaRN switch) allow ``factor`` times the pre-trained length. Where ``max_position_embeddings`` is
  already larger than ``original_max_position_embeddings`` (Llama 3.1, DeepSeek-V3, Phi-3) it is the
  extended length and the limit. ``"linear"`` without ``original_max_position_embeddings`` keeps
  ``max_position_embeddings``: configs store either length there (Gemma 3 the extended 131,072, older
  linearly interpolated Llamas the pre-trained 4,096), and fastalign takes the config's word.
* a model whose config names no limit (state-space models such as Mamba) takes prompts of any length.

To run past the limit anyway, raise ``model.config.max_position_embeddings`` (your responsibility).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from fastalign.errors import InputError

__all__ = ["ContextLimit", "PromptTruncatedWarning", "context_limit", "check_prompt_lengths"]

#: config attributes that hold the longest sequence, in the order they are looked up
_LENGTH_ATTRIBUTES = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length",
                      "max_seq_len")
#: rope types whose ``factor`` stretches the pre-trained length (see the module docstring)
_SCALING_TYPES = ("dynamic", "yarn", "longrope", "llama3", "linear")


class PromptTruncatedWarning(UserWarning):
    """A prompt was cut from the left to fit the model's context (``truncate_prompt=True`` only)."""


@dataclass(frozen=True)
class ContextLimit:
    """The most positions (prompt + new tokens) a model takes, and where that number comes from."""

    tokens: int
    source: str


def _positive_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def _rope_dicts(config) -> list[dict]:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if not isinstance(params, dict):
        return []
    nested = [v for v in params.values() if isinstance(v, dict)]  # per layer type (Gemma 3 in transformers 5)
    return nested or [params]


def _text_config(config):
    get = getattr(config, "get_text_config", None)
    if callable(get):
        try:
            text = get()
        except Exception:  # a config that cannot name its text part: use it as it is
            return config
        if text is not None:
            return text
    return config


def context_limit(config) -> ContextLimit | None:
    """The context limit of a model's config (a transformers ``PretrainedConfig`` or any object with
    the attributes), or None when it names none. See the module docstring for the rules."""
    if config is None:
        return None
    config = _text_config(config)
    for attr in _LENGTH_ATTRIBUTES:
        length = _positive_int(getattr(config, attr, None))
        if length is not None:
            break
    else:
        return None
    source = attr
    best = None
    for rope in _rope_dicts(config):
        kind = str(rope.get("rope_type") or rope.get("type") or "default")
        factor = rope.get("factor")
        if kind not in _SCALING_TYPES or not isinstance(factor, (int, float)) or isinstance(factor, bool) \
                or not factor > 1:
            continue
        original = _positive_int(rope.get("original_max_position_embeddings")) or \
            _positive_int(getattr(config, "original_max_position_embeddings", None))
        if original is not None and original < length:
            continue  # the config's length is already the extended one
        if original is None and kind != "dynamic":
            continue  # the config's length may be either (see the module docstring): take it
        scaled = int(factor * (original or length))
        if best is None or scaled > best[0]:
            best = (scaled, f"{kind} rope scaling: factor {factor:g} x {original or length}")
    if best is not None and best[0] > length:
        return ContextLimit(best[0], best[1])
    return ContextLimit(length, source)


def check_prompt_lengths(counts: list[int], limit: ContextLimit | None, max_new_tokens: int, *,
                         truncate: bool = False, names: list[str] | None = None,
                         flags: dict[str, str] | None = None) -> list[int | None]:
    """Whether each prompt of ``counts`` tokens fits ``limit`` with ``max_new_tokens`` new tokens.

    Returns, per prompt, None (it fits) or the number of its last tokens to keep (``truncate``); raises
    ``InputError`` (a ``ValueError``) naming the first prompt that does not fit (``names[i]``, default
    ``prompts[i]``), its token count, the limit and the fixes (``flags`` renames
    ``max_new_tokens``/``truncate_prompt``, e.g. for the command line).
    """
    flags = {"max_new_tokens": "max_new_tokens", "truncate_prompt": "truncate_prompt=True", **(flags or {})}
    if limit is None:
        return [None] * len(counts)
    budget = limit.tokens - max_new_tokens
    if budget < 1:
        raise InputError(f"{flags['max_new_tokens']}: {max_new_tokens} new tokens leave no room for a prompt in "
                         f"the model's context of {limit.tokens} tokens ({limit.source}); use at most "
                         f"{limit.tokens - 1}")
    keep: list[int | None] = []
    for i, count in enumerate(counts):
        if count <= budget:
            keep.append(None)
            continue
        if truncate:
            keep.append(budget)
            continue
        name = names[i] if names is not None else f"prompts[{i}]"
        raise InputError(
            f"{name}: {count} prompt tokens + {max_new_tokens} new tokens ({flags['max_new_tokens']}) = "
            f"{count + max_new_tokens} exceed the model's context of {limit.tokens} tokens ({limit.source}); "
            f"shorten the prompt to at most {budget} tokens, lower {flags['max_new_tokens']}, or pass "
            f"{flags['truncate_prompt']} to keep its last {budget} tokens")
    return keep


def warn_truncated(name: str, kept: int, count: int, limit: ContextLimit) -> None:
    """The warning of a prompt cut to its last ``kept`` of ``count`` tokens."""
    warnings.warn(PromptTruncatedWarning(
        f"{name}: truncated from the left to its last {kept} of {count} tokens to fit the model's context of "
        f"{limit.tokens} tokens ({limit.source})"), stacklevel=4)
