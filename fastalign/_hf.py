"""Hugging Face plumbing shared by :mod:`fastalign.aisp`, :mod:`fastalign.sea` and :mod:`fastalign.bon`.

* :func:`output_head` finds a causal LM's output projection (``model.get_output_embeddings()``).
* :func:`perturb_head_input` edits the head's *input* (the final normalised hidden state, the
  "pre-logits") with a forward-pre-hook, so logits still come from the model's own forward and keep
  its post-processing (e.g. Gemma-2's final logit soft-capping). The KV cache is never touched.
* :func:`encode_prompts` tokenises a batch with left padding (optionally through the chat template).
* :func:`decode` is the batched decode loop with the KV cache: greedy or any token chooser, stops each
  rollout at EOS, records lengths (and optionally the logits of every step).
* :func:`stream_seeds` derives per-prompt random-stream seeds that do not depend on batch composition.
* :func:`sample_tokens` draws tokens (temperature / top-p) from the fastalign Philox stream, so that
  sampling, too, is independent of batch composition and of thread count.
* :class:`AlignResult` is the result type of all three methods.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import math
import numbers
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from fastalign import rng

__all__ = [
    "BestSoFar",
    "greedy_baseline",
    "AlignResult",
    "Rollouts",
    "output_head",
    "input_embedding",
    "perturb_head_input",
    "encode_prompts",
    "eos_token_ids",
    "pad_token_id",
    "decode",
    "stream_seeds",
    "sample_tokens",
    "check_prompts",
    "call_reward",
    "response_texts",
    "Progress",
]

_SEED_LIMIT = 2**63


# ---------------------------------------------------------------------------------------------
# result type
# ---------------------------------------------------------------------------------------------
@dataclass
class AlignResult:
    """What :func:`~fastalign.aisp.aisp_generate`, :func:`~fastalign.sea.sea_generate` and
    :func:`~fastalign.bon.bon_generate` return for one prompt.

    Attributes:
        prompt: the prompt as given (before any chat template).
        response: the best response found (decoded text, special tokens removed).
        reward: its reward (as returned by the reward callable).
        method: ``"aisp"``, ``"sea"`` or ``"bon"``.
        trace_mean, trace_max: reward of the responses evaluated in each iteration (AISP: an
            iteration of n rollouts; Best-of-N: a round of rollouts decoded together; SEA: a
            decoded-argmax evaluation), mean and max over the prompt's rollouts/chains.
        reward_calls: number of responses of this prompt scored by the reward (the budget that
            AISP n x K and Best-of-(n*K) are compared at).
        seconds: wall-clock time of the whole call that produced this result (shared by every
            prompt of a batch).
        response_ids: token ids of ``response`` (EOS excluded).
        base_response, base_reward: the unaligned reference response (greedy for AISP/Best-of-N when
            asked for with ``with_base=True``; the sampled initial response for SEA) and its reward.
        extra: method-specific traces (SEA: ``energy``, ``soft_reward``, ``fluency``, ``grad_norm``).
    """

    prompt: str
    response: str
    reward: float
    method: str
    trace_mean: list[float] = field(default_factory=list)
    trace_max: list[float] = field(default_factory=list)
    reward_calls: int = 0
    seconds: float = 0.0
    response_ids: list[int] = field(default_factory=list)
    base_response: str | None = None
    base_reward: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def trace(self) -> list[tuple[float, float]]:
        """``[(mean, max), ...]`` per iteration."""
        return list(zip(self.trace_mean, self.trace_max))

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of every field."""
        return {
            "prompt": self.prompt,
            "response": self.response,
            "reward": self.reward,
            "method": self.method,
            "trace_mean": list(self.trace_mean),
            "trace_max": list(self.trace_max),
            "reward_calls": self.reward_calls,
            "seconds": self.seconds,
            "response_ids": list(self.response_ids),
            "base_response": self.base_response,
            "base_reward": self.base_reward,
            "extra": dict(self.extra),
        }


