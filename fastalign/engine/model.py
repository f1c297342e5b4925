"""What the engine needs to know about a model, found once per call: where its output head and input
embeddings compute (also under accelerate's ``device_map``), the hook that perturbs the head's input
(the pre-logits), and how to call its forward (:class:`ModelInterface`, :func:`forward_kwargs`)."""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import typing
from dataclasses import dataclass
from typing import Callable

import torch

from fastalign.errors import InputError


def output_head(model: torch.nn.Module) -> torch.nn.Module:
    """The output projection (``lm_head``) of a causal LM; ``ValueError`` if it has none."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, torch.nn.Module):
        raise InputError(
            f"model: expected a causal LM with an output projection (model.get_output_embeddings() "
            f"returning a module, e.g. AutoModelForCausalLM), got {type(model).__name__} whose "
            f"get_output_embeddings() returns {type(head).__name__}"
        )
    return head


def module_device(module: torch.nn.Module) -> torch.device:
    """The device ``module`` computes on: accelerate's execution device when the module is dispatched
    (``device_map=``; its weights may then be on ``"meta"`` and loaded per forward), else the device
    of its first parameter (CPU for a module without parameters)."""
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device(device)
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def head_device(model: torch.nn.Module) -> torch.device:
    """Where the output head computes: the device of its input inside the head hook (AISP keeps its
    control and noise there)."""
    return module_device(output_head(model))


def input_device(model: torch.nn.Module) -> torch.device:
    """Where the input embeddings compute: the device for ``input_ids`` and attention masks."""
    emb = model.get_input_embeddings()
    return module_device(emb) if isinstance(emb, torch.nn.Module) else head_device(model)


def input_embedding(model: torch.nn.Module) -> tuple[torch.Tensor, float]:
    """``(E [V, d], scale)``: the input embedding matrix and the factor the embedding module
    multiplies looked-up rows by (Gemma's ``sqrt(d)``; 1.0 for most models), so that
    ``(probs @ E) * scale`` is the soft counterpart of ``embed(ids)``."""
    emb = model.get_input_embeddings()
    if emb is None or not hasattr(emb, "weight"):
        raise InputError(f"model: {type(model).__name__} has no input embedding matrix")
    if emb.weight.is_meta:
        raise InputError("model: the input embedding matrix is offloaded (its weight is on 'meta'); soft tokens "
                         "need it in device memory: load with a device_map that keeps the embeddings on a device")
    scale = getattr(emb, "embed_scale", None)
    if isinstance(scale, torch.Tensor):
        scale = float(scale.item())
    return emb.weight, float(scale) if scale is not None else 1.0


def _with_last_position(h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``h [N, L, d]`` with its last position replaced by ``z [N, d]``."""
    if h.shape[1] == 1:
        return z.unsqueeze(1)
    return torch.cat([h[:, :-1, :], z.unsqueeze(1)], dim=1)


def _transformed_head_input(h: torch.Tensor, z: torch.Tensor, keep_input: bool) -> torch.Tensor:
    """``h`` with its last position replaced by ``z``; with ``keep_input``, ``h`` itself stacked after it."""
    changed = _with_last_position(h, z)
    return torch.cat([changed, h], dim=0) if keep_input else changed


@contextlib.contextmanager
def perturb_head_input(model: torch.nn.Module, transform: Callable[[torch.Tensor], torch.Tensor] | None, *,
                       keep_input: bool = False):
    """Within the block, the output head sees ``transform(h)`` for the hidden state ``h`` of the last
    position of each forward (``[N, d]`` in, ``[N, d]`` out); the other positions pass unchanged.

    The transform sees exactly the head's input (the final normalised hidden state), so everything
    the model does after the head (soft-capping, scaling) still applies. ``transform=None`` is a no-op.
    The hidden state is moved to :func:`head_device` first (where accelerate would move it next for a
    model spread over devices), so the transform works on the head's device. ``keep_input=True``
    stacks the unchanged input after the transformed one (the head then returns ``[2N, ...]``: the
    perturbed logits, then the unperturbed ones, from one product with the head's weights).
    """
    if transform is None:
        yield
        return
    head = output_head(model)
    device = module_device(head)

    def hook(module, args):
        h = args[0].to(device)
        return (_transformed_head_input(h, transform(h[:, -1, :]), keep_input), *args[1:])

    handle = head.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------
# what the engine needs to know about a model
# ---------------------------------------------------------------------------------------------
#: Names under which a causal LM's forward takes its cache, newest first (transformers 5.x renames
#: ``past_key_values`` to ``cache``; the 4.x Mamba family took ``cache_params``).
CACHE_KWARGS = ("cache", "past_key_values", "cache_params")


@dataclass(frozen=True)
class ModelInterface:
    """How to call one model's forward for a decode step (found once per call by :func:`model_interface`).

    cache_kwarg: the argument that takes the cache (and the output field that returns it);
    position_ids, logits_to_keep: whether the forward takes them;
    mask_on_decode: whether decode steps pass the attention mask. Not for a purely recurrent cache
    (every layer a state-space/linear-attention layer: Mamba, Mamba2, FalconMamba), whose forward
    would broadcast a ``[N, L]`` mask over a one-token step and decode wrongly, with no error (their
    ``prepare_inputs_for_generation`` drops it too); hybrids keep it (their attention layers read it).
    """

    cache_kwarg: str
    position_ids: bool
    logits_to_keep: bool
    mask_on_decode: bool = True


def _forward_params(model) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return {}


def _returns_a_cache(model) -> bool:
    """Whether the output dataclass(es) of the forward's return annotation have a cache field (True
    when the annotation names none: then only a forward can tell, see :func:`prefill`)."""
    try:
        annotation = inspect.signature(model.forward).return_annotation
    except (TypeError, ValueError):
        return True
    if isinstance(annotation, str):  # postponed annotations: resolve against the model's module
        try:
            annotation = typing.get_type_hints(model.forward).get("return", annotation)
        except Exception:  # noqa: BLE001 - unresolvable: a forward will tell
            return True
    outs = [a for a in (typing.get_args(annotation) or (annotation,))
            if isinstance(a, type) and dataclasses.is_dataclass(a)]
    return not outs or any(f.name in CACHE_KWARGS for o in outs for f in dataclasses.fields(o))


def _purely_recurrent(model) -> bool:
    """Every layer of the model's default cache is a state-space/linear-attention layer (Mamba family)."""
    try:
        from transformers import DynamicCache, cache_utils

        config = model.config.get_text_config(decoder=True)
        layers = DynamicCache(config=config).layers
    except Exception:  # noqa: BLE001 - an older transformers or an unusual config: keep the mask
        return False
    linear = getattr(cache_utils, "LinearAttentionCacheLayerMixin", None)
    if linear is None or not layers:
        return False
    return all(isinstance(x, linear) and not isinstance(x, cache_utils.CacheLayerMixin) for x in layers)


def model_interface(model) -> ModelInterface:
    """Check that ``model`` is a causal LM that decodes incrementally and say how to call it.

    Raises ``ValueError`` naming the model class and the reason, before any forward, for: an
    encoder-decoder model (T5); a model without an output projection; one that cannot generate (masked
    LMs such as BERT); one whose forward takes no cache (RWKV keeps its state in ``state=``); one whose
    output carries no cache (RecurrentGemma keeps its state inside its modules, so it cannot be forked).
    """
    name = type(model).__name__
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        raise InputError(f"model: {name} is an encoder-decoder model; fastalign decodes causal LMs "
                         "(AutoModelForCausalLM, decoder-only)")
    output_head(model)
    can_generate = getattr(model, "can_generate", None)
    if callable(can_generate) and not can_generate():
        raise InputError(f"model: {name} cannot generate text (model.can_generate() is False); fastalign "
                         "decodes causal LMs (AutoModelForCausalLM), not masked LMs or encoders")
    params = _forward_params(model)
    cache_kwarg = next((k for k in CACHE_KWARGS if k in params), None)
    if cache_kwarg is None:
        raise InputError(f"model: {name}.forward takes no cache argument (none of {', '.join(CACHE_KWARGS)}), "
                         "so it cannot decode incrementally")
    if not _returns_a_cache(model):
        raise InputError(f"model: {name}.forward returns no cache (its state lives inside its modules), so "
                         "its prompt state cannot be forked to several rollouts")
    return ModelInterface(cache_kwarg=cache_kwarg, position_ids="position_ids" in params,
                          logits_to_keep="logits_to_keep" in params, mask_on_decode=not _purely_recurrent(model))


def _returned_cache(out, api: ModelInterface):
    """The cache a forward returned, under whichever field name its output class has (never through a
    deprecated alias property, which would warn)."""
    keys = out.keys() if hasattr(out, "keys") else ()
    for name in (api.cache_kwarg, *CACHE_KWARGS):
        if name in keys and out[name] is not None:
            return out[name]
    return None


def forward_kwargs(api: ModelInterface, *, input_ids: torch.Tensor | None = None,
                   inputs_embeds: torch.Tensor | None = None, attention_mask=None,
                   position_ids: torch.Tensor | None = None, cache=None, use_cache: bool | None = None,
                   logits_to_keep: int | None = None) -> dict:
    """The keyword arguments of one forward of the model ``api`` describes (every forward the engine,
    the metrics and SEA run is built here, so what a model is given is decided in one place).

    Exactly one of ``input_ids`` / ``inputs_embeds`` (``[N, S]`` / ``[N, S, d]``). The others are
    passed when given (not None), except that ``position_ids`` and ``logits_to_keep`` are dropped for a
    forward that does not take them (``api.position_ids`` / ``api.logits_to_keep``) and ``cache`` goes
    under the forward's own cache argument (``api.cache_kwarg``). ``use_cache=None`` leaves the model's
    default. Whether a decode step passes its mask (``api.mask_on_decode``) stays the caller's choice.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("forward_kwargs: give exactly one of input_ids and inputs_embeds")
    kwargs = {"input_ids": input_ids} if input_ids is not None else {"inputs_embeds": inputs_embeds}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if use_cache is not None:
        kwargs["use_cache"] = use_cache
    if cache is not None:
        kwargs[api.cache_kwarg] = cache
    if position_ids is not None and api.position_ids:
        kwargs["position_ids"] = position_ids
    if logits_to_keep is not None and api.logits_to_keep:
        kwargs["logits_to_keep"] = logits_to_keep
    return kwargs


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Run the block with ``model`` in eval mode (no dropout) and restore each submodule's own
    training flag afterwards, also when the block raises."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
