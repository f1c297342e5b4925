"""The result type of AISP, SEA and Best-of-N (:class:`AlignResult`) and the best-so-far tracker
that AISP and Best-of-N share."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

__all__ = ["AlignResult", "BestSoFar", "health", "fmt", "fmt_metrics"]


@dataclass
class AlignResult:
    """What :func:`~fastalign.methods.aisp.aisp_generate`, :func:`~fastalign.methods.sea.sea_generate` and
    :func:`~fastalign.methods.bon.bon_generate` return for one prompt.

    Attributes:
        prompt: the prompt as given (before any chat template).
        response: the best response found (decoded text, special tokens removed).
        reward: its raw reward (as returned by the reward callable).
        objective: what the method maximised when it was not the raw reward: ``reward + kl_coef *
            mean_t log p_base(y_t | prompt, y_<t)`` with ``kl_coef > 0`` (see
            :func:`fastalign.methods.aisp.aisp_generate`); None when the method maximised the raw reward.
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
        metrics: text-quality metrics (:mod:`fastalign.scoring.metrics`): ``perplexity`` (base model, given the
            prompt), ``base_perplexity`` (of ``base_response``, where there is one), ``coherence``
            (prompt-response embedding cosine), ``distinct_2`` / ``distinct_3`` (over the prompt's
            candidates); empty when the method ran with ``metrics=False``.
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
    metrics: dict = field(default_factory=dict)
    objective: float | None = None

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
            "objective": self.objective,
            "method": self.method,
            "trace_mean": list(self.trace_mean),
            "trace_max": list(self.trace_max),
            "reward_calls": self.reward_calls,
            "seconds": self.seconds,
            "response_ids": list(self.response_ids),
            "base_response": self.base_response,
            "base_reward": self.base_reward,
            "extra": dict(self.extra),
            "metrics": dict(self.metrics),
        }


class BestSoFar:
    """Best response per prompt over rounds of scored candidates, with the per-round reward trace.

    Shared by AISP (a round is an iteration of n rollouts) and Best-of-N (a round of samples decoded
    together). Ties keep the earlier response. When rounds come with an ``objective``, the best is the
    candidate with the highest objective (its raw reward is kept beside it) and ``trace_objective``
    holds each round's mean objective.
    """

    def __init__(self, B: int):
        self.reward = [-math.inf] * B
        self.objective: list[float] | None = None
        self.trace_objective: list[list[float]] = [[] for _ in range(B)]
        self.text: list[str | None] = [None] * B
        self.ids: list[list[int]] = [[] for _ in range(B)]
        self.trace_mean: list[list[float]] = [[] for _ in range(B)]
        self.trace_max: list[list[float]] = [[] for _ in range(B)]
        self.candidates: list[list[str]] = [[] for _ in range(B)]  # every scored response (for distinct-n)

    def update(self, rewards: torch.Tensor, texts: Sequence[str], id_lists: Sequence[list[int]],
               objective: torch.Tensor | None = None) -> None:
        """Take one round: ``rewards [B, m]`` (and the ``objective [B, m]`` to select by, when the method
        maximises one); ``texts``/``id_lists`` of the ``B*m`` candidates, prompt-major."""
        m = rewards.shape[1]
        if objective is not None and self.objective is None:
            self.objective = [-math.inf] * len(self.reward)
        for b, row in enumerate(rewards):
            score = row if objective is None else objective[b]
            i = int(score.argmax())
            current = self.reward[b] if objective is None else self.objective[b]
            if self.text[b] is None or float(score[i]) > current:
                self.reward[b] = float(row[i])
                if objective is not None:
                    self.objective[b] = float(score[i])
                self.text[b] = texts[b * m + i]
                self.ids[b] = id_lists[b * m + i]
            if objective is not None:
                self.trace_objective[b].append(float(score.mean()))
            self.trace_mean[b].append(float(row.mean()))
            self.trace_max[b].append(float(row.max()))
            self.candidates[b].extend(texts[b * m:(b + 1) * m])

    def result(self, b: int, **fields) -> AlignResult:
        """The :class:`AlignResult` of prompt ``b`` (``fields``: prompt, method, reward_calls, ...)."""
        objective = None if self.objective is None else self.objective[b]
        return AlignResult(response=self.text[b], reward=self.reward[b], trace_mean=self.trace_mean[b],
                           trace_max=self.trace_max[b], response_ids=self.ids[b], objective=objective, **fields)


def health(result: AlignResult) -> dict:
    """The numbers that say whether a run learned and what it maximised, where the result has them:
    ``objective``; AISP's ``control_norm`` (relative control norm after the last update), ``ess`` (mean
    effective sample size over iterations) and ``reward_rise`` (mean reward of the last iteration minus
    the first's)."""
    out = {}
    if getattr(result, "objective", None) is not None:
        out["objective"] = result.objective
    extra = getattr(result, "extra", None) or {}
    if extra.get("control_norm"):
        out["control_norm"] = extra["control_norm"][-1]
        out["ess"] = sum(extra["ess"]) / len(extra["ess"])
        out["reward_rise"] = result.trace_mean[extra["iterations"] - 1] - result.trace_mean[0]
    return out


def fmt(x: float) -> str:
    return "-inf" if x == -math.inf else f"{x:.4f}"


def fmt_metrics(metrics: dict) -> str:
    """``"perplexity 12.3 (base 10.1), coherence 0.412, distinct-2/3 0.91/0.97"`` (what is present)."""
    parts = []
    if "perplexity" in metrics:
        base = metrics.get("base_perplexity")
        parts.append(f"perplexity {metrics['perplexity']:.2f}" + ("" if base is None else f" (base {base:.2f})"))
    if "coherence" in metrics:
        parts.append(f"coherence {metrics['coherence']:.3f}")
    if "distinct_2" in metrics:
        parts.append(f"distinct-2/3 {metrics['distinct_2']:.2f}/{metrics['distinct_3']:.2f}")
    return ", ".join(parts)
