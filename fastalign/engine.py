"""The decode engine shared by AISP, SEA and Best-of-N: the model's output head and the hook that
perturbs its input, and the batched decode loop with the KV cache.

* :func:`output_head` finds a causal LM's output projection (``model.get_output_embeddings()``);
  :func:`head_device` / :func:`input_device` say where the head and the input embeddings compute, also
  for a model spread over devices by accelerate (``from_pretrained(device_map=...)``), where a module's
  weights may sit on ``"meta"`` (offloaded) and be loaded for each forward.
* :func:`perturb_head_input` edits the head's *input* (the final normalised hidden state, the
  "pre-logits") with a forward-pre-hook, so logits still come from the model's own forward and keep
  its post-processing (e.g. Gemma-2's final logit soft-capping). The KV cache is never touched.
* :func:`decode` is the batched decode loop with the KV cache: greedy or any token chooser, stops each
  rollout at EOS, records lengths (and optionally the logits of every step).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import typing
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from fastalign.errors import InputError

__all__ = [
    "CompiledStep",
    "ModelInterface",
    "PromptCache",
    "Rollouts",
    "decode",
    "eval_mode",
    "fork_cache",
    "forward_kwargs",
    "head_device",
    "input_device",
    "input_embedding",
    "model_interface",
    "module_device",
    "output_head",
    "perturb_head_input",
    "prefill",
]


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
    forward itself (None when P == 1): the pre-logit scale AISP's relative noise and trust region use.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    cache: object | None
    head_norm: torch.Tensor | None = None


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Position ids ``[N, S]`` of left-padded rows from their attention mask (padding does not shift
    positions): what every forward of the engine, SEA and the metrics passes."""
    return (mask.cumsum(-1) - 1).clamp_min(0)


@torch.no_grad()
def prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
            api: ModelInterface | None = None) -> PromptCache:
    """Run the model once over ``input_ids[:, :-1]`` (``[B, P]`` left-padded prompts) and keep its cache."""
    api = api or model_interface(model)
    mask = attention_mask.to(device=input_ids.device, dtype=torch.long)
    if input_ids.shape[1] < 2:
        return PromptCache(input_ids, mask, None)
    kwargs = forward_kwargs(api, input_ids=input_ids[:, :-1], attention_mask=mask[:, :-1], use_cache=True,
                            position_ids=position_ids(mask[:, :-1]), logits_to_keep=1)
    with _recording_head_norm(model) as norms:
        out = model(**kwargs)
    cache = _returned_cache(out, api)
    if cache is None:
        raise InputError(f"model: {type(model).__name__} returned no cache from a forward with use_cache=True, "
                         "so it cannot decode incrementally")
    return PromptCache(input_ids, mask, cache, norms[-1] if norms else None)


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
        kwargs = forward_kwargs(model_interface(model), input_ids=ids[short][:, -1:], logits_to_keep=1)
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


