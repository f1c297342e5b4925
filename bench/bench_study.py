"""AISP against Best-of-N over a range of budgets (``fastalign bench --e2e --budgets 16,32,64,128``).

The AISP paper's headline is a curve: best reward against the number of reward calls. For every budget
(reward calls per prompt) this measures, on the same prompts with the same reward:

* AISP with ``n`` rollouts per iteration and ``K = budget / n`` iterations (one row per AISP setting);
* Best-of-``budget`` at temperature 1, and with nucleus sampling (top-p 0.9).

Rows hold the mean best reward over prompts with its standard error, the wall-clock per prompt, the
reward calls, and the means of ``result.metrics`` (text quality) where the results carry them.

Cost tricks (so all budgets cost one run per method):

* Best-of-N is nested: each prompt's largest-budget samples are drawn once (sample ``i`` depends only
  on its seed and index, :mod:`fastalign.methods.bon`), and best-of-k is the best of the first k samples.
* AISP with a fixed ``n`` is nested too: after ``k`` iterations it has scored ``n*k`` candidates, so
  budget ``n*k`` is its best-so-far after ``k`` iterations of the one run (``max(trace_max[:k])``).
  Settings that add candidates after the last update (``mean_rollout``, ``final_samples``) are not
  nested and run once per budget.

A recording wrapper around the reward keeps every scored round (rewards, texts, time since the run
started), which gives the per-budget best, its response and its wall-clock.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import torch

TARGET = "A warm, friendly and helpful answer that is clear, positive and encouraging."
PROMPTS_FILE = Path(__file__).resolve().parent / "prompts.jsonl"
DEFAULT_BUDGETS = (16, 32, 64, 128)
#: Default size: 8 prompts, 32 new tokens. The study decodes (AISP + 2 Best-of-N) x max budget rollouts per
#: prompt; on the shared 2-vCPU machine that ran at 0.9-1.7 rollouts/s, so budgets up to 64 take ~15-25 min
#: and up to 128 about twice that (bench/RESULTS.md).
DEFAULTS = dict(prompts=8, max_new_tokens=32, batch_prompts=8, seed=0)
QUICK = dict(prompts=4, max_budget=32, max_new_tokens=24)
#: Best-of-N variants of the study: (label, keyword arguments of bon_generate)
BON_VARIANTS = (("bon t=1", {"temperature": 1.0}), ("bon top-p=0.9", {"temperature": 1.0, "top_p": 0.9}))


def default_aisp_settings(n: int = 8) -> list[tuple[str, dict]]:
    """The AISP row of the default study: fastalign's defaults with ``n`` rollouts per iteration."""
    return [(f"aisp n={n} (defaults)", {"n": n})]


class _Recorder:
    """A reward wrapper that keeps every scored round: ``rewards [B, m]``, the ``B*m`` texts
    (prompt-major) and the seconds since :meth:`start` when the round was scored."""

    def __init__(self, reward, B: int):
        self.reward, self.B = reward, B
        self.rounds: list[tuple[torch.Tensor, list[str], float]] = []
        self.t0 = time.perf_counter()

    def start(self) -> None:
        self.rounds, self.t0 = [], time.perf_counter()

    def __call__(self, prompts, responses):
        from fastalign.scoring.rewards import call_reward

        r = call_reward(self.reward, list(prompts), list(responses))
        self.rounds.append((r.view(self.B, -1), list(responses), time.perf_counter() - self.t0))
        return r

    def candidates(self) -> tuple[torch.Tensor, list[list[str]], torch.Tensor]:
        """Every candidate in the order scored: rewards ``[B, N]``, texts per prompt, and ``[N]`` the
        time when each candidate's round was scored."""
        rewards = torch.cat([r for r, _, _ in self.rounds], dim=1)
        texts = [[t for r, ts, _ in self.rounds for t in ts[b * r.shape[1]:(b + 1) * r.shape[1]]]
                 for b in range(self.B)]
        times = torch.cat([torch.full((r.shape[1],), s, dtype=torch.float64) for r, _, s in self.rounds])
        return rewards, texts, times