class BestSoFar:
    """Best response per prompt over rounds of scored candidates, with the per-round reward trace.

    Shared by AISP (a round is an iteration of n rollouts) and Best-of-N (a round of samples decoded
    together). Ties keep the earlier response.
    """

    def __init__(self, B: int):
        self.reward = [-math.inf] * B
        self.text: list[str | None] = [None] * B
        self.ids: list[list[int]] = [[] for _ in range(B)]
        self.trace_mean: list[list[float]] = [[] for _ in range(B)]
        self.trace_max: list[list[float]] = [[] for _ in range(B)]

    def update(self, rewards: torch.Tensor, texts: Sequence[str], id_lists: Sequence[list[int]]) -> None:
        """Take one round: ``rewards [B, m]``; ``texts``/``id_lists`` of the ``B*m`` candidates, prompt-major."""
        m = rewards.shape[1]
        for b, row in enumerate(rewards):
            i = int(row.argmax())
            if self.text[b] is None or float(row[i]) > self.reward[b]:
                self.reward[b] = float(row[i])
                self.text[b] = texts[b * m + i]
                self.ids[b] = id_lists[b * m + i]
            self.trace_mean[b].append(float(row.mean()))
            self.trace_max[b].append(float(row.max()))

    def result(self, b: int, **fields) -> AlignResult:
        """The :class:`AlignResult` of prompt ``b`` (``fields``: prompt, method, reward_calls, ...)."""
        return AlignResult(response=self.text[b], reward=self.reward[b], trace_mean=self.trace_mean[b],
                           trace_max=self.trace_max[b], response_ids=self.ids[b], **fields)


