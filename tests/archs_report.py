"""Research script for issue 13 (not a test, not part of the package): how the cache of each tiny
architecture in ``tests/_archs.py`` behaves under the installed transformers, so the decode engine can
be made correct on all of them.

For every architecture it records the forward's cache-related parameters and ``deprecate_kwarg``
renames, the model/config flags, the output field and classes of the cache, and checks, against
``model.generate(do_sample=False)`` on the 5 left-padded prompts of ``_tiny.PROMPTS``:

1. a plain greedy loop (prefill the padded batch, then one token per step passing the cache back),
   in the recommended form (``recommended_recipe``) and in variants (mask at every step / at the
   prefill only / every step's inputs built by ``model.prepare_inputs_for_generation``);
2. prefill at B rows, fork the cache to B*n rows, decode == prefill the B*n repeated prompts, decode
   (forks: deepcopy + ``reorder_cache``, deepcopy + ``batch_repeat_interleave``, a structure-only
   deepcopy that shares the tensors + ``reorder_cache``);
3. the prompt cache is unchanged after decoding from the fork, and a second fork decodes the same;
4. what passing the cache under each name does (works / raises / decodes silently wrong);
5. ``StaticCache``: ``generate(cache_implementation="static")``, the loop with a ``StaticCache``
   (growing mask, zero-padded full-width mask, ``prepare_inputs_for_generation``), the forks of a
   static prompt cache, and re-forking in place into the same tensors (``refork_in_place``);
6. an unpadded batch (``generate`` drops an all-ones mask) against the loop with and without it;
7. compaction: dropping finished rows from the batch and the cache mid-decode
   (``reorder_cache(keep)`` / ``batch_select_indices(keep)``) leaves the kept rows' decode unchanged.

Run: ``python tests/archs_report.py`` (all archs; ~2-4 min on 2 cores) or ``--archs llama,mamba``.
``--md tests/ARCHS_REPORT.md`` rewrites the tables between the ``<!-- tables -->`` markers of that
file (or creates it); ``--json PATH`` dumps every record.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
import json
import sys
import time
import traceback
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _archs  # noqa: E402
import _tiny  # noqa: E402

CACHE_NAMES = ("cache", "past_key_values", "cache_params")
RELEVANT = CACHE_NAMES + ("cache_position", "use_cache", "logits_to_keep", "position_ids", "attention_mask",
                          "inputs_embeds", "token_type_ids")
STEPS = 8
N_FORK = 3
PAD, EOS = 0, 1
UNPADDED = ["w1 w2 w3", "w5 w6 w7"]
ROUNDING = 1e-4  # a logit difference up to this is float32 rounding (batch shape, kernel order)


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


# --------------------------------------------------------------------------------------------------
# Static facts: signature, deprecations, flags, cache classes
# --------------------------------------------------------------------------------------------------

def forward_params(model) -> dict:
    """The forward's cache-related parameter names (``inspect.signature`` follows ``__wrapped__``),
    whether it takes ``**kwargs``, and the ``deprecate_kwarg`` renames wrapped around it."""
    sig = inspect.signature(model.forward)
    names = [p for p in sig.parameters if p in RELEVANT]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return {"params": names, "var_kwargs": var_kw, "deprecated": deprecated_kwargs(model.forward)}


def deprecated_kwargs(fn) -> list[str]:
    """``old->new`` for each ``transformers.utils.deprecation.deprecate_kwarg`` around ``fn``."""
    found, f = [], getattr(fn, "__func__", fn)
    while f is not None:
        if getattr(f, "__code__", None) is not None and f.__code__.co_name == "wrapped_func":
            nl = inspect.getclosurevars(f).nonlocals
            if "old_name" in nl:
                found.append(f"{nl['old_name']}->{nl.get('new_name')}")
        f = getattr(f, "__wrapped__", None)
    return found


def rejection_reason(model) -> str | None:
    """Why a decode engine must refuse ``model`` before any forward (None: it can decode it), from
    the config, ``can_generate`` and the forward's signature and return annotation only."""
    if getattr(model.config, "is_encoder_decoder", False):
        return "encoder-decoder (config.is_encoder_decoder), not a decoder-only causal LM"
    if not model.can_generate():
        return "cannot generate (model.can_generate() is False): not a causal LM"
    if not any(n in inspect.signature(model.forward).parameters for n in CACHE_NAMES):
        return f"forward takes none of {', '.join(CACHE_NAMES)}: keeps its state outside a Cache"
    if not output_has_cache_field(model):
        return "forward returns no cache field: keeps its state inside the modules, cannot be forked"
    return None