def best_of_prefix(rewards: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best of the first ``k`` candidates of each prompt: ``(values [B], indices [B])`` (ties: the first)."""
    return rewards[:, :k].max(dim=1)


def _mean_se(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, float("nan")
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def _metrics_means(results: list) -> dict:
    """Means over prompts of the numeric ``result.metrics`` entries and of the objective and AISP's control
    health (:func:`fastalign.methods.results.health`): empty when results carry none."""
    from fastalign.methods.results import health

    per_key: dict[str, list[float]] = {}
    for res in results:
        for key, value in {**(getattr(res, "metrics", None) or {}), **health(res)}.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                per_key.setdefault(key, []).append(float(value))
    return {f"metric_{k}": sum(v) / len(v) for k, v in per_key.items()}


def _nested(method: str, label: str, budgets, rec: _Recorder, prompts: list[str], results: list, extra: dict):
    """Rows (one per budget) and best responses of one nested run over one batch of prompts."""
    rewards, texts, times = rec.candidates()
    out = []
    for budget in budgets:
        values, idx = best_of_prefix(rewards, budget)
        row = {"method": method, "setting": label, "budget": budget, "reward_calls": budget,
               "rewards": values.tolist(), "seconds": float(times[budget - 1]),
               "responses": [texts[b][int(i)] for b, i in enumerate(idx)], **extra}
        if budget == rewards.shape[1]:  # the results' own candidates: their metrics apply
            row["results"] = results
        out.append(row)
    return out


def _run_batch(model, tokenizer, reward, prompts, budgets, aisp_settings, bon_variants, *, max_new_tokens, seed,
               progress):
    """All methods on one batch of prompts: a list of per-batch rows (rewards per prompt)."""
    from fastalign.methods.aisp import aisp_generate
    from fastalign.methods.bon import bon_generate

    B, top = len(prompts), max(budgets)
    rec = _Recorder(reward, B)
    rows = []
    common = dict(max_new_tokens=max_new_tokens, seed=seed, progress=False)
    for label, kw in aisp_settings:
        n = kw.get("n", 8)
        if kw.get("mean_rollout") or kw.get("final_samples"):  # not nested: one run per budget
            for budget in budgets:
                rec.start()
                res = aisp_generate(model, tokenizer, prompts, rec, **{**kw, "iterations": max(1, budget // n)},
                                    **common)
                rows.append({"method": "aisp", "setting": label, "budget": budget,
                             "reward_calls": res[0].reward_calls, "rewards": [r.reward for r in res],
                             "seconds": rec.rounds[-1][2], "responses": [r.response for r in res], "results": res,
                             "n": n, "iterations": max(1, budget // n)})
        else:
            usable = [b for b in budgets if b % n == 0]
            rec.start()
            res = aisp_generate(model, tokenizer, prompts, rec, **{**kw, "iterations": max(usable) // n}, **common)
            for row in _nested("aisp", label, usable, rec, prompts, res, {"n": n}):
                rows.append({**row, "iterations": row["budget"] // n})
        if progress:
            print(f"study: {label} done ({rec.rounds[-1][2]:.1f} s for {B} prompts)", file=sys.stderr, flush=True)
    round_size = min(kw.get("n", 8) for _, kw in aisp_settings) if aisp_settings else 8
    for label, kw in bon_variants:
        rec.start()
        res = bon_generate(model, tokenizer, prompts, rec, n=top, batch_size=B * round_size, **kw, **common)
        rows += _nested("bon", label, budgets, rec, prompts, res, {})
        if progress:
            print(f"study: {label} done ({rec.rounds[-1][2]:.1f} s for {B} prompts)", file=sys.stderr, flush=True)
    return rows


def _merge(batch_rows: list[list[dict]], prompts: list[str]) -> tuple[list[dict], list[dict]]:
    """Rows over all prompts (mean ± standard error, seconds per prompt, metric means) and the best
    responses per (setting, budget)."""
    merged: dict[tuple, dict] = {}
    for rows in batch_rows:
        for row in rows:
            key = (row["setting"], row["budget"])
            acc = merged.setdefault(key, {**{k: v for k, v in row.items()
                                             if k not in ("rewards", "seconds", "responses", "results")},
                                          "rewards": [], "seconds": 0.0, "responses": [], "results": []})
            acc["rewards"] += row["rewards"]
            acc["seconds"] += row["seconds"]
            acc["responses"] += row["responses"]
            acc["results"] += row.get("results", [])
    out, responses = [], []
    for (setting, budget), acc in merged.items():
        mean, se = _mean_se(acc["rewards"])
        row = {k: v for k, v in acc.items() if k not in ("rewards", "responses", "results")}
        row.update(reward_mean=mean, reward_se=se, prompts=len(acc["rewards"]),
                   seconds_per_prompt=acc["seconds"] / len(acc["rewards"]), **_metrics_means(acc["results"]))
        del row["seconds"]
        out.append(row)
        responses.append({"setting": setting, "budget": budget, "rewards": acc["rewards"],
                          "responses": acc["responses"], "prompts": prompts})
    return out, responses


def run_study(model=None, tokenizer=None, reward=None, prompts=None, *, budgets=DEFAULT_BUDGETS,
              aisp_settings=None, bon_variants=BON_VARIANTS, max_new_tokens: int = DEFAULTS["max_new_tokens"],
              batch_prompts: int = DEFAULTS["batch_prompts"], seed: int = DEFAULTS["seed"], progress: bool = True):
    """The study on ``prompts`` (default: the first 8 of ``bench/prompts.jsonl``): ``(rows, responses)``.

    ``model``/``tokenizer`` default to the embedded SmolLM2-135M-Instruct and ``reward`` to the
    all-MiniLM-L6-v2 cosine similarity with :data:`TARGET`. ``aisp_settings``: ``[(label, kwargs of
    aisp_generate)]`` (default :func:`default_aisp_settings`); a budget that is not a multiple of a
    setting's ``n`` has no row for it. Prompts go in batches of ``batch_prompts``; Best-of-N decodes
    rounds of the same shape as AISP's iterations (``B * n`` rows) so their wall-clocks compare.

    Returns ``rows`` (one dict per setting and budget: ``method``, ``setting``, ``budget``, ``reward_calls``,
    ``reward_mean``, ``reward_se`` (standard error over prompts), ``prompts``, ``seconds_per_prompt``,
    ``n``/``iterations`` for AISP, and ``metric_*`` means where the results carry ``metrics`` (rows at
    the largest budget, or every budget for non-nested settings)) and ``responses`` (the best response per
    prompt for each row).
    """
    from fastalign.scoring import models

    budgets = sorted({int(b) for b in budgets})
    if not budgets or budgets[0] < 1:
        from fastalign.errors import InputError  # bad input: exit 2 under the CLI
        raise InputError(f"budgets: expected positive integers, got {budgets}")
    if model is None:
        model, tokenizer = models.load_model()
    if reward is None:
        reward = models.load_reward(target=TARGET)
    if prompts is None:
        prompts = load_prompts(None, DEFAULTS["prompts"])
    aisp_settings = default_aisp_settings() if aisp_settings is None else list(aisp_settings)
    batch_rows = []
    for start in range(0, len(prompts), batch_prompts):
        batch = prompts[start:start + batch_prompts]
        if progress:
            print(f"study: prompts {start + 1}-{start + len(batch)} of {len(prompts)}", file=sys.stderr, flush=True)
        batch_rows.append(_run_batch(model, tokenizer, reward, batch, budgets, aisp_settings, bon_variants,
                                     max_new_tokens=max_new_tokens, seed=seed, progress=progress))
    return _merge(batch_rows, list(prompts))


def load_prompts(path, count: int | None) -> list[str]:
    """The first ``count`` prompts (all when None) of a JSONL prompt file (default ``bench/prompts.jsonl``)."""
    from fastalign.distributed import read_prompts

    items = read_prompts(path or PROMPTS_FILE)
    return [it["prompt"] for it in items][:count]


# ------------------------------------------------------------------------------------------ output
def format_table(rows: list[dict]) -> str:
    """The rows as a table by budget, one column group per setting."""
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    budgets = sorted({r["budget"] for r in rows})
    by = {(r["setting"], r["budget"]): r for r in rows}
    head = f"{'budget':>6} | " + " | ".join(f"{s[:26]:>26}" for s in settings)
    lines = [head, "-" * len(head)]
    for b in budgets:
        cells = []
        for s in settings:
            r = by.get((s, b))
            cells.append(f"{'-':>26}" if r is None else
                         f"{r['reward_mean']:.4f}±{r['reward_se']:.4f} {r['seconds_per_prompt']:5.1f}s".rjust(26))
        lines.append(f"{b:>6} | " + " | ".join(cells))
    metric_rows = [r for r in rows if any(k.startswith("metric_") for k in r)]
    for r in metric_rows:
        lines.append(f"  {r['setting']} @ {r['budget']}: " + ", ".join(
            f"{k[7:]}={v:.3f}" for k, v in r.items() if k.startswith("metric_")))
    return "\n".join(lines)


def format_responses(responses: list[dict], budget: int, width: int = 110) -> str:
    """The best response of every prompt at ``budget``, per setting."""
    lines = []
    for entry in responses:
        if entry["budget"] != budget:
            continue
        lines.append(f"== {entry['setting']} @ {budget}")
        for p, r, text in zip(entry["prompts"], entry["rewards"], entry["responses"]):
            flat = " ".join(text.split())
            lines.append(f"  [{r:.3f}] {p[:40]!r}: {flat[:width]}")
    return "\n".join(lines)


def write_csv(rows: list[dict], path) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def plot(rows: list[dict], path) -> None:
    """Mean best reward (± standard error) against reward calls, one line per setting (log2 x axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=80)
    for s in dict.fromkeys(r["setting"] for r in rows):
        pts = sorted((r["reward_calls"], r["reward_mean"], r["reward_se"]) for r in rows if r["setting"] == s)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[0 if math.isnan(p[2]) else p[2] for p in pts],
                    marker="o", capsize=3, label=s, linestyle="--" if s.startswith("bon") else "-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("reward calls per prompt")
    ax.set_ylabel("mean best reward (± s.e. over prompts)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse_budgets(text: str) -> list[int]:
    """``"64,16,32"`` -> ``[16, 32, 64]`` (sorted, without repeats); ValueError unless every item is a
    positive integer. The one parser of ``--budgets`` (the CLI's and this script's)."""
    try:
        budgets = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        budgets = []
    if not budgets or min(budgets) < 1:
        raise ValueError(f"expected comma-separated positive integers, got {text!r}")
    return sorted(set(budgets))


def main_from_args(args) -> int:
    """``fastalign bench --e2e --budgets ...`` (args from the CLI parser)."""
    quick = bool(getattr(args, "quick", False))
    budgets = list(args.budgets)
    if quick:  # the ~3-minute version: 4 prompts, 24 tokens, budgets up to 32
        budgets = [b for b in budgets if b <= QUICK["max_budget"]] or [min(budgets)]
    count = getattr(args, "prompts", None) or (QUICK["prompts"] if quick else DEFAULTS["prompts"])
    prompts = load_prompts(getattr(args, "prompts_file", None), count)
    n = getattr(args, "n", None) or 8
    max_new_tokens = getattr(args, "max_new_tokens", None) or (
        QUICK["max_new_tokens"] if quick else DEFAULTS["max_new_tokens"])
    rows, responses = run_study(prompts=prompts, budgets=budgets, aisp_settings=default_aisp_settings(n),
                                max_new_tokens=max_new_tokens, seed=getattr(args, "seed", 0) or 0,
                                progress=not getattr(args, "quiet", False))
    if getattr(args, "csv", None):
        write_csv(rows, args.csv)
    if getattr(args, "plot", None):
        plot(rows, args.plot)
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows))
        print()
        print(format_responses(responses, max(budgets)))
    return 0


def budgets_argument(text: str) -> list[int]:
    """:func:`parse_budgets` as an argparse ``type`` (the CLI's ``--budgets`` too)."""
    try:
        return parse_budgets(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_study", description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", type=budgets_argument, default=list(DEFAULT_BUDGETS))
    p.add_argument("--prompts", type=int, default=None)
    p.add_argument("--prompts-file", default=None)
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--csv")
    p.add_argument("--plot")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return main_from_args(p.parse_args(argv))


if __name__ == "__main__":
    import os

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