# ---------------------------------------------------------------------------------------------
# model surgery
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# tokenisation
# ---------------------------------------------------------------------------------------------
def check_prompts(prompts) -> list[str]:
    """``prompts`` as a non-empty list of strings (a single string is one prompt)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise ValueError(f"prompts: expected a string or a non-empty list of strings, got {prompts!r}")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompts[{i}]: expected a string, got {type(p).__name__}")
    return list(prompts)


def _uses_chat_template(tokenizer, chat_template: bool | None) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat_template is None:
        return has
    if chat_template and not has:
        raise ValueError("chat_template: True needs a tokenizer with a chat template, this one has none")
    return bool(chat_template)


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad id, else its EOS id, else 0 (only used under a zero attention mask)."""
    for tid in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(tid, int):
            return tid
    return 0


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every token id that ends a response: the tokenizer's EOS and the generation config's EOS ids."""
    ids: list[int] = []
    cfg = getattr(model, "generation_config", None)
    for tid in (getattr(tokenizer, "eos_token_id", None), getattr(cfg, "eos_token_id", None)):
        if isinstance(tid, int):
            ids.append(tid)
        elif isinstance(tid, (list, tuple)):
            ids.extend(int(t) for t in tid)
    return sorted(set(ids))


def encode_prompts(tokenizer, prompts: list[str], *, chat_template: bool | None = None,
                   device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``(input_ids [B, P], attention_mask [B, P])`` of the prompts.

    With ``chat_template`` (default: whenever the tokenizer has one, as instruct models expect) each
    prompt becomes one user turn followed by the generation prompt. Each prompt is tokenised on its
    own, so its ids do not depend on the batch it is in.
    """
    use_chat = _uses_chat_template(tokenizer, chat_template)
    rows: list[list[int]] = []
    for p in prompts:
        if use_chat:
            text = tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(p)["input_ids"]
        if len(ids) == 0:
            raise ValueError(f"prompts: the prompt {p!r} tokenises to no tokens")
        rows.append(list(ids))
    P = max(len(r) for r in rows)
    pad = pad_token_id(tokenizer)
    input_ids = torch.full((len(rows), P), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), P), dtype=torch.long)
    for b, r in enumerate(rows):
        input_ids[b, P - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[b, P - len(r):] = 1
    return input_ids.to(device), mask.to(device)


def response_texts(tokenizer, tokens: torch.Tensor, lengths: torch.Tensor, eos_ids: Sequence[int]) -> tuple[list[str], list[list[int]]]:
    """Decoded responses (EOS and everything after it dropped, special tokens skipped) and their ids."""
    eos = set(int(e) for e in eos_ids)
    texts, id_lists = [], []
    for row, n in zip(tokens.tolist(), lengths.tolist()):
        ids = row[:n]
        if ids and ids[-1] in eos:
            ids = ids[:-1]
        id_lists.append(ids)
        texts.append(tokenizer.decode(ids, skip_special_tokens=True))
    return texts, id_lists


# ---------------------------------------------------------------------------------------------
# seeds and sampling
# ---------------------------------------------------------------------------------------------
def check_backend(backend, device: torch.device) -> None:
    """Resolve the fused-op backend for ``device`` up front, so that an unknown or unavailable backend
    is reported before the model runs (ValueError naming ``backend``, or BackendUnavailableError)."""
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend: expected a backend name (str) or None, got {type(backend).__name__}")
    from fastalign import backends

    backends.resolve(backend, device.type)


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
            raise ValueError(f"seed: expected an int or {B} ints (one per prompt), got {len(seeds)}")
    else:
        if isinstance(seed, torch.Tensor):
            seed = seed.item()
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed: expected an int or a list of ints, got {type(seed).__name__}")
        seeds = [int(seed)] * B
    for s in seeds:
        if s < 0 or s >= 2**63:
            raise ValueError(f"seed: expected seeds in [0, 2**63), got {s}")
    out = []
    for s, p in zip(seeds, prompts):
        digest = hashlib.blake2b(f"{s}\x1f{salt}\x1f{p}".encode("utf-8"), digest_size=8).digest()
        out.append(int.from_bytes(digest, "little") % _SEED_LIMIT)
    return out


def sample_tokens(logits: torch.Tensor, seeds: torch.Tensor, offsets: torch.Tensor, *, temperature: float = 1.0,
                  top_p: float = 1.0) -> torch.Tensor:
    """One token per row of ``logits [N, V]`` by inverse-CDF sampling with the uniform
    ``rng.uniform(seeds[r], offsets[r])`` of the fastalign stream (so a row's draw depends only on its
    own seed, offset and logits). ``temperature == 0`` is greedy. With ``top_p < 1`` only the smallest
    set of most likely tokens whose probability reaches ``top_p`` is kept (nucleus sampling).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    order = None
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        before = probs.cumsum(dim=-1) - probs
        probs = torch.where(before < top_p, probs, torch.zeros_like(probs))
        probs = probs / probs.sum(dim=-1, keepdim=True)
    u = rng.uniform(seeds.to(torch.int64).cpu(), offsets.to(torch.int64).cpu()).to(probs.device)
    cdf = probs.double().cumsum(dim=-1)
    cdf = cdf / cdf[:, -1:]
    idx = torch.searchsorted(cdf, u.double().unsqueeze(-1), right=True).squeeze(-1)
    idx = idx.clamp(max=probs.shape[-1] - 1)
    # never pick a zero-probability token (possible only at the right edge through rounding)
    zero = probs.gather(-1, idx.unsqueeze(-1)).squeeze(-1) <= 0
    if bool(zero.any()):
        idx = torch.where(zero, probs.argmax(dim=-1), idx)
    if order is not None:
        idx = order.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
    return idx


# ---------------------------------------------------------------------------------------------
# the decode loop
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# rewards
# ---------------------------------------------------------------------------------------------
def call_reward(reward, prompts: list[str], responses: list[str]) -> torch.Tensor:
    """``reward(prompts, responses)`` as a float64 CPU tensor ``[N]``, validated.

    Raises ``TypeError`` for a reward that is not callable or returns something that is not a number
    sequence, ``ValueError`` for a wrong length, NaN or +inf (``-inf`` is allowed: "reject").
    """
    if not callable(reward):
        raise TypeError(f"reward: expected a callable f(prompts, responses) -> tensor, got {type(reward).__name__}")
    N = len(responses)
    r = reward(prompts, responses)
    try:
        r = torch.as_tensor(r.detach() if isinstance(r, torch.Tensor) else r, dtype=torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"reward: expected a sequence of {N} numbers, got {type(r).__name__} ({exc})") from exc
    if r.dim() == 2 and r.shape[1] == 1:
        r = r[:, 0]
    if r.dim() != 1 or r.shape[0] != N:
        raise ValueError(f"reward: expected {N} rewards (one per response) shaped [{N}], got shape {tuple(r.shape)}")
    if bool(torch.isnan(r).any()):
        bad = torch.isnan(r).nonzero().flatten().tolist()[:5]
        raise ValueError(f"reward: returned NaN for response(s) {bad}: {[responses[i] for i in bad]!r}")
    if bool(torch.isposinf(r).any()):
        raise ValueError("reward: returned +inf; expected finite rewards (or -inf to reject a response)")
    return r


class Progress:
    """One line per iteration on stderr when enabled."""

    def __init__(self, enabled: bool, method: str):
        self.enabled = bool(enabled)
        self.method = method

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(f"fastalign {self.method}: {msg}", file=sys.stderr, flush=True)


def fmt(x: float) -> str:
    return "-inf" if x == -math.inf else f"{x:.4f}"


def greedy_baseline(model, tokenizer, reward, prompts: list[str], input_ids: torch.Tensor,
                    attention_mask: torch.Tensor, *, max_new_tokens: int, eos_ids: Sequence[int],
                    pad_id: int) -> tuple[list[str], list[float]]:
    """The unperturbed greedy response to each prompt and its reward (``with_base=True`` of AISP and
    Best-of-N; not counted in ``reward_calls``)."""
    base = decode(model, input_ids, attention_mask, max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id)
    texts, _ = response_texts(tokenizer, base.tokens, base.lengths, eos_ids)
    return texts, call_reward(reward, prompts, texts).tolist()