def output_has_cache_field(model) -> bool:
    """Whether the output dataclass(es) in the forward's return annotation have a cache field
    (True when the annotation names no dataclass: then only a forward can tell)."""
    ann = inspect.signature(model.forward).return_annotation
    outs = [a for a in (typing.get_args(ann) or (ann,)) if isinstance(a, type) and dataclasses.is_dataclass(a)]
    return not outs or any(f.name in CACHE_NAMES for o in outs for f in dataclasses.fields(o))


def model_flags(model) -> dict:
    cfg = model.config
    head = model.get_output_embeddings()
    flags = {
        "class": type(model).__name__,
        "config": type(cfg).__name__,
        "is_encoder_decoder": bool(getattr(cfg, "is_encoder_decoder", False)),
        "can_generate": bool(model.can_generate()),
        "is_stateful": bool(getattr(model, "_is_stateful", False)),
        "can_compile_fullgraph": bool(getattr(model, "_can_compile_fullgraph", False)),
        "head": type(head).__name__ if head is not None else None,
        "tied": _archs.is_tied(model) if head is not None else None,
        "layer_types": getattr(cfg, "layer_types", None),
        "sliding_window": getattr(cfg, "sliding_window", None),
    }
    sdc = getattr(model, "_supports_default_dynamic_cache", None)
    flags["supports_default_dynamic_cache"] = bool(sdc()) if callable(sdc) else None
    flags["rejection_reason"] = rejection_reason(model)
    return flags


def cache_field(out) -> str | None:
    """The name of the output field that holds the cache (real field, not the BC alias)."""
    keys = list(out.keys())
    for name in CACHE_NAMES:
        if name in keys:
            return name
    return None


def cache_of(out):
    name = cache_field(out)
    return out[name] if name is not None else None


def describe_cache(cache) -> dict:
    layers = getattr(cache, "layers", None)
    return {
        "cache_class": type(cache).__name__,
        "layer_classes": [type(layer).__name__ for layer in layers] if layers is not None else None,
        "is_linear": getattr(cache, "is_linear", None) if layers is not None else None,
        "has_reorder_cache": callable(getattr(cache, "reorder_cache", None)),
        "has_batch_repeat_interleave": callable(getattr(cache, "batch_repeat_interleave", None)),
    }


# --------------------------------------------------------------------------------------------------
# The greedy loop
# --------------------------------------------------------------------------------------------------

@dataclass
class Recipe:
    """How one decode step is called. ``mask_on_decode=False`` passes the attention mask at prefill
    only (what ``generate`` does for Mamba/Mamba2/FalconMamba); ``via_prepare`` builds every step's
    inputs with ``model.prepare_inputs_for_generation`` like ``generate`` does."""

    cache_kw: str
    position_ids: bool
    logits_to_keep: bool
    attention_mask: bool = True
    mask_on_decode: bool = True
    via_prepare: bool = False
    mask_width: int | None = None  # pad the 2D mask with zeros to this width (a preallocated mask)


def recipe_for(model, **overrides) -> Recipe:
    params = set(inspect.signature(model.forward).parameters)
    kw = next((n for n in CACHE_NAMES if n in params), None)
    r = Recipe(cache_kw=kw, position_ids="position_ids" in params, logits_to_keep="logits_to_keep" in params,
               attention_mask="attention_mask" in params)
    for k, v in overrides.items():
        setattr(r, k, v)
    return r


def recommended_recipe(model) -> Recipe:
    """The recipe this report recommends, decided before any forward: the cache kwarg from the
    signature, position ids / ``logits_to_keep=1`` where accepted, and the 2D mask at every step
    except for a purely recurrent cache (every layer linear-attention: Mamba family), where it is
    passed at the prefill only, as their ``prepare_inputs_for_generation`` does."""
    from transformers import DynamicCache

    return recipe_for(model, mask_on_decode=not all_linear(DynamicCache(config=model.config.get_text_config(decoder=True))))


def all_linear(cache) -> bool:
    """Every layer of ``cache`` is a linear-attention/state-space layer (no key/value layer)."""
    from transformers import cache_utils

    mixin = getattr(cache_utils, "LinearAttentionCacheLayerMixin", None)
    layers = getattr(cache, "layers", None)
    if not layers or mixin is None:
        return False
    return all(isinstance(x, mixin) and not isinstance(x, cache_utils.CacheLayerMixin) for x in layers)


