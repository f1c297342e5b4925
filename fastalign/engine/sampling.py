"""Per-prompt stream seeds and token sampling from the fastalign Philox stream, so that a prompt's
noise and samples depend only on (seed, prompt text), never on batch composition or thread count."""
from __future__ import annotations

import hashlib
import math
import numbers

import torch

from fastalign.backends import rng
from fastalign.errors import InputError, InputTypeError

__all__ = ["stream_seeds", "sample_tokens"]

_SEED_LIMIT = 2**63

def stream_seeds(seed, prompts: list[str], *, salt: str = "") -> list[int]:
    """One stream seed per prompt, in ``[0, 2**63)``, that depends only on (seed, prompt text, salt).

    ``seed`` is an int (shared by every prompt) or a list of ints (one per prompt). The stream seed is
    the first 63 bits of BLAKE2b over ``"{seed}\\x1f{salt}\\x1f{prompt}"``: a prompt gets the same
    noise alone or inside any batch, two different prompts get unrelated streams, and ``salt`` tells
    apart several streams of one prompt (SEA chains).
    """
    B = len(prompts)
    if isinstance(seed, (list, tuple)) or (isinstance(seed, torch.Tensor) and seed.dim() == 1):
        seeds = [int(s) for s in (seed.tolist() if isinstance(seed, torch.Tensor) else seed)]
        if len(seeds) != B:
            raise InputError(f"seed: expected an int or {B} ints (one per prompt), got {len(seeds)}")
    else:
        if isinstance(seed, torch.Tensor):
            seed = seed.item()
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise InputTypeError(f"seed: expected an int or a list of ints, got {type(seed).__name__}")
        seeds = [int(seed)] * B
    for s in seeds:
        if s < 0 or s >= 2**63:
            raise InputError(f"seed: expected seeds in [0, 2**63), got {s}")
    out = []
    for s, p in zip(seeds, prompts):
        digest = hashlib.blake2b(f"{s}\x1f{salt}\x1f{p}".encode("utf-8"), digest_size=8).digest()
        out.append(int.from_bytes(digest, "little") % _SEED_LIMIT)
    return out


def sample_tokens(logits: torch.Tensor, seeds: torch.Tensor, offsets: torch.Tensor, *, temperature: float = 1.0,
                  top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """One token per row of ``logits [N, V]`` by inverse-CDF sampling with the uniform
    ``rng.uniform(seeds[r], offsets[r])`` of the fastalign stream (so a row's draw depends only on its
    own seed, offset and logits). ``temperature == 0`` is greedy. With ``top_p < 1`` only the smallest
    set of most likely tokens whose probability reaches ``top_p`` is kept (nucleus sampling); with
    ``top_k > 0`` only the ``top_k`` most likely (applied first, as in Hugging Face's warpers).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() if temperature == 1.0 else logits.float() / temperature
    if 0 < top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    probs = torch.softmax(scaled, dim=-1)
    order = None
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        before = probs.cumsum(dim=-1) - probs
        probs = torch.where(before < top_p, probs, torch.zeros_like(probs))
        probs = probs / probs.sum(dim=-1, keepdim=True)
    # the uniforms are computed where the logits are, with no host sync (seeds/offsets are >= 0 by construction)
    u = rng.uniform(seeds.to(device=probs.device, dtype=torch.int64), offsets.to(device=probs.device, dtype=torch.int64),
                    check=False)
    # the unnormalised float64 CDF against u scaled by its total: one pass over [N, V] fewer than
    # normalising the CDF (the per-step cost of sampling is these passes over the vocabulary)
    cdf = probs.cumsum(dim=-1, dtype=torch.float64)
    target = u.double().unsqueeze(-1) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    idx = idx.clamp(max=probs.shape[-1] - 1)
    # never pick a zero-probability token (possible only at the right edge through rounding); on a GPU
    # the fallback is computed unconditionally (no host sync), on CPU only when needed
    zero = probs.gather(-1, idx.unsqueeze(-1)).squeeze(-1) <= 0
    if probs.device.type != "cpu" or bool(zero.any()):
        idx = torch.where(zero, probs.argmax(dim=-1), idx)
    if order is not None:
        idx = order.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
    return idx
