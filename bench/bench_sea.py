"""SEA quality sweep and step-time breakdown on the embedded model (issue 14).

SmolLM2-135M-Instruct with the all-MiniLM-L6-v2 target-cosine reward (the target and prompts of
``bench/bench_e2e.py``). For each option set of :func:`fastalign.methods.sea.sea_generate`: mean reward of the
SEA responses against the base response (the first chain's sampled start) and against the best start
over the chains (what keeping the best of 4 samples alone gives), the mean base-model perplexity of the
responses against the base responses' and the greedy responses', coherence, distinct-2, time, and the
responses. Then the time of one SEA step split into LM forward, reward forward, backward (the reward's;
plus the LM's with ``fluency="full"``) and the fused ops, for full against detached fluency.

Run: ``nice -n 10 python bench/bench_sea.py [--quick] [--json-out F.json]``. A benchmark: it measures,
it asserts nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_e2e import PROMPTS, TARGET, _Timer, time_ops  # noqa: E402

LEGACY = dict(soft_tokens="soft", fluency="full", decoding="argmax", noise="eval", chains=1)
#: option sets of the sweep (name -> sea_generate options on top of the common ones)
CONFIGS = {
    "legacy: soft, full, argmax, eval noise, 1 chain": LEGACY,
    "ST, detached, argmax, eval noise, 4 chains": dict(soft_tokens="straight_through", fluency="detached",
                                                      decoding="argmax", noise="eval", chains=4),
    "ST, detached, lm_topk 5, eval noise, 4 chains": dict(soft_tokens="straight_through", fluency="detached",
                                                         decoding="lm_topk", noise="eval", chains=4),
    "ST, detached, lm_topk 5, langevin, 4 chains": dict(soft_tokens="straight_through", fluency="detached",
                                                       decoding="lm_topk", noise="langevin", chains=4),
    "soft, detached, lm_topk 5, eval noise, 4 chains": dict(soft_tokens="soft", fluency="detached",
                                                           decoding="lm_topk", noise="eval", chains=4),
}
QUICK = ["ST, detached, argmax, eval noise, 4 chains", "ST, detached, lm_topk 5, eval noise, 4 chains"]


def _mean(xs):
    xs = [x for x in xs if x == x]
    return statistics.fmean(xs) if xs else float("nan")


def greedy_perplexities(model, tokenizer, prompts, max_new_tokens) -> tuple[list[str], list[float]]:
    """The greedy responses and their perplexities (a fluency reference point)."""
    from fastalign.methods import _common
    from fastalign import engine
    from fastalign.scoring import metrics

    enc = _common.EncodedPrompts.from_texts(model, tokenizer, prompts, chat_template=None,
                                            device=engine.input_device(model))
    with engine.eval_mode(model):
        texts, ids = enc.responses(tokenizer, enc.decode(model, max_new_tokens=max_new_tokens))
        ppl = metrics.perplexities(model, enc.input_ids, enc.attention_mask, list(range(len(prompts))), ids)
    return texts, ppl


def sweep(model, tokenizer, reward, prompts, names, *, steps, max_new_tokens, seed, say, out: dict,
          save=lambda: None) -> dict:
    """Run each option set in ``names``; its entry goes into ``out`` and ``save()`` is called after each."""
    from fastalign.methods.sea import sea_generate

    for name in names:
        say(f"sweep: {name}")
        t0 = time.perf_counter()
        res = sea_generate(model, tokenizer, prompts, reward, steps=steps, max_new_tokens=max_new_tokens, seed=seed,
                           progress=False, **CONFIGS[name])
        out[name] = {
            "options": CONFIGS[name], "seconds": time.perf_counter() - t0,
            "mean_reward": _mean(r.reward for r in res), "mean_base_reward": _mean(r.base_reward for r in res),
            "mean_best_start_reward": _mean(r.trace_max[0] for r in res),
            "mean_perplexity": _mean(r.metrics["perplexity"] for r in res),
            "mean_base_perplexity": _mean(r.metrics["base_perplexity"] for r in res),
            "mean_coherence": _mean(r.metrics.get("coherence", float("nan")) for r in res),
            "mean_distinct_2": _mean(r.metrics["distinct_2"] for r in res),
            "responses": [{"prompt": r.prompt, "base": r.base_response, "base_reward": r.base_reward,
                           "aligned": r.response, "reward": r.reward, "metrics": r.metrics} for r in res],
        }
        say(f"  reward {out[name]['mean_base_reward']:.3f} -> {out[name]['mean_reward']:.3f}, perplexity "
            f"{out[name]['mean_base_perplexity']:.1f} -> {out[name]['mean_perplexity']:.1f} "
            f"({out[name]['seconds']:.0f} s)")
        save()
    return out


@contextlib.contextmanager
def _patched(obj, name, wrap):
    saved = getattr(obj, name)
    setattr(obj, name, wrap(saved))
    try:
        yield
    finally:
        setattr(obj, name, saved)


def step_breakdown(model, tokenizer, reward, prompts, *, fluency, steps, max_new_tokens, seed) -> dict:
    """Seconds per SEA step: total (energy + gradient + update), LM forward (incl. the soft-token
    embedding), reward forward, backward and the rest (energy - forwards), fused ops."""
    from fastalign.methods import sea

    lm_t, rw_t, energy_t = _Timer(), _Timer(), _Timer()
    soft = reward.soft_reward_fn(model, tokenizer)
    soft_timed = rw_t.wrap(soft)
    soft_timed.is_soft_reward = True
    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(sea.BaseLM, "logits", lambda f: lm_t.wrap(f)))
        stack.enter_context(_patched(sea, "energy_and_grad", lambda f: energy_t.wrap(f)))
        ops_t = stack.enter_context(time_ops(["sea_step", "gaussian_perturb"]))
        res = sea.sea_generate(model, tokenizer, prompts, reward, steps=steps, max_new_tokens=max_new_tokens,
                               seed=seed, progress=False, metrics=False, soft_reward=soft_timed, fluency=fluency,
                               soft_tokens="straight_through", decoding="argmax", chains=4)
    n = steps
    return {"fluency": fluency, "steps": steps, "rows": len(prompts) * 4,
            "step_s": (energy_t.seconds + ops_t.seconds) / n, "lm_forward_s": lm_t.seconds / n,
            "reward_forward_s": rw_t.seconds / n,
            "backward_and_rest_s": (energy_t.seconds - lm_t.seconds - rw_t.seconds) / n,
            "fused_ops_s": ops_t.seconds / n, "lm_forward_rows": res[0].extra["lm_forward_rows"]}


def format_report(rep: dict) -> str:
    s = rep["settings"]
    lines = [f"SEA sweep: {s['prompts']} prompts, {s['steps']} steps, {s['max_new_tokens']} tokens, seed {s['seed']}, "
             f"{s['threads']} threads; greedy responses' mean perplexity {rep['greedy_mean_perplexity']:.2f}", "",
             "| options | reward: base -> SEA (best start) | perplexity: base -> SEA | coherence | distinct-2 | s |",
             "|---|---|---|---|---|---|"]
    for name, e in rep["sweep"].items():
        lines.append(f"| {name} | {e['mean_base_reward']:.3f} -> {e['mean_reward']:.3f} ({e['mean_best_start_reward']:.3f})"
                     f" | {e['mean_base_perplexity']:.2f} -> {e['mean_perplexity']:.2f} | {e['mean_coherence']:.3f} | "
                     f"{e['mean_distinct_2']:.2f} | {e['seconds']:.0f} |")
    if rep.get("timing"):
        lines += ["", "| fluency | s/step | LM forward | reward forward | backward + rest | fused ops | LM rows run |",
                  "|---|---|---|---|---|---|---|"]
        for t in rep["timing"]:
            lines.append(f"| {t['fluency']} | {t['step_s']:.3f} | {t['lm_forward_s']:.3f} | {t['reward_forward_s']:.3f} | "
                         f"{t['backward_and_rest_s']:.3f} | {t['fused_ops_s']:.4f} | {t['lm_forward_rows']} of "
                         f"{t['steps'] * t['rows']} |")
    for name, e in rep["sweep"].items():
        lines += ["", f"{name}:"]
        for r in e["responses"]:
            m = r["metrics"]
            lines.append(f"  [{r['prompt']}]\n    base ({r['base_reward']:.3f}, ppl {m['base_perplexity']:.1f}): "
                         f"{r['base']!r}\n    SEA  ({r['reward']:.3f}, ppl {m['perplexity']:.1f}): {r['aligned']!r}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_sea", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="two option sets, timing over 3 steps")
    p.add_argument("--configs", help="';'-separated option-set names (default: all, or the quick ones)")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--timing-steps", type=int, default=None, help="steps timed per fluency mode (0: no timing)")
    p.add_argument("--timing-prompts", type=int, default=None, help="prompts of the timing runs (default: --prompts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", help="also write the report as JSON here")
    args = p.parse_args(argv)

    from fastalign.scoring import models

    def say(m):
        print(f"bench sea: {m}", file=sys.stderr, flush=True)

    model, tokenizer = models.load_default()
    reward = models.load_default_reward(TARGET)
    prompts = PROMPTS[:args.prompts]
    names = [n for n in args.configs.split(";") if n] if args.configs is not None else (QUICK if args.quick else list(CONFIGS))
    rep = {"settings": dict(prompts=len(prompts), steps=args.steps, max_new_tokens=args.max_new_tokens,
                            seed=args.seed, threads=torch.get_num_threads(), target=TARGET)}
    greedy, greedy_ppl = greedy_perplexities(model, tokenizer, prompts, args.max_new_tokens)
    rep["greedy"] = [{"prompt": q, "response": t, "perplexity": x} for q, t, x in zip(prompts, greedy, greedy_ppl)]
    rep["greedy_mean_perplexity"] = _mean(greedy_ppl)
    def save():  # after each option set, so that a long sweep cut short keeps what it measured
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(rep, f, indent=1)

    rep["sweep"] = {}
    sweep(model, tokenizer, reward, prompts, names, steps=args.steps, max_new_tokens=args.max_new_tokens,
          seed=args.seed, say=say, out=rep["sweep"], save=save)
    timing_steps = args.timing_steps if args.timing_steps is not None else (3 if args.quick else 5)
    rep["timing"] = []
    for fluency in ("full", "detached") if timing_steps else ():
        say(f"timing: fluency={fluency}, {timing_steps} steps")
        rep["timing"].append(step_breakdown(model, tokenizer, reward, PROMPTS[:args.timing_prompts or len(prompts)],
                                            fluency=fluency, steps=timing_steps,
                                            max_new_tokens=args.max_new_tokens, seed=args.seed))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rep, f, indent=1)
    print(format_report(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
