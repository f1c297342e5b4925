"""The decode loop: N rollouts from a prompt cache, greedy or any token chooser, a head transform per
step, EOS per rollout, optional logits and base log-probabilities, and dropping finished rows."""
from __future__ import annotations

import contextlib
import typing
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from fastalign.engine.cache import PromptCache, fork_cache, position_ids, prefill
from fastalign.engine.model import ModelInterface, _returned_cache, forward_kwargs, model_interface, perturb_head_input

if typing.TYPE_CHECKING:
    from fastalign.engine.compiled import CompiledStep


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
    api = getattr(prompt_cache, "api", None) or model_interface(model)  # resolved once, with the cache
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
