"""The compiled decode step: a static cache, one ``torch.compile(fullgraph=True)``, CUDA-graph replay
on a GPU; reused by every :func:`~fastalign.engine.decoding.decode` call given it."""
from __future__ import annotations

import contextlib

import torch

from fastalign.errors import InputError
from fastalign.engine.cache import PromptCache, fork_cache, position_ids, refork_in_place
from fastalign.engine.model import _transformed_head_input, forward_kwargs, model_interface, output_head


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

        self.model, self.api = model, prompt_cache.api or model_interface(model)
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