# ---------------------------------------------------------------------------------------------
# the decode loop
# ---------------------------------------------------------------------------------------------
@dataclass
class Rollouts:
    """Output of :func:`decode` for N sequences.

    tokens: ``[N, T]`` generated ids (pad after EOS); lengths: ``[N]`` generated tokens including the
    EOS token (T for a rollout that never ended); finished: ``[N]`` bool, ended with EOS;
    logits: ``[N, T, V]`` float32 logits of every step when asked for, else None;
    base_logprob: ``[N]`` float32 sum over each rollout's generated tokens (EOS included) of the
    *unperturbed* model's ``log p(y_t | prompt, y_<t)``, when asked for (``base_logprobs=True``), else None.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor
    logits: torch.Tensor | None = None
    base_logprob: torch.Tensor | None = None

    def mean_base_logprob(self) -> torch.Tensor:
        """``[N]`` float32 mean over each rollout's generated tokens of ``log p_base`` (needs
        ``base_logprobs=True``)."""
        if self.base_logprob is None:
            raise ValueError("rollouts: decoded without base_logprobs=True")
        return self.base_logprob / self.lengths.clamp_min(1).to(self.base_logprob)


def _scatter_rows(x: torch.Tensor, rows: torch.Tensor | None, N: int) -> torch.Tensor:
    """``x [len(rows), ...]`` placed at ``rows`` of an ``[N, ...]`` zero tensor (``x`` itself when rows is None)."""
    if rows is None:
        return x
    full = x.new_zeros((N, *x.shape[1:]))
    full[rows] = x
    return full


class _Running:
    """The running batch of :func:`decode`: the cache, the next input token and position of each row, the
    attention mask, and which rollout each row is once ended rollouts were compacted away."""

    def __init__(self, model, api: ModelInterface, prompt_cache: PromptCache, repeats: int, T: int, compiled):
        B, P = prompt_cache.input_ids.shape
        device = prompt_cache.input_ids.device
        self.model, self.api, self.P, self.compiled = model, api, P, compiled
        self.mask = torch.ones((B * repeats, P + T), dtype=torch.long, device=device)
        self.mask[:, :P] = prompt_cache.attention_mask.repeat_interleave(repeats, dim=0)
        self.position = position_ids(self.mask[:, :P])[:, -1:].contiguous()  # one stride every step (no retrace)
        self.cur = prompt_cache.input_ids[:, -1:].repeat_interleave(repeats, dim=0)
        self.cache = None if compiled is not None else fork_cache(prompt_cache.cache, B, repeats)
        self.rows: torch.Tensor | None = None  # None: batch row j is rollout j

    def logits(self, step: int) -> torch.Tensor:
        """Logits ``[rows, V]`` (float32) of the forward of the current tokens."""
        mask = self.mask[:, :self.P + step]
        if self.compiled is not None:
            return self.compiled(self.cur, self.position, mask, step)
        api = self.api
        # the first forward of an unprefilled batch (no cache yet) takes the mask whatever the model
        use_mask = api.mask_on_decode or self.cache is None
        out = self.model(**forward_kwargs(api, input_ids=self.cur, attention_mask=mask if use_mask else None,
                                          cache=self.cache, use_cache=True, position_ids=self.position,
                                          logits_to_keep=1))
        self.cache = _returned_cache(out, api)
        # the head may sit on another device than the inputs (device_map): logits come back to the inputs
        return out.logits[:, -1, :].to(device=self.mask.device, dtype=torch.float32)

    def advance(self, nxt: torch.Tensor) -> None:
        """Feed the chosen tokens ``[N]`` (all rollouts) to the running rows."""
        self.cur = (nxt if self.rows is None else nxt[self.rows]).unsqueeze(-1)
        self.position = self.position + 1

    def compact(self, active: torch.Tensor) -> None:
        """Drop the rows of ended rollouts (and their cache rows)."""
        keep = _kept_batch_rows(active, self.rows, active.shape[0])
        self.cache.reorder_cache(keep)
        self.mask, self.position = self.mask[keep], self.position[keep]
        self.rows = active.nonzero().squeeze(1)


@torch.no_grad()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
           eos_ids: Sequence[int], pad_id: int,
           choose: Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor] | None = None,
           transform: Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor] | None = None,
           return_logits: bool = False, repeats: int = 1, prompt_cache: PromptCache | None = None,
           eos_check_every: int | None = None, compact_below: float | None = None,
           compiled: "CompiledStep | None" = None, base_logprobs: bool = False) -> Rollouts:
    """Decode ``N = B * repeats`` rollouts of B left-padded prompts together, with the model's cache.

    Args:
        input_ids, attention_mask: ``[B, P]`` left-padded prompts.
        max_new_tokens: at most this many generated tokens per rollout.
        eos_ids: ids that end a rollout (it keeps its EOS token; later positions are padding).
        pad_id: id fed to finished rollouts (their outputs are ignored).
        choose: ``choose(logits [N, V] float32, step, active [N] bool) -> [N]`` next ids
            (default: greedy argmax).
        transform: ``transform(h [N, d], step, active [N] bool) -> [N, d]`` applied to the output head's
            input at each decode step (see :func:`perturb_head_input`).
        return_logits: also return the logits of every step (``[N, T, V]`` float32).
        repeats: rollouts per prompt; rollout ``b * repeats + i`` continues prompt ``b``.
        prompt_cache: :func:`prefill` of these prompts, to reuse across calls (computed here if None);
            it is forked, never modified.
        eos_check_every: steps between checks whether rollouts have ended (a host sync on a GPU;
            default 1 on CPU, 8 elsewhere). Ended rollouts cost padding steps until the next check.
        compact_below: at a check, drop the ended rollouts from the running batch (their cache rows too)
            once the active ones are at most this fraction of it; None keeps every row to the end.
            ``choose`` and ``transform`` always see all N rows (ended ones as zeros).
        compiled: a :class:`CompiledStep` built for these prompts, ``repeats`` and ``max_new_tokens``:
            its static cache and compiled forward run the steps (its own transform applies; ``transform``
            and ``compact_below`` must be None; build it with the same ``base_logprobs``).
        base_logprobs: also record each rollout's ``sum_t log p_base(y_t | prompt, y_<t)`` under the
            *unperturbed* model (``Rollouts.base_logprob``). With a head ``transform`` the head runs once on
            the perturbed and the unperturbed hidden states stacked (``[2N, d]``: one read of the head's
            weights), so the base log-probabilities cost a wider head product and one log-softmax per
            step, not another forward; without a transform they come from the step's own logits.

    Position ids come from the attention mask (left padding does not shift positions); the head
    computes the last position only (``logits_to_keep=1``) where the model supports it.
    """
    api = model_interface(model)
    if prompt_cache is None:
        prompt_cache = prefill(model, input_ids, attention_mask, api=api)
    N, T = prompt_cache.input_ids.shape[0] * repeats, max_new_tokens
    if compiled is not None:
        _check_compiled(compiled, N, T, transform, compact_below, base_logprobs)
        compiled.start()
    device = input_ids.device
    run = _Running(model, api, prompt_cache, repeats, T, compiled)
    rec = _Record(N, T, pad_id, eos_ids, device, compiled, return_logits, base_logprobs)
    # with a head transform and base_logprobs the head's output stacks the perturbed and unperturbed rows
    stacked = bool(base_logprobs) and (transform is not None or (compiled is not None and compiled.transform is not None))
    hook = _StepTransform(transform, run, rec.active) if transform is not None else None
    check_every = eos_check_every or (1 if device.type == "cpu" else 8)
    with perturb_head_input(model, hook, keep_input=stacked), \
            (compiled.hooked() if compiled is not None else contextlib.nullcontext()):
        for step in range(T):
            if hook is not None:
                hook.step = step
            nxt = rec.step(step, run, choose, stacked)
            if (step + 1) % check_every == 0 and not _after_check(rec, run, step, compact_below):
                break
            run.advance(nxt)
    return rec.rollouts()


class _StepTransform:
    """``decode``'s ``transform`` as the head hook calls it: on all N rows (the running ones scattered
    back in place, ended ones zeros) with the current decode step (set by the loop) and ``active``."""

    def __init__(self, transform, run: "_Running", active: torch.Tensor):
        self.transform, self.run, self.active, self.step = transform, run, active, 0

    def __call__(self, h: torch.Tensor) -> torch.Tensor:  # h on the head's device, maybe not the inputs'
        rows = None if self.run.rows is None else self.run.rows.to(h.device)
        z = self.transform(_scatter_rows(h, rows, self.active.shape[0]), self.step, self.active)
        return z if rows is None else z[rows]


class _Record:
    """What :func:`decode` keeps of every rollout: its tokens, length, whether it is still active, the
    logits of every step and the sum of its base log-probabilities (when asked for)."""

    def __init__(self, N: int, T: int, pad_id: int, eos_ids, device, compiled, return_logits: bool,
                 base_logprobs: bool):
        self.N = N
        self.eos = torch.tensor(sorted(set(int(e) for e in eos_ids)) or [-1], dtype=torch.long, device=device)
        # in place from here on: a compiled step's transform holds this tensor
        self.active = compiled.active.fill_(True) if compiled is not None else torch.ones(N, dtype=torch.bool,
                                                                                          device=device)
        self.lengths = torch.full((N,), T, dtype=torch.long, device=device)
        self.tokens = torch.full((N, T), pad_id, dtype=torch.long, device=device)
        self.pad = torch.full((N,), pad_id, dtype=torch.long, device=device)
        self.all_logits = [] if return_logits else None
        self.logprob = torch.zeros(N, dtype=torch.float32, device=device) if base_logprobs else None

    def step(self, step: int, run: "_Running", choose, stacked: bool) -> torch.Tensor:
        """Run the forward of decode step ``step``, choose and record the next tokens ``[N]``."""
        out = run.logits(step)
        base = None
        if stacked:  # rows [0, R): the perturbed head input, [R, 2R): the unperturbed one
            out, base = out.chunk(2, dim=0)
        logits = _scatter_rows(out, run.rows, self.N)
        if self.all_logits is not None:
            self.all_logits.append(logits)
        active = self.active
        nxt = logits.argmax(dim=-1) if choose is None else choose(logits, step, active)
        nxt = torch.where(active, nxt, self.pad)
        if self.logprob is not None:
            base = logits if base is None else _scatter_rows(base, run.rows, self.N)
            step_lp = base.gather(1, nxt.unsqueeze(1)).squeeze(1) - torch.logsumexp(base, dim=-1)
            self.logprob += torch.where(active, step_lp, torch.zeros_like(step_lp))
        self.tokens[:, step] = nxt
        ended = active & torch.isin(nxt, self.eos)
        self.lengths = torch.where(ended, step + 1, self.lengths)
        active &= ~ended  # in place (see __init__)
        return nxt

    def rollouts(self) -> Rollouts:
        tokens = self.tokens
        logits = torch.stack(self.all_logits, dim=1)[:, : tokens.shape[1]] if self.all_logits is not None else None
        return Rollouts(tokens=tokens, lengths=self.lengths.clamp_max(tokens.shape[1]), finished=~self.active,
                        logits=logits, base_logprob=self.logprob)


def _after_check(rec: _Record, run: "_Running", step: int, compact_below: float | None) -> bool:
    """The EOS check after ``step`` (the loop's one host sync): False when every rollout has ended (the
    tokens are cut to the steps run); else compacts the running batch when ``compact_below`` says so."""
    n_active = int(rec.active.sum())
    if n_active == 0:
        rec.tokens = rec.tokens[:, : step + 1]
        return False
    running = rec.N if run.rows is None else len(run.rows)
    if compact_below is not None and n_active <= compact_below * running:
        run.compact(rec.active)
    return True


def _check_compiled(compiled: "CompiledStep", N: int, T: int, transform, compact_below, base_logprobs) -> None:
    if (compiled.rows, compiled.max_new_tokens) != (N, T):
        raise ValueError(f"compiled: built for {compiled.rows} rollouts of {compiled.max_new_tokens} tokens, "
                         f"asked for {N} of {T}")
    if transform is not None or compact_below is not None:
        raise ValueError("compiled: the compiled step carries its own transform and keeps every row "
                         "(transform and compact_below must be None)")
    if compiled.base_logprobs != bool(base_logprobs):
        raise ValueError(f"compiled: built with base_logprobs={compiled.base_logprobs}, decode called with "
                         f"base_logprobs={bool(base_logprobs)}")


def _kept_batch_rows(active: torch.Tensor, rows: torch.Tensor | None, N: int) -> torch.Tensor:
    """Indices into the running batch (whose row j is rollout ``rows[j]``, or j) of the active rollouts."""
    if rows is None:
        return active.nonzero().squeeze(1)
    where = torch.full((N,), -1, dtype=torch.long, device=active.device)
    where[rows] = torch.arange(len(rows), device=active.device)
    return where[active.nonzero().squeeze(1)]


# ---------------------------------------------------------------------------------------------
# the compiled decode step: a static cache, one torch.compile, CUDA-graph replay on a GPU
# ---------------------------------------------------------------------------------------------
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


class CompiledStep:
    """The decode step of ``N = B * repeats`` rollouts with a static cache, compiled once with
    ``torch.compile(fullgraph=True)`` and reused by every :func:`decode` call given it (AISP's
    iterations, Best-of-N's rounds): on CUDA ``mode="reduce-overhead"`` captures it as a CUDA graph.

    The prompts (all but their last token) are prefilled once into a static cache of B rows, which is
    forked into the N-row cache the step runs on, and copied into that same cache again (in place)
    before every later decode. The head transform is called with ``step`` as an int64 ``[1]`` device
    tensor updated in place and with the same ``active`` tensor every step, so the traced graph does
    not depend on the step; a transform that keeps tensors of its own (AISP's control, ``udot``) must
    update them in place too. Ops inside it must be traceable (fastalign's are ``torch.library``
    operators).

    Args:
        model: the causal LM (its config must build a ``transformers.StaticCache``).
        prompt_cache: :func:`prefill` of the B prompts (its ids and mask are used; the static prefill
            is computed here).
        repeats, max_new_tokens: the shape every decode call with this step must have.
        transform: the head transform (as for :func:`decode`), fixed for the life of the step.
        base_logprobs: the step returns the unperturbed logits too (``[2N, V]``) for :func:`decode`'s
            ``base_logprobs=True`` (only meaningful with a ``transform``).
        mode: ``torch.compile`` mode (default ``"reduce-overhead"`` on CUDA, Inductor's default on CPU).
    """

    def __init__(self, model, prompt_cache: PromptCache, *, repeats: int, max_new_tokens: int, transform=None,
                 mode: str | None = None, base_logprobs: bool = False):
        from transformers import StaticCache

        self.model, self.api = model, model_interface(model)
        self.repeats, self.max_new_tokens, self.transform = repeats, max_new_tokens, transform
        self.base_logprobs = bool(base_logprobs)
        B, P = prompt_cache.input_ids.shape
        self.rows = B * repeats
        self.index = torch.arange(B).repeat_interleave(repeats)
        device = prompt_cache.input_ids.device
        config = model.config.get_text_config(decoder=True)
        self.prompt_static = StaticCache(config=config, max_cache_len=P + max_new_tokens)
        if P < 2:
            raise InputError("compile: the compiled step needs prompts of at least 2 tokens (a static cache is "
                             "filled by the prefill of all but the last one)")
        self._prefill(prompt_cache)
        self.cache = fork_cache(self.prompt_static, B, repeats)
        self.fresh = True
        self.step = torch.zeros(1, dtype=torch.int64, device=device)
        self.active = torch.ones(self.rows, dtype=torch.bool, device=device)
        if mode is None and device.type == "cuda":
            mode = "reduce-overhead"
        self.forward = torch.compile(self._forward, fullgraph=True, dynamic=False, mode=mode)
        # one hook for the life of the step (a new hook per decode would retrace), active only inside
        # decode(): other forwards of the model meanwhile (a greedy baseline, a reward) are untouched
        self._enabled = False
        self._handle = output_head(model).register_forward_pre_hook(self._hook) if transform is not None else None

    def _hook(self, module, args):
        if not self._enabled:
            return None
        h = args[0]
        z = self.transform(h[:, -1, :], self.step, self.active)
        return (_transformed_head_input(h, z, self.base_logprobs), *args[1:])

    @contextlib.contextmanager
    def hooked(self):
        """The block runs with this step's head transform applied."""
        self._enabled = True
        try:
            yield
        finally:
            self._enabled = False

    def close(self) -> None:
        """Remove the head hook from the model (the step cannot be used afterwards)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> "CompiledStep":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @torch.no_grad()
    def _prefill(self, prompt_cache: PromptCache) -> None:
        ids, mask = prompt_cache.input_ids[:, :-1], prompt_cache.attention_mask[:, :-1]
        position = position_ids(mask)
        self.model(**forward_kwargs(self.api, input_ids=ids, use_cache=True,
                                    attention_mask=self._mask(mask, position, self.prompt_static),
                                    cache=self.prompt_static, position_ids=position, logits_to_keep=1))

    def _mask(self, mask2d: torch.Tensor, position: torch.Tensor, cache):
        """The attention mask a static cache needs (what ``generate`` builds for compileable caches: a 4D
        mask over the whole cache length, made outside the compiled region)."""
        if all(getattr(cache, "is_linear", [False])):
            return mask2d if mask2d.shape[1] > 1 else None
        from transformers.masking_utils import create_masks_for_generate

        make = getattr(self.model, "create_masks_for_generate", create_masks_for_generate)
        embeds = torch.empty((mask2d.shape[0], position.shape[1], 0), dtype=self.model.dtype, device=mask2d.device)
        return make(config=self.model.config, inputs_embeds=embeds, attention_mask=mask2d, cache=cache,
                    position_ids=position)

    def _forward(self, input_ids, position_ids, attention_mask):
        kwargs = forward_kwargs(self.api, input_ids=input_ids, use_cache=True, cache=self.cache,
                                attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=1)
        return self.model(**kwargs).logits[:, -1, :].float()

    def start(self) -> None:
        """Put the prompt cache back into the running cache (in place) before a decode."""
        if not self.fresh:
            refork_in_place(self.cache, self.prompt_static, self.index)
        self.fresh = False

    def __call__(self, input_ids, position_ids, mask2d, step: int) -> torch.Tensor:
        """Logits ``[N, V]`` (float32, a fresh tensor) of one decode step (``[2N, V]`` with
        ``base_logprobs`` and a transform: the perturbed rows, then the unperturbed ones)."""
        self.step.fill_(step)
        mask = self._mask(mask2d, position_ids, self.cache) if self.api.mask_on_decode or mask2d is None else None
        return self.forward(input_ids, position_ids, mask).clone()
