"""The decode engine shared by AISP, SEA and Best-of-N: the model's output head and the hook that
perturbs its input, and the batched decode loop with the KV cache.

* :func:`output_head` finds a causal LM's output projection (``model.get_output_embeddings()``).
* :func:`perturb_head_input` edits the head's *input* (the final normalised hidden state, the
  "pre-logits") with a forward-pre-hook, so logits still come from the model's own forward and keep
  its post-processing (e.g. Gemma-2's final logit soft-capping). The KV cache is never touched.
* :func:`decode` is the batched decode loop with the KV cache: greedy or any token chooser, stops each
  rollout at EOS, records lengths (and optionally the logits of every step).
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

__all__ = ["Rollouts", "decode", "input_embedding", "output_head", "perturb_head_input"]


def output_head(model: torch.nn.Module) -> torch.nn.Module:
    """The output projection (``lm_head``) of a causal LM; ``ValueError`` if it has none."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, torch.nn.Module):
        raise ValueError(
            f"model: expected a causal LM with an output projection (model.get_output_embeddings() "
            f"returning a module, e.g. AutoModelForCausalLM), got {type(model).__name__} whose "
            f"get_output_embeddings() returns {type(head).__name__}"
        )
    return head


def input_embedding(model: torch.nn.Module) -> tuple[torch.Tensor, float]:
    """``(E [V, d], scale)``: the input embedding matrix and the factor the embedding module
    multiplies looked-up rows by (Gemma's ``sqrt(d)``; 1.0 for most models), so that
    ``(probs @ E) * scale`` is the soft counterpart of ``embed(ids)``."""
    emb = model.get_input_embeddings()
    if emb is None or not hasattr(emb, "weight"):
        raise ValueError(f"model: {type(model).__name__} has no input embedding matrix")
    scale = getattr(emb, "embed_scale", None)
    if isinstance(scale, torch.Tensor):
        scale = float(scale.item())
    return emb.weight, float(scale) if scale is not None else 1.0


@contextlib.contextmanager
def perturb_head_input(model: torch.nn.Module, transform: Callable[[torch.Tensor], torch.Tensor] | None):
    """Within the block, the output head sees ``transform(h)`` for the hidden state ``h`` of the last
    position of each forward (``[N, d]`` in, ``[N, d]`` out); the other positions pass unchanged.

    The transform sees exactly the head's input (the final normalised hidden state), so everything
    the model does after the head (soft-capping, scaling) still applies. ``transform=None`` is a no-op.
    """
    if transform is None:
        yield
        return
    head = output_head(model)

    def hook(module, args):
        h = args[0]
        z = transform(h[:, -1, :])
        if h.shape[1] == 1:
            h_new = z.unsqueeze(1)
        else:
            h_new = torch.cat([h[:, :-1, :], z.unsqueeze(1)], dim=1)
        return (h_new, *args[1:])

    handle = head.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class Rollouts:
    """Output of :func:`decode` for N sequences.

    tokens: ``[N, T]`` generated ids (pad after EOS); lengths: ``[N]`` generated tokens including the
    EOS token (T for a rollout that never ended); finished: ``[N]`` bool, ended with EOS;
    logits: ``[N, T, V]`` float32 logits of every step when asked for, else None.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor
    logits: torch.Tensor | None = None


def _forward_kwargs(model) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


@torch.no_grad()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
           eos_ids: Sequence[int], pad_id: int,
           choose: Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor] | None = None,
           transform: Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor] | None = None,
           return_logits: bool = False) -> Rollouts:
    """Decode ``N`` left-padded sequences together with the KV cache.

    Args:
        input_ids, attention_mask: ``[N, P]`` left-padded prompts.
        max_new_tokens: at most this many generated tokens per sequence.
        eos_ids: ids that end a rollout (it keeps its EOS token; later positions are padding).
        pad_id: id fed to finished rollouts (masked out of nothing: their outputs are ignored).
        choose: ``choose(logits [N, V] float32, step, active [N] bool) -> [N]`` next ids
            (default: greedy argmax).
        transform: ``transform(h [N, d], step, active [N] bool) -> [N, d]`` applied to the output head's
            input at the last position of each forward (see :func:`perturb_head_input`).
        return_logits: also return the logits of every step (``[N, T, V]`` float32).

    Position ids are computed from the attention mask (so left padding does not shift positions) and
    the head computes logits for the last position only (``logits_to_keep=1``) where supported.
    """
    device = input_ids.device
    N = input_ids.shape[0]
    accepted = _forward_kwargs(model)
    eos = torch.tensor(sorted(set(int(e) for e in eos_ids)) or [-1], dtype=torch.long, device=device)
    mask = attention_mask.to(device=device, dtype=torch.long)
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    active = torch.ones(N, dtype=torch.bool, device=device)
    lengths = torch.full((N,), max_new_tokens, dtype=torch.long, device=device)
    tokens = torch.full((N, max_new_tokens), pad_id, dtype=torch.long, device=device)
    all_logits = [] if return_logits else None
    past = None
    step_state = {"step": 0}

    def head_transform(h):
        return transform(h, step_state["step"], active)

    cur_ids = input_ids
    cur_pos = position_ids
    with perturb_head_input(model, head_transform if transform is not None else None):
        for step in range(max_new_tokens):
            step_state["step"] = step
            kwargs = {"input_ids": cur_ids, "attention_mask": mask, "use_cache": True}
            if "position_ids" in accepted:
                kwargs["position_ids"] = cur_pos
            if past is not None:
                kwargs["past_key_values"] = past
            if "logits_to_keep" in accepted:
                kwargs["logits_to_keep"] = 1
            out = model(**kwargs)
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            if all_logits is not None:
                all_logits.append(logits)
            nxt = logits.argmax(dim=-1) if choose is None else choose(logits, step, active)
            nxt = torch.where(active, nxt, torch.full_like(nxt, pad_id))
            tokens[:, step] = nxt
            ended = active & torch.isin(nxt, eos)
            lengths = torch.where(ended, torch.full_like(lengths, step + 1), lengths)
            active = active & ~ended
            if not bool(active.any()):
                tokens = tokens[:, : step + 1]
                break
            cur_ids = nxt.unsqueeze(-1)
            cur_pos = cur_pos[:, -1:] + 1
            mask = torch.cat([mask, torch.ones((N, 1), dtype=mask.dtype, device=device)], dim=1)
    lengths = lengths.clamp_max(tokens.shape[1])
    logits_t = torch.stack(all_logits, dim=1) if all_logits is not None else None
    return Rollouts(tokens=tokens, lengths=lengths, finished=~active, logits=logits_t)