def position_ids_from(mask: torch.Tensor) -> torch.Tensor:
    """``generate``'s positions: ``cumsum(mask) - 1`` with pads at 0 (``[N, L]``)."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


def step_kwargs(r: Recipe, ids, mask, pos, cache, prefill: bool) -> dict:
    kw = {"input_ids": ids, "use_cache": True}
    if r.attention_mask and mask is not None and (prefill or r.mask_on_decode):
        kw["attention_mask"] = mask
    if r.position_ids:
        kw["position_ids"] = pos[:, -ids.shape[1]:]
    if r.logits_to_keep:
        kw["logits_to_keep"] = 1
    if cache is not None:
        if r.cache_kw is None:
            raise ValueError("the forward takes no cache argument (none of cache, past_key_values, cache_params)")
        kw[r.cache_kw] = cache
    return kw


def forward_step(model, r: Recipe, seq, mask, pos, cache, prefill: bool):
    """One forward; ``seq`` is the whole sequence so far ``[N, L]`` (only its last token is fed
    after the prefill). Returns ``(logits [N, V] float32, cache)``."""
    if r.mask_width is not None:
        mask = torch.nn.functional.pad(mask, (0, r.mask_width - mask.shape[1]))
    if r.via_prepare:
        kw = {"use_cache": True, "attention_mask": mask, "is_first_iteration": prefill}
        if r.position_ids:
            kw["position_ids"] = pos
        if r.logits_to_keep:
            kw["logits_to_keep"] = 1
        if cache is not None:
            kw[r.cache_kw] = cache
        inputs = model.prepare_inputs_for_generation(seq, next_sequence_length=None if prefill else 1, **kw)
    else:
        ids = seq if prefill else seq[:, -1:]
        inputs = step_kwargs(r, ids, mask, pos, cache, prefill)
    out = model(**inputs, return_dict=True)
    return out.logits[:, -1].float(), cache_of(out)


@torch.no_grad()
def greedy(model, r: Recipe, ids, mask, steps=STEPS, start=None, cache=None, compact=None):
    """Greedy decode like ``generate``: finished rows are fed the pad id. ``start=(cache, logits)``
    continues from a prefilled (or forked) cache instead of prefilling ``ids``; ``cache`` is an
    empty cache object to prefill into. ``compact=(step, keep, method)`` drops every row not in
    ``keep`` from the batch and the cache (``cache.<method>(keep)``) after that step; dropped rows
    read PAD / 0 from then on. Returns ``(tokens [N, T], logits [N, T, V], cache)``."""
    pos = position_ids_from(mask)
    seq = ids
    if start is None:
        logits, cache = forward_step(model, r, seq, mask, pos, cache, prefill=True)
    else:
        cache, logits = start
    rows = torch.arange(ids.shape[0])
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool)
    toks, logs = [], []
    for t in range(steps):
        nxt = torch.where(unfinished, logits.argmax(-1), torch.full_like(logits[:, 0], PAD, dtype=torch.long))
        toks.append(torch.full((ids.shape[0],), PAD).index_copy(0, rows, nxt))
        logs.append(logits.new_zeros(ids.shape[0], logits.shape[1]).index_copy(0, rows, logits))
        unfinished &= nxt != EOS
        if t == steps - 1 or not unfinished.any():
            break
        if compact is not None and t == compact[0]:
            keep = compact[1]
            getattr(cache, compact[2])(keep)
            rows, nxt, seq, mask, pos, unfinished = (x[keep] for x in (rows, nxt, seq, mask, pos, unfinished))
        seq = torch.cat([seq, nxt[:, None]], 1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
        pos = torch.cat([pos, pos[:, -1:] + 1], 1)
        logits, cache = forward_step(model, r, seq, mask, pos, cache, prefill=False)
    return torch.stack(toks, 1), torch.stack(logs, 1), cache


@torch.no_grad()
def generate(model, ids, mask, **kw):
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=STEPS,
                         pad_token_id=PAD, eos_token_id=EOS, return_dict_in_generate=True, output_logits=True,
                         **kw)
    toks = out.sequences[:, ids.shape[1]:]
    return toks, torch.stack(out.logits, 1).float()


def _matches(res: dict) -> bool:
    return "error" not in res and res["tokens_equal"] and res["max_dlogit"] <= ROUNDING


def compare(toks_a, logits_a, toks_b, logits_b) -> dict:
    """Token equality over the common length and the max |logit difference| over the steps
    before the first token difference (after it the inputs differ)."""
    T = min(toks_a.shape[1], toks_b.shape[1])
    same = bool(torch.equal(toks_a[:, :T], toks_b[:, :T])) and toks_a.shape[1] == toks_b.shape[1]
    diff_steps = (toks_a[:, :T] != toks_b[:, :T]).any(0).nonzero()
    upto = T if diff_steps.numel() == 0 else int(diff_steps[0]) + 1
    dl = (logits_a[:, :upto] - logits_b[:, :upto]).abs().max().item()
    return {"tokens_equal": same, "max_dlogit": dl, "first_diff_step": None if same else int(upto - 1)}


# --------------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------------

def prompts(texts):
    enc = _tiny.tokenizer()(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def check_loop_vs_generate(model, rec: dict) -> Recipe | None:
    """(i): several step recipes against ``generate``; returns the first that matches it."""
    ids, mask = prompts(_tiny.PROMPTS)
    gen_t, gen_l = generate(model, ids, mask)
    rec["generate_tokens"] = gen_t.tolist()
    variants = {"recommended": recommended_recipe(model), "mask_every_step": recipe_for(model),
                "mask_prefill_only": recipe_for(model, mask_on_decode=False),
                "prepare_inputs_for_generation": recipe_for(model, via_prepare=True)}
    matched = None
    for name, r in variants.items():
        try:
            toks, logits, cache = greedy(model, r, ids, mask)
            rec[f"loop[{name}]"] = compare(toks, logits, gen_t, gen_l)
            if name == "recommended":
                rec.update(describe_cache(cache))
            if matched is None and _matches(rec[f"loop[{name}]"]):
                matched = r
        except Exception as e:  # noqa: BLE001 - research: record what fails
            rec[f"loop[{name}]"] = {"error": _err(e)}
    return matched


def tensors_of(obj, seen=None):
    """Every tensor reachable from a cache object through attributes, lists, tuples and dicts."""
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
    return [t for item in items for t in tensors_of(item, seen)]


def same_state(a, b) -> bool:
    ta, tb = tensors_of(a), tensors_of(b)
    return len(ta) == len(tb) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(ta, tb))


def fork(cache, B: int, n: int, how: str):
    index = torch.arange(B).repeat_interleave(n)
    if how == "deepcopy+reorder_cache":
        f = copy.deepcopy(cache)
        f.reorder_cache(index)
    elif how == "deepcopy+batch_repeat_interleave":
        f = copy.deepcopy(cache)
        f.batch_repeat_interleave(n)
    elif how == "shared_tensors_deepcopy+reorder_cache":
        memo = {id(t): t for t in tensors_of(cache)}  # copy the structure, share the tensors
        f = copy.deepcopy(cache, memo)
        f.reorder_cache(index)
    else:
        raise ValueError(how)
    return f


FORKS = ("deepcopy+reorder_cache", "deepcopy+batch_repeat_interleave", "shared_tensors_deepcopy+reorder_cache")


def check_fork(model, r: Recipe, rec: dict, make_cache=None, prefix="fork"):
    """(ii)+(iii): prefill B rows, fork to B*n, decode; compare with prefilling B*n rows; check the
    prompt cache is unchanged and a second fork decodes the same."""
    ids, mask = prompts(_tiny.PROMPTS)
    B, n = ids.shape[0], N_FORK
    ids_n, mask_n = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    with torch.no_grad():
        try:
            direct_t, direct_l, _ = greedy(model, r, ids_n, mask_n, cache=make_cache(B * n) if make_cache else None)
        except Exception as e:  # noqa: BLE001
            rec[f"{prefix}[direct]"] = {"error": _err(e)}
            return
        for how in FORKS:
            key = f"{prefix}[{how}]"
            try:
                pos = position_ids_from(mask)
                logits0, prompt_cache = forward_step(model, r, ids, mask, pos, make_cache(B) if make_cache else None,
                                                     prefill=True)
                before = copy.deepcopy(prompt_cache)
                start = (fork(prompt_cache, B, n, how), logits0.repeat_interleave(n, 0))
                t1, l1, _ = greedy(model, r, ids_n, mask_n, start=start)
                res = compare(t1, l1, direct_t, direct_l)
                res["prompt_cache_unchanged"] = same_state(prompt_cache, before)
                start = (fork(prompt_cache, B, n, how), logits0.repeat_interleave(n, 0))
                t2, l2, _ = greedy(model, r, ids_n, mask_n, start=start)
                res["refork_equal"] = bool(torch.equal(t1, t2)) and (l1 - l2).abs().max().item() == 0.0
                rec[key] = res
            except Exception as e:  # noqa: BLE001
                rec[key] = {"error": _err(e)}


COMPACTIONS = ("reorder_cache", "batch_select_indices")


def check_compaction(model, r: Recipe, rec: dict):
    """(vii): after 3 steps keep rows 0, 2, 4 only (cache rows dropped) and go on: the kept rows
    decode exactly as in the uncompacted batch."""
    ids, mask = prompts(_tiny.PROMPTS)
    keep = torch.tensor([0, 2, 4])
    with torch.no_grad():
        full_t, full_l, _ = greedy(model, r, ids, mask)
        for method in COMPACTIONS:
            try:
                t, logits, _ = greedy(model, r, ids, mask, compact=(2, keep, method))
                T = min(t.shape[1], full_t.shape[1])
                rec[f"compact[{method}]"] = compare(t[keep, :T], logits[keep, :T], full_t[keep, :T], full_l[keep, :T])
            except Exception as e:  # noqa: BLE001
                rec[f"compact[{method}]"] = {"error": _err(e)}


def check_wrong_names(model, r: Recipe, rec: dict):
    """(iv): decode with the cache passed under each name; classify the result."""
    ids, mask = prompts(_tiny.PROMPTS)
    ref_t, ref_l, _ = greedy(model, r, ids, mask)
    for name in CACHE_NAMES:
        alt = copy.copy(r)
        alt.cache_kw = name
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                t, logits, _ = greedy(model, alt, ids, mask)
                res = compare(t, logits, ref_t, ref_l)
                verdict = "same" if _matches(res) else (
                    f"SILENTLY WRONG (tokens from step {res['first_diff_step']})" if not res["tokens_equal"] else
                    f"SILENTLY WRONG (same tokens, logits off by {res['max_dlogit']:.2g})")
            except Exception as e:  # noqa: BLE001
                verdict = f"raises {_err(e)}"
        fut = sorted({str(w.message) for w in caught if issubclass(w.category, FutureWarning)})
        rec[f"name[{name}]"] = verdict + (" + FutureWarning" if fut else "")
        if fut:
            rec[f"name[{name}]_warnings"] = fut


def static_cache(model, max_len: int):
    """``StaticCache`` as transformers 5.24 builds it: config and length only (batch size, device,
    dtype and head shapes come lazily from the first update)."""
    from transformers import StaticCache

    return StaticCache(config=model.config.get_text_config(decoder=True), max_cache_len=max_len)


def check_static(model, r: Recipe, rec: dict):
    """(v): generate with a static cache, the loop with a StaticCache, the fork of a static cache."""
    ids, mask = prompts(_tiny.PROMPTS)
    max_len = ids.shape[1] + STEPS
    try:
        dyn_t, dyn_l = generate(model, ids, mask)
        st_t, st_l = generate(model, ids, mask, cache_implementation="static")
        rec["static[generate_vs_dynamic]"] = compare(st_t, st_l, dyn_t, dyn_l)
    except Exception as e:  # noqa: BLE001
        rec["static[generate_vs_dynamic]"] = {"error": _err(e)}
        dyn_t, dyn_l = generate(model, ids, mask)
        st_t = st_l = None
    try:
        with torch.no_grad():
            t, logits, cache = greedy(model, r, ids, mask, cache=static_cache(model, max_len))
        rec["static[loop_vs_dynamic_generate]"] = compare(t, logits, dyn_t, dyn_l)
        if st_t is not None:
            rec["static[loop_vs_static_generate]"] = compare(t, logits, st_t, st_l)
        rec["static[cache]"] = describe_cache(cache)
        rec["static[cache]"]["is_compileable"] = bool(cache.is_compileable)
    except Exception as e:  # noqa: BLE001
        rec["static[loop_vs_dynamic_generate]"] = {"error": _err(e)}
    variants = {"full_width_mask": dict(mask_width=max_len), "prepare_inputs_for_generation": dict(via_prepare=True)}
    for name, change in variants.items():
        alt = copy.copy(r)
        for k, v in change.items():
            setattr(alt, k, v)
        try:
            with torch.no_grad():
                t, logits, _ = greedy(model, alt, ids, mask, cache=static_cache(model, max_len))
            ref = (st_t, st_l) if st_t is not None else (dyn_t, dyn_l)
            rec[f"static[loop_{name}_vs_generate]"] = compare(t, logits, *ref)
        except Exception as e:  # noqa: BLE001
            rec[f"static[loop_{name}_vs_generate]"] = {"error": _err(e)}
    if not _matches(rec.get("static[loop_vs_dynamic_generate]", {"error": ""})):
        alt = copy.copy(r)
        alt.mask_width = max_len
        r = alt  # e.g. Bloom: its ALiBi needs the mask as wide as the static cache
    check_fork(model, r, rec, make_cache=lambda rows: static_cache(model, max_len), prefix="static_fork")
    check_refork_in_place(model, r, rec, lambda rows: static_cache(model, max_len))


def refork_in_place(dst, src, index: torch.Tensor):
    """Copy the prompt cache ``src`` (B rows) into the fork ``dst`` (B*n rows, same structure, made
    earlier by deepcopy + reorder_cache) without reallocating: tensors are written with ``copy_`` so
    their addresses (CUDA graphs, ``mark_static_address``) stay; Python scalars are assigned."""
    for a, b in zip(tensors_of(dst), tensors_of(src), strict=True):
        if a.shape == b.shape:
            a.copy_(b)
        elif a.shape[0] == index.numel() and a.shape[1:] == b.shape[1:]:
            a.copy_(b.index_select(0, index))
        else:
            raise ValueError(f"cannot refork {tuple(b.shape)} into {tuple(a.shape)}")
    for la, lb in zip(dst.layers, src.layers, strict=True):
        for k, v in vars(lb).items():
            if isinstance(v, (bool, int, float)) and k != "batch_size":
                setattr(la, k, v)
            elif isinstance(v, dict) and all(isinstance(x, (bool, int, type(None))) for x in v.values()):
                setattr(la, k, dict(v))


def check_refork_in_place(model, r: Recipe, rec: dict, make_cache):
    """Static caches: fork once (deepcopy + reorder), decode, refork in place from the prompt cache,
    decode again: same tokens, same logits, no tensor of the fork reallocated, prompt cache unchanged."""
    ids, mask = prompts(_tiny.PROMPTS)
    B, n = ids.shape[0], N_FORK
    index = torch.arange(B).repeat_interleave(n)
    ids_n, mask_n = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    try:
        with torch.no_grad():
            logits0, prompt_cache = forward_step(model, r, ids, mask, position_ids_from(mask), make_cache(B), True)
            before = copy.deepcopy(prompt_cache)
            f = fork(prompt_cache, B, n, "deepcopy+reorder_cache")
            t1, l1, _ = greedy(model, r, ids_n, mask_n, start=(f, logits0.repeat_interleave(n, 0)))
            ptrs = [t.data_ptr() for t in tensors_of(f)]
            refork_in_place(f, prompt_cache, index)
            t2, l2, _ = greedy(model, r, ids_n, mask_n, start=(f, logits0.repeat_interleave(n, 0)))
        rec["static_refork_in_place"] = {
            "tokens_equal": bool(torch.equal(t1, t2)), "max_dlogit": (l1 - l2).abs().max().item(),
            "first_diff_step": None, "addresses_kept": ptrs == [t.data_ptr() for t in tensors_of(f)],
            "prompt_cache_unchanged": same_state(prompt_cache, before), "refork_equal": True}
    except Exception as e:  # noqa: BLE001
        rec["static_refork_in_place"] = {"error": _err(e)}


def check_unpadded(model, r: Recipe, rec: dict):
    """(vi): an unpadded batch: generate drops the all-ones mask; the loop passes it."""
    ids, mask = prompts(UNPADDED)
    gen_t, gen_l = generate(model, ids, mask)
    t, logits, _ = greedy(model, r, ids, mask)
    rec["unpadded[loop_with_mask_vs_generate]"] = compare(t, logits, gen_t, gen_l)
    no_mask = copy.copy(r)
    no_mask.attention_mask = False
    t, logits, _ = greedy(model, no_mask, ids, mask)
    rec["unpadded[loop_without_mask_vs_generate]"] = compare(t, logits, gen_t, gen_l)


def check_arch(name: str) -> dict:
    rec: dict = {"arch": name}
    t0 = time.perf_counter()
    try:
        model = _archs.model(name)
    except Exception as e:  # noqa: BLE001
        rec["build_error"] = _err(e)
        return rec
    rec.update(model_flags(model))
    rec.update(forward_params(model))
    ids, mask = prompts(_tiny.PROMPTS)
    try:
        with torch.no_grad():
            extra = {"decoder_input_ids": torch.zeros_like(ids[:, :1])} if rec["is_encoder_decoder"] else {}
            out = model(input_ids=ids, attention_mask=mask, use_cache=True, **extra)
        rec["output_cache_field"] = cache_field(out)
        rec["output_fields"] = list(out.keys())
        if rec["output_cache_field"] is not None:
            rec["prefill_cache"] = describe_cache(cache_of(out))
    except Exception as e:  # noqa: BLE001
        rec["prefill_error"] = _err(e)
    try:
        _run_checks(model, rec)
    except Exception as e:  # noqa: BLE001
        rec["checks_error"] = _err(e)
        rec["checks_traceback"] = traceback.format_exc(limit=3)[-600:]
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    return rec


def _run_checks(model, rec: dict):
    if not model.can_generate():
        raise ValueError(f"{type(model).__name__} cannot generate (model.can_generate() is False)")
    matched = check_loop_vs_generate(model, rec)
    r = matched or recipe_for(model)
    rec["recipe"] = None if matched is None else {k: v for k, v in vars(matched).items()}
    check_fork(model, r, rec)
    check_compaction(model, r, rec)
    check_wrong_names(model, r, rec)
    check_static(model, r, rec)
    check_unpadded(model, r, rec)


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------

def _ok(res) -> str:
    if res is None:
        return "-"
    if "error" in res:
        return "ERR"
    if not res["tokens_equal"]:
        return f"NO@{res['first_diff_step']} ({res['max_dlogit']:.0e})"
    if res["max_dlogit"] > ROUNDING:
        return f"tokens yes, LOGITS OFF ({res['max_dlogit']:.0e})"
    return f"yes ({res['max_dlogit']:.0e})" if res["max_dlogit"] else "yes"


def _fork_cell(res) -> str:
    if res is None:
        return "-"
    if "error" in res:
        return "ERR"
    s = _ok(res)
    if not res["prompt_cache_unchanged"]:
        s += " prompt-cache CHANGED"
    if not res["refork_equal"]:
        s += " refork differs"
    return s


def _short_layers(layers) -> str:
    if not layers:
        return "-"
    abbrev = {"DynamicLayer": "Dyn", "DynamicSlidingWindowLayer": "DynSW", "LinearAttentionLayer": "Lin",
              "LinearAttentionAndFullAttentionLayer": "Lin+Dyn", "StaticLayer": "St",
              "StaticSlidingWindowLayer": "StSW", "LinearAttentionAndStaticFullAttentionLayer": "Lin+St"}
    return ",".join(abbrev.get(x, x) for x in layers)


def facts_table(records) -> str:
    head = ("| arch | class | forward cache kw | deprecated kw | other params | out field | cache / layers "
            "| gen | stateful | reject before work? |\n|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in records:
        if "build_error" in r:
            rows.append(f"| {r['arch']} | build failed: {r['build_error']} ||||||||\n")
            continue
        params = [p for p in r["params"] if p not in CACHE_NAMES]
        kw = [p for p in r["params"] if p in CACHE_NAMES]
        pc = r.get("prefill_cache") or {}
        other = ",".join(p.replace("attention_mask", "mask").replace("position_ids", "pos")
                         .replace("logits_to_keep", "ltk").replace("inputs_embeds", "embeds")
                         .replace("use_cache", "use").replace("cache_position", "CACHE_POSITION")
                         .replace("token_type_ids", "tti") for p in params) + (",**kw" if r["var_kwargs"] else "")
        rows.append(f"| {r['arch']} | {r['class']} | {','.join(kw) or '-'} | {','.join(r['deprecated']) or '-'} "
                    f"| {other} | {r.get('output_cache_field') or r.get('prefill_error', '-')} "
                    f"| {pc.get('cache_class', '-')} [{_short_layers(pc.get('layer_classes'))}] "
                    f"| {'y' if r['can_generate'] else 'n'}{'/encdec' if r['is_encoder_decoder'] else ''} "
                    f"| {'y' if r['is_stateful'] else ''} | {r['rejection_reason'] or 'no'} |\n")
    return head + "".join(rows)


def results_table(records) -> str:
    head = ("| arch | recommended loop=gen | loop=gen (mask every step) | loop=gen (mask prefill only) "
            "| via prepare_inputs | fork reorder | fork repeat_interleave | fork shared-tensors | unpadded w/ mask "
            "| unpadded no mask | compact reorder_cache | compact batch_select_indices "
            "| s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in records:
        if "build_error" in r:
            continue
        if "checks_error" in r and "loop[mask_every_step]" not in r:
            rows.append(f"| {r['arch']} | checks failed: {r['checks_error']} ||||||||||||\n")
            continue
        g = r.get
        rows.append(
            f"| {r['arch']} | {_ok(g('loop[recommended]'))} | {_ok(g('loop[mask_every_step]'))} | {_ok(g('loop[mask_prefill_only]'))} "
            f"| {_ok(g('loop[prepare_inputs_for_generation]'))} "
            f"| {_fork_cell(g('fork[deepcopy+reorder_cache]'))} "
            f"| {_fork_cell(g('fork[deepcopy+batch_repeat_interleave]'))} "
            f"| {_fork_cell(g('fork[shared_tensors_deepcopy+reorder_cache]'))} "
            f"| {_ok(g('unpadded[loop_with_mask_vs_generate]'))} | {_ok(g('unpadded[loop_without_mask_vs_generate]'))} "
            f"| {_ok(g('compact[reorder_cache]'))} | {_ok(g('compact[batch_select_indices]'))} "
            f"| {r.get('seconds', '')} |\n")
    return head + "".join(rows)


def _refork_cell(res) -> str:
    if res is None or "error" in res:
        return "-" if res is None else "ERR"
    s = _ok(res)
    s += "" if res["addresses_kept"] else " REALLOCATED"
    return s + ("" if res["prompt_cache_unchanged"] else " prompt-cache CHANGED")


def static_table(records) -> str:
    head = ("| arch | static layers | gen static=dyn | loop (growing mask)=gen | loop (full-width mask)=gen "
            "| via prepare_inputs=gen | fork reorder | fork shared-tensors | refork in place |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in records:
        if "build_error" in r or "static[generate_vs_dynamic]" not in r:
            continue
        g = r.get
        rows.append(
            f"| {r['arch']} | {_short_layers((g('static[cache]') or {}).get('layer_classes'))} "
            f"| {_ok(g('static[generate_vs_dynamic]'))} | {_ok(g('static[loop_vs_static_generate]'))} "
            f"| {_ok(g('static[loop_full_width_mask_vs_generate]'))} "
            f"| {_ok(g('static[loop_prepare_inputs_for_generation_vs_generate]'))} "
            f"| {_fork_cell(g('static_fork[deepcopy+reorder_cache]'))} "
            f"| {_fork_cell(g('static_fork[shared_tensors_deepcopy+reorder_cache]'))} "
            f"| {_refork_cell(g('static_refork_in_place'))} |\n")
    return head + "".join(rows)


def names_table(records) -> str:
    head = "| arch | cache= | past_key_values= | cache_params= |\n|---|---|---|---|\n"
    rows = [f"| {r['arch']} | " + " | ".join(r.get(f"name[{n}]", "-") for n in CACHE_NAMES) + " |\n"
            for r in records if "build_error" not in r]
    return head + "".join(rows)


def errors_list(records) -> str:
    """Every exception, grouped: ``check: message — archs``."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in records:
        for k, v in r.items():
            msg = v if k.endswith("_error") and isinstance(v, str) else (
                v["error"] if isinstance(v, dict) and "error" in v else None)
            if msg is not None:
                groups.setdefault((k, msg), []).append(r["arch"])
    return "".join(f"- {k}: `{msg}` — {', '.join(archs)}\n" for (k, msg), archs in groups.items())


