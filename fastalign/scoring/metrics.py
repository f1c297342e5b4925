"""Text-quality metrics attached to every result (``AlignResult.metrics``), shown beside the reward.

A reward can be won by text a reader would not want (a similarity score rises with word salad that
repeats the target's words), so every method also reports, per prompt:

* ``perplexity``: ``exp(mean NLL)`` of the response's tokens under the *base* model given the prompt
  (the prompt encoded exactly as the method fed it, chat template included; the EOS token is not
  counted). ``base_perplexity`` is the same for the method's base response where it has one (the greedy
  response of AISP / Best-of-N with ``with_base=True``, SEA's sampled initial response). Lower is
  more fluent; compare a method's value with its ``base_perplexity``.
* ``coherence``: cosine similarity of the prompt's and the response's sentence embeddings (mean-pooled,
  L2-normalised all-MiniLM-L6-v2, as in the ARGS / AISP papers' tables). The reward's own encoder is
  reused when the reward is an :class:`~fastalign.scoring.rewards.EmbeddingSimilarityReward` (anything with an
  ``embed(texts) -> [N, d]`` method); otherwise the embedded all-MiniLM-L6-v2 is loaded once per process,
  and the metric is left out where that package is not installed.
* ``distinct_2`` / ``distinct_3``: distinct n-grams over all n-grams of the prompt's candidates (every
  response the method scored for it: AISP's rollouts, Best-of-N's samples, SEA's final chains), with
  whitespace words as tokens (Li et al., 2016). 1.0: no n-gram repeats; lower: repetitive candidates.

Cost: one batched forward of the base model over the prompt + chosen (and base) responses and one
encoder forward over prompts and responses per call: small beside the method itself. ``metrics=False``
on a method skips them.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

__all__ = ["mean_logprobs", "perplexities", "coherence", "distinct_n", "text_encoder", "attach"]


@torch.no_grad()
def mean_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: Sequence[int],
                  responses: Sequence[Sequence[int]], *, batch_size: int = 8, api=None) -> list[float]:
    """``mean_t log p(response_t | prompt, response_<t)`` of each response under ``model``, from one
    teacher-forced forward per batch of responses.

    Args:
        input_ids, attention_mask: ``[B, P]`` left-padded prompts (as the method encoded them).
        rows: for each response, the index of its prompt in ``input_ids``.
        responses: token ids of each response (EOS excluded); an empty response gives NaN.
        api: the model's :class:`~fastalign.engine.ModelInterface` when the caller has it (else resolved here).
    Returns: one float per response (a float32 value).
    """
    from fastalign import engine

    api = api or engine.model_interface(model)
    out = [math.nan] * len(responses)
    todo = [i for i, r in enumerate(responses) if len(r) > 0]
    device = input_ids.device
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        R = max(len(responses[i]) for i in chunk)
        resp = torch.zeros((len(chunk), R), dtype=torch.long, device=device)
        rmask = torch.zeros((len(chunk), R), dtype=torch.long, device=device)
        for j, i in enumerate(chunk):
            resp[j, :len(responses[i])] = torch.as_tensor(list(responses[i]), dtype=torch.long)
            rmask[j, :len(responses[i])] = 1
        idx = torch.as_tensor([rows[i] for i in chunk], device=device)
        ids = torch.cat([input_ids[idx], resp], dim=1)
        mask = torch.cat([attention_mask[idx].long(), rmask], dim=1)
        kwargs = engine.forward_kwargs(api, input_ids=ids, attention_mask=mask, position_ids=engine.position_ids(mask),
                                       logits_to_keep=R + 1)
        logits = model(**kwargs).logits[:, -(R + 1):-1]  # position P - 1 + l predicts resp[:, l]
        logp = torch.log_softmax(logits.float(), dim=-1).to(device)
        nll = -logp.gather(-1, resp.unsqueeze(-1)).squeeze(-1) * rmask
        mean = nll.sum(-1) / rmask.sum(-1)
        for j, i in enumerate(chunk):
            out[i] = -float(mean[j])
    return out


def perplexities(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: Sequence[int],
                 responses: Sequence[Sequence[int]], *, batch_size: int = 8, api=None) -> list[float]:
    """``exp(mean NLL)`` of each response under ``model`` given its prompt (arguments as for
    :func:`mean_logprobs`; an empty response gives NaN)."""
    return [float(torch.exp(torch.tensor(-lp, dtype=torch.float32)))
            for lp in mean_logprobs(model, input_ids, attention_mask, rows, responses, batch_size=batch_size, api=api)]


@torch.no_grad()
def coherence(encoder, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Cosine similarity of ``encoder.embed(prompts)`` and ``encoder.embed(responses)`` row by row
    (``embed`` returns ``[N, d]``; normalised here, so any embedding works)."""
    a = torch.nn.functional.normalize(encoder.embed(list(prompts)).float(), dim=-1)
    b = torch.nn.functional.normalize(encoder.embed(list(responses)).float(), dim=-1)
    return (a * b).sum(-1).cpu().tolist()


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over ``texts`` (whitespace words); 0.0 when there is no n-gram."""
    grams = [tuple(w[i:i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@functools.lru_cache(maxsize=1)
def _default_encoder():
    try:
        from fastalign.scoring.rewards import EmbeddingSimilarityReward

        return EmbeddingSimilarityReward("text")  # only its encoder is used
    except Exception:  # the embedded encoder package (or transformers) is not installed
        return None


def text_encoder(reward):
    """The sentence encoder for ``coherence``: the reward itself when it has ``embed`` (the embedding
    reward, also behind a wrapper that forwards attributes), else the embedded all-MiniLM-L6-v2 (None
    where it is not installed)."""
    embed = getattr(reward, "embed", None)
    return reward if callable(embed) else _default_encoder()


def attach(results, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, reward, *,
           base_ids: Sequence[Sequence[int]] | None = None, candidates: Sequence[Sequence[str]] | None = None,
           api=None) -> None:
    """Fill ``results[b].metrics`` (one :class:`~fastalign.methods.results.AlignResult` per prompt ``b`` of
    ``input_ids``): perplexity (and base_perplexity with ``base_ids``), coherence, distinct_2/3 over
    ``candidates[b]`` (the prompt's scored responses; default: the result's response alone)."""
    B = len(results)
    seqs = [r.response_ids for r in results] + (list(base_ids) if base_ids is not None else [])
    ppl = perplexities(model, input_ids, attention_mask, [b % B for b in range(len(seqs))], seqs, api=api)
    encoder = text_encoder(reward)
    coh = coherence(encoder, [r.prompt for r in results], [r.response for r in results]) if encoder else None
    for b, res in enumerate(results):
        cands = list(candidates[b]) if candidates is not None else [res.response]
        m = {"perplexity": ppl[b]}
        if base_ids is not None:
            m["base_perplexity"] = ppl[B + b]
        if coh is not None:
            m["coherence"] = coh[b]
        m["distinct_2"], m["distinct_3"] = distinct_n(cands, 2), distinct_n(cands, 3)
        res.metrics.update(m)
