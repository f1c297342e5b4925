"""Does AISP's control learn, and does the text survive? (issue 21: the study behind the trust-region,
relative-noise and objective defaults).

For each setting, on the same prompts, reward and seed, at one budget (n rollouts x K iterations):

* AISP: the mean reward of the first and of the last iteration (does the control learn?), the best
  response's raw reward and objective, its perplexity under the base model, coherence, the control's
  relative norm ``mean_t |u_t| / |h|`` and the weights' effective sample size per iteration;
* Best-of-(n*K) at temperature 1 (with the same ``kl_coef``), and the *ordinary* temperature-1
  samples of the base model: the perplexity of every sample Best-of-N drew, not only the chosen one
  (the fluency reference of the rule below).

The rule (written before the run, bench/RESULTS.md "Control health and the objective"): an AISP setting
is eligible when its mean reward per iteration rises (last > first, averaged over prompts) and the
median perplexity of its chosen answers is no higher than the median perplexity of ordinary
temperature-1 samples; among eligible settings the highest mean raw reward wins, and a setting within
one standard error of it with a smaller ``kl_coef`` (then smaller noise) is preferred.

The CLI's ``--kl-coef`` (one value for every method; written after the first round, which showed
Best-of-N's chosen answers above the fluency line at kl_coef 0 and 0.05 and its reward collapsing at
0.15, before the second round): the smallest value tried at which Best-of-N's chosen answers meet the
fluency condition; AISP's chosen setting is then run at that value and must still meet its rule.

    python bench/bench_trust.py --first 17 --prompts 8 --n 8 --iterations 8 --out study.jsonl
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: (label, aisp_generate keyword arguments); kl_coef also goes to the Best-of-N row of the same label
SETTINGS = {
    "old defaults (var 0.5, no cap)": dict(variance=0.5, control_cap=None),
    "rel 0.1 cap 0.5": dict(rel_sigma=0.1, control_cap=0.5),
    "rel 0.1 cap 0.5 kl 0.05": dict(rel_sigma=0.1, control_cap=0.5, kl_coef=0.05),
    "rel 0.2 cap 0.5 kl 0.05": dict(rel_sigma=0.2, control_cap=0.5, kl_coef=0.05),
    "rel 0.05 cap 0.25 kl 0.05": dict(rel_sigma=0.05, control_cap=0.25, kl_coef=0.05),
    "rel 0.1 cap 0.5 kl 0.15": dict(rel_sigma=0.1, control_cap=0.5, kl_coef=0.15),
    "rel 0.2 cap 0.5": dict(rel_sigma=0.2, control_cap=0.5),
    "rel 0.2 cap 0.25": dict(rel_sigma=0.2, control_cap=0.25),
    "rel 0.3 cap 0.3 kl 0.05": dict(rel_sigma=0.3, control_cap=0.3, kl_coef=0.05),
    "rel 0.1 cap 0.5 kl 0.08": dict(rel_sigma=0.1, control_cap=0.5, kl_coef=0.08),
}
BON_KL = (0.0, 0.05, 0.15)


def summarize(label: str, results: list, extra: dict | None = None) -> dict:
    """One row: means over prompts of what the results carry (AISP health where present)."""
    from bench.bench_study import _mean_se

    row = {"setting": label, "prompts": len(results), "seconds": results[0].seconds}
    row["reward"], row["reward_se"] = _mean_se([r.reward for r in results])
    if results[0].objective is not None:
        row["objective"] = statistics.fmean(r.objective for r in results)
    ppl = [r.metrics.get("perplexity", math.nan) for r in results]
    row["median_perplexity"] = statistics.median(ppl)
    row["coherence"] = statistics.fmean(r.metrics.get("coherence", math.nan) for r in results)
    row["first_iter_mean"] = statistics.fmean(r.trace_mean[0] for r in results)
    row["last_iter_mean"] = statistics.fmean(r.trace_mean[-1] for r in results)
    if "control_norm" in results[0].extra:
        K = len(results[0].extra["control_norm"])
        row["control_norm"] = [statistics.fmean(r.extra["control_norm"][k] for r in results) for k in range(K)]
        row["ess"] = [statistics.fmean(r.extra["ess"][k] for r in results) for k in range(K)]
    row["responses"] = [{"prompt": r.prompt, "reward": r.reward, "perplexity": r.metrics.get("perplexity"),
                         "response": r.response} for r in results]
    row.update(extra or {})
    return row


def sample_perplexity(model, tokenizer, prompts, *, n: int, max_new_tokens: int, seed: int) -> float:
    """Median perplexity of ``n`` ordinary temperature-1 samples per prompt (no selection)."""
    from fastalign.methods import _common
    from fastalign import engine
    from fastalign.scoring import metrics
    from fastalign.engine import sampling

    device = engine.input_device(model)
    enc = _common.EncodedPrompts.from_texts(model, tokenizer, prompts, chat_template=None, device=device)
    seeds = torch.tensor(sampling.stream_seeds(seed + 1000, prompts), dtype=torch.int64).repeat_interleave(n)
    idx = torch.arange(n, dtype=torch.int64).repeat(len(prompts))

    def choose(logits, step, active):
        return sampling.sample_tokens(logits, seeds, idx * max_new_tokens + step, temperature=1.0, top_p=1.0, top_k=0)

    with engine.eval_mode(model):
        roll = enc.decode(model, repeats=n, max_new_tokens=max_new_tokens, choose=choose)
        _, ids = enc.responses(tokenizer, roll)
        ppl = metrics.perplexities(model, enc.input_ids, enc.attention_mask, [i // n for i in range(len(ids))], ids)
    return statistics.median([p for p in ppl if p == p])


def main(argv=None) -> int:
    from bench.bench_study import TARGET, load_prompts
    from fastalign import aisp_generate, bon_generate
    from fastalign.scoring import models

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--first", type=int, default=17, help="1-based index of the first prompt in bench/prompts.jsonl")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--prompt", action="append", default=None, help="explicit prompts instead of the file")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--settings", default=None, help="';'-separated labels of SETTINGS (default: all)")
    p.add_argument("--bon-kl", default=None, help="comma-separated kl_coef values of the Best-of-N rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="JSONL: one row per setting, appended as each finishes")
    args = p.parse_args(argv)
    prompts = args.prompt or load_prompts(None, None)[args.first - 1:args.first - 1 + args.prompts]
    model, tok = models.load_model()
    reward = models.load_reward(target=TARGET)
    common = dict(max_new_tokens=args.max_new_tokens, seed=args.seed, progress=False)
    labels = list(SETTINGS) if args.settings is None else [s.strip() for s in args.settings.split(";")]
    bon_kl = BON_KL if args.bon_kl is None else tuple(float(x) for x in args.bon_kl.split(",") if x.strip())

    def emit(row):
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        brief = {k: v for k, v in row.items() if k != "responses"}
        print(json.dumps(brief), flush=True)

    t = time.perf_counter()
    ref = sample_perplexity(model, tok, prompts, n=args.n, max_new_tokens=args.max_new_tokens, seed=args.seed)
    emit({"setting": "temperature-1 samples", "median_perplexity": ref, "seconds": time.perf_counter() - t})
    for label in labels:
        res = aisp_generate(model, tok, prompts, reward, n=args.n, iterations=args.iterations, **SETTINGS[label],
                            **common)
        emit(summarize("aisp " + label, res))
    for kl in bon_kl:
        res = bon_generate(model, tok, prompts, reward, n=args.n * args.iterations, batch_size=args.n * len(prompts),
                           kl_coef=kl, **common)
        emit(summarize(f"bon t=1 kl {kl}", res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
