"""The prompt cache: prefill all but each prompt's last token once, fork it for every batch of rollouts
(:func:`fork_cache`), or copy it back in place into an earlier fork (:func:`refork_in_place`, the
compiled step's static cache)."""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch

from fastalign.errors import InputError
from fastalign.engine.model import ModelInterface, _returned_cache, forward_kwargs, model_interface, output_head


# ---------------------------------------------------------------------------------------------
# the prompt cache: prefill once, fork for every batch of rollouts
# ---------------------------------------------------------------------------------------------
@dataclass
class PromptCache:
    """The model's cache after all but the last token of B left-padded prompts.

    The last prompt token is fed by the first decode step of every rollout, so the logits of step 0
    come from the model's own forward (through the head hook, with the model's post-processing) in
    exactly the shape of every later step, while the rest of the prompt is computed once per call.

    input_ids, attention_mask: ``[B, P]`` the prompts (left padded); cache: the model's cache of
    ``input_ids[:, :-1]`` (None when P == 1); head_norm: ``[B]`` float32 L2 norm of the output head's
    input (the final normalised hidden state) at the last prefilled position, recorded by the prefill
    forward itself (None when P == 1): the pre-logit scale AISP's relative noise and trust region use;
    api: how to call the model (:func:`~fastalign.engine.model.model_interface`, resolved once per call
    and handed down with the cache: the decode loop, the compiled step and :func:`prompt_head_norm`
    read it here instead of inspecting the model again).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    cache: object | None
    head_norm: torch.Tensor | None = None
    api: ModelInterface | None = None


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Position ids ``[N, S]`` of left-padded rows from their attention mask (padding does not shift
    positions): what every forward of the engine, SEA and the metrics passes."""
    return (mask.cumsum(-1) - 1).clamp_min(0)


@torch.no_grad()
def prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
            api: ModelInterface | None = None) -> PromptCache:
    """Run the model once over ``input_ids[:, :-1]`` (``[B, P]`` left-padded prompts) and keep its cache.
    ``api``: the model's interface when the caller resolved it already (else it is resolved here)."""
    api = api or model_interface(model)
    mask = attention_mask.to(device=input_ids.device, dtype=torch.long)
    if input_ids.shape[1] < 2:
        return PromptCache(input_ids, mask, None, api=api)
    kwargs = forward_kwargs(api, input_ids=input_ids[:, :-1], attention_mask=mask[:, :-1], use_cache=True,
                            position_ids=position_ids(mask[:, :-1]), logits_to_keep=1)
    with _recording_head_norm(model) as norms:
        out = model(**kwargs)
    cache = _returned_cache(out, api)
    if cache is None:
        raise InputError(f"model: {type(model).__name__} returned no cache from a forward with use_cache=True, "
                         "so it cannot decode incrementally")
    return PromptCache(input_ids, mask, cache, norms[-1] if norms else None, api=api)


@contextlib.contextmanager
def _recording_head_norm(model):
    """Within the block, every forward appends the ``[B]`` float32 L2 norm of the output head's input at
    its last position to the yielded list (no extra compute beyond one norm of ``[B, d]``)."""
    norms: list[torch.Tensor] = []

    def hook(module, args):
        norms.append(args[0][:, -1, :].float().norm(dim=-1).to(device="cpu"))

    handle = output_head(model).register_forward_pre_hook(hook)
    try:
        yield norms
    finally:
        handle.remove()


def prompt_head_norm(model, prompt_cache: PromptCache) -> torch.Tensor:
    """``[B]`` float32 (on CPU) L2 norm of each prompt's head input at its last prefilled position (what
    :func:`prefill` recorded). A one-token prompt has no prefilled position (its row there is padding):
    its norm comes from one forward of its token alone, without a cache (a per-prompt rule, so a
    prompt's value does not depend on the batch around it)."""
    ids, mask = prompt_cache.input_ids, prompt_cache.attention_mask
    norms = prompt_cache.head_norm
    short = mask[:, :-1].sum(dim=1) == 0  # every row when P == 1 (nothing was prefilled)
    if bool(short.any()):
        norms = torch.zeros(len(ids)) if norms is None else norms.clone()
        kwargs = forward_kwargs(prompt_cache.api or model_interface(model), input_ids=ids[short][:, -1:],
                                logits_to_keep=1)
        with torch.no_grad(), _recording_head_norm(model) as recorded:
            model(**kwargs)
        norms[short.cpu()] = recorded[-1]
    return norms


def fork_cache(cache, rows: int | torch.Tensor, repeats: int = 1):
    """A new cache whose row ``j`` is row ``index[j]`` of ``cache``; ``cache`` is left unchanged, so it
    can be forked again.

    ``rows`` is either the number of rows of ``cache`` (an int), and then ``index`` is
    ``arange(rows).repeat_interleave(repeats)`` (row ``b * repeats + i`` is row ``b``: every rollout of
    prompt b), or ``index`` itself, a 1-D int64 tensor of rows of ``cache`` in any order, repeats allowed
    (the prompt cache forked to chosen rows, e.g. SEA's chains ``rows // chains``; ``repeats`` must then
    be 1). Works for every layer type of transformers' ``Cache`` (attention, sliding-window,
    state-space/linear-attention, hybrids) through ``reorder_cache``; an int ``rows`` with
    ``repeats == 1`` is a plain copy (no ``reorder_cache`` needed)."""
    if cache is None:
        return None
    by_index = isinstance(rows, torch.Tensor)
    if by_index and repeats != 1:
        raise ValueError("fork_cache: an index tensor takes no repeats")
    forked = copy.deepcopy(cache)
    if repeats == 1 and not by_index:
        return forked
    reorder = getattr(forked, "reorder_cache", None)
    if not callable(reorder):
        raise InputError(f"model: its cache ({type(cache).__name__}) cannot be forked to several rollouts "
                         "(it has no reorder_cache)")
    reorder(rows if by_index else torch.arange(rows).repeat_interleave(repeats))
    return forked


def _tensors_of(obj, seen: set | None = None) -> list[torch.Tensor]:
    """Every tensor reachable from a cache object through attributes, lists, tuples and dicts, in a
    fixed order (so two caches of the same structure pair up)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, (list, tuple)):
        items = obj
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        items = vars(obj).values()
    else:
        return []
    return [t for item in items for t in _tensors_of(item, seen)]


def refork_in_place(fork, prompt_cache, index: torch.Tensor) -> None:
    """Copy ``prompt_cache`` (B rows) into ``fork`` (an earlier :func:`fork_cache` of it, ``len(index)``
    rows) without reallocating anything: tensors are written with ``copy_`` (a CUDA graph and
    ``mark_static_address`` keep their addresses), per-layer Python flags are copied over."""
    for dst, src in zip(_tensors_of(fork), _tensors_of(prompt_cache), strict=True):
        if dst.shape == src.shape:
            dst.copy_(src)
        elif dst.dim() > 0 and dst.shape[0] == index.numel() and dst.shape[1:] == src.shape[1:]:
            dst.copy_(src.index_select(0, index.to(src.device)))
        else:
            raise ValueError(f"cannot refork a cache tensor {tuple(src.shape)} into {tuple(dst.shape)}")
    for dst_layer, src_layer in zip(getattr(fork, "layers", []), getattr(prompt_cache, "layers", []), strict=True):
        for key, value in vars(src_layer).items():
            if isinstance(value, (bool, int, float)) and key != "batch_size":
                setattr(dst_layer, key, value)
            elif isinstance(value, dict) and all(isinstance(x, (bool, int, type(None))) for x in value.values()):
                setattr(dst_layer, key, dict(value))