def markdown(records) -> str:
    import transformers

    return (f"Generated by `python tests/archs_report.py --md tests/ARCHS_REPORT.md` with transformers "
            f"{transformers.__version__}, torch {torch.__version__}, float32, eager attention, "
            f"{len(_tiny.PROMPTS)} left-padded prompts, {STEPS} greedy tokens, fork n={N_FORK}.\n\n"
            "### Interface per architecture\n\n" + facts_table(records) +
            "\n### Greedy correctness (yes = same tokens as the reference; (x) = max |logit difference|; "
            "NO@k = first differing step)\n\n" + results_table(records) +
            "\n### StaticCache (loop and forks decode with the recipe that matched generate)\n\n" +
            static_table(records) +
            "\n### Cache passed under each name (reference: the matching recipe)\n\n" + names_table(records) +
            "\n### Errors\n\n" + errors_list(records))


def write_md(path: Path, body: str):
    start, end = "<!-- tables -->", "<!-- /tables -->"
    text = path.read_text() if path.exists() else f"# Architectures report\n\n{start}\n{end}\n"
    if start not in text or end not in text:
        text += f"\n{start}\n{end}\n"
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    path.write_text(f"{before}{start}\n{body}{end}{after}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(_archs.ARCHS))
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--from-json", type=Path, default=None, help="only rewrite the tables from a --json dump")
    args = ap.parse_args(argv)
    if args.from_json:
        write_md(args.md, markdown(json.loads(args.from_json.read_text())))
        return
    torch.set_num_threads(1)
    import transformers

    transformers.logging.set_verbosity_error()
    warnings.simplefilter("ignore", FutureWarning)
    records = []
    for name in args.archs.split(","):
        rec = check_arch(name)
        records.append(rec)
        print(f"{name:18s} {rec.get('seconds', '-')}s "
              f"loop={_ok(rec.get('loop[recommended]'))} fork={_fork_cell(rec.get('fork[deepcopy+reorder_cache]'))} "
              f"{rec.get('checks_error', '')}{rec.get('build_error', '')}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1, default=str))
    body = markdown(records)
    if args.md:
        write_md(args.md, body)
    else:
        print(body)


if __name__ == "__main__":
    main()
