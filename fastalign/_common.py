"""What the three methods (:mod:`fastalign.aisp`, :mod:`fastalign.sea`, :mod:`fastalign.bon`) share
besides the engine: argument checks, the backend check before any model work, progress lines on
stderr and the greedy baseline response."""
from __future__ import annotations

import math
import sys
from typing import Sequence

import torch

from fastalign import engine
from fastalign.encoding import response_texts
from fastalign.rewards import call_reward

__all__ = ["check_int", "check_float", "check_backend", "Progress", "greedy_baseline"]


def check_int(value, name: str, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {value!r}")
    return value


def check_float(value, name: str, *, positive=False, lo=None, hi=None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    value = float(value)
    if positive and value <= 0:
        raise ValueError(f"{name}: expected a value > 0, got {value}")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ValueError(f"{name}: expected a value in [{lo}, {hi}], got {value}")
    return value


def check_backend(backend, device: torch.device) -> None:
    """Resolve the fused-op backend for ``device`` up front, so that an unknown or unavailable backend
    is reported before the model runs (ValueError naming ``backend``, or BackendUnavailableError)."""
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend: expected a backend name (str) or None, got {type(backend).__name__}")
    from fastalign import backends

    backends.resolve(backend, device.type)


class Progress:
    """One line per iteration on stderr when enabled."""

    def __init__(self, enabled: bool, method: str):
        self.enabled = bool(enabled)
        self.method = method

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(f"fastalign {self.method}: {msg}", file=sys.stderr, flush=True)


def greedy_baseline(model, tokenizer, reward, prompts: list[str], input_ids: torch.Tensor,
                    attention_mask: torch.Tensor, *, max_new_tokens: int, eos_ids: Sequence[int],
                    pad_id: int) -> tuple[list[str], list[float]]:
    """The unperturbed greedy response to each prompt and its reward (``with_base=True`` of AISP and
    Best-of-N; not counted in ``reward_calls``)."""
    base = engine.decode(model, input_ids, attention_mask, max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id)
    texts, _ = response_texts(tokenizer, base.tokens, base.lengths, eos_ids)
    return texts, call_reward(reward, prompts, texts).tolist()
