"""End-to-end benchmark on the embedded default model (``fastalign bench --e2e``).

On SmolLM2-135M-Instruct with the all-MiniLM-L6-v2 cosine reward and a fixed target, over a fixed
set of prompts:

* AISP (n rollouts x K iterations) against Best-of-(n*K) sampling (temperature 1) at the same number
  of reward calls: mean best reward, wall-clock, and where AISP's time goes: the fused ops
  (``aisp_perturb`` + ``aisp_update``), the model forward passes, and the reward;
* SEA against its base response (the sampled initial response): mean reward before and after, time.

The responses are printed beside the numbers: the reward is a similarity score, not a quality score.
Numbers from a busy machine are provisional; ``bench/RESULTS.md`` says how to regenerate them.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

import torch

PROMPTS = [
    "Describe your morning routine.",
    "What should I cook for dinner tonight?",
    "Tell me about the city you would most like to visit.",
    "How do I get better at running?",
    "Write a short note to a colleague who is leaving the team.",
    "What is a good way to spend a rainy afternoon?",
]
TARGET = "A warm, friendly and helpful answer that is clear, positive and encouraging."
DEFAULTS = dict(n=8, iterations=4, max_new_tokens=48, prompts=4, sea_steps=40, seed=0)


class _Timer:
    """Accumulates wall time of wrapped calls (synchronising CUDA so the time is the op's own)."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.seconds += time.perf_counter() - t0
                self.calls += 1
        return timed


@contextlib.contextmanager
def time_ops(names):
    """Time every call of ``fastalign.ops.<name>`` (the algorithms call them through the module)."""
    from fastalign import ops

    timer = _Timer()
    saved = {name: getattr(ops, name) for name in names}
    try:
        for name, fn in saved.items():
            setattr(ops, name, timer.wrap(fn))
        yield timer
    finally:
        for name, fn in saved.items():
            setattr(ops, name, fn)


@contextlib.contextmanager
def time_forward(model):
    """Time every top-level forward pass of ``model``."""
    timer = _Timer()
    starts = []

    def pre(module, args, kwargs):
        starts.append(time.perf_counter())

    def post(module, args, kwargs, output):
        timer.seconds += time.perf_counter() - starts.pop()
        timer.calls += 1

    h1 = model.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = model.register_forward_hook(post, with_kwargs=True)
    try:
        yield timer
    finally:
        h1.remove()
        h2.remove()


class _TimedReward:
    def __init__(self, reward):
        self.reward = reward
        self.timer = _Timer()

    def __call__(self, prompts, responses):
        return self.timer.wrap(self.reward)(prompts, responses)

    def __getattr__(self, name):  # soft_reward_fn etc. for SEA
        return getattr(self.reward, name)


def run(*, n, iterations, max_new_tokens, prompts, sea_steps, seed, backend=None, progress=True) -> dict:
    from fastalign import models
    from fastalign.aisp import aisp_generate
    from fastalign.bon import bon_generate

    prompt_list = PROMPTS[:prompts]
    say = (lambda m: print(f"bench e2e: {m}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    say("loading the default model and reward")
    model, tokenizer = models.load_default()
    reward = _TimedReward(models.load_default_reward(TARGET))
    report = {"settings": dict(n=n, iterations=iterations, max_new_tokens=max_new_tokens, prompts=len(prompt_list),
                               sea_steps=sea_steps, seed=seed, target=TARGET, threads=torch.get_num_threads(),
                               backend=backend or "auto")}

    say(f"AISP n={n} x K={iterations} on {len(prompt_list)} prompts")
    reward.timer = _Timer()
    with time_ops(["aisp_perturb", "aisp_update"]) as ops_t, time_forward(model) as fwd_t:
        t0 = time.perf_counter()
        aisp = aisp_generate(model, tokenizer, prompt_list, reward, n=n, iterations=iterations, sigma=0.5, lam=0.02,
                             alpha=0.999, max_new_tokens=max_new_tokens, seed=seed, backend=backend,
                             with_base=True, progress=progress)
        aisp_s = time.perf_counter() - t0
    report["aisp"] = {
        "mean_reward": sum(r.reward for r in aisp) / len(aisp),
        "mean_base_reward": sum(r.base_reward for r in aisp) / len(aisp),
        "reward_calls_per_prompt": aisp[0].reward_calls,
        "seconds": aisp_s,
        "fused_ops_seconds": ops_t.seconds, "fused_op_calls": ops_t.calls,
        "model_forward_seconds": fwd_t.seconds, "reward_seconds": reward.timer.seconds,
        "fused_ops_share": ops_t.seconds / aisp_s, "model_forward_share": fwd_t.seconds / aisp_s,
        "responses": [{"prompt": r.prompt, "base": r.base_response, "aligned": r.response, "reward": r.reward,
                       "base_reward": r.base_reward} for r in aisp],
    }

    say(f"Best-of-{n * iterations} on {len(prompt_list)} prompts")
    reward.timer = _Timer()
    t0 = time.perf_counter()
    bon = bon_generate(model, tokenizer, prompt_list, reward, n=n * iterations, temperature=1.0,
                       max_new_tokens=max_new_tokens, seed=seed, progress=progress)
    bon_s = time.perf_counter() - t0
    report["bon"] = {
        "mean_reward": sum(r.reward for r in bon) / len(bon),
        "reward_calls_per_prompt": bon[0].reward_calls, "seconds": bon_s, "reward_seconds": reward.timer.seconds,
        "responses": [{"prompt": r.prompt, "aligned": r.response, "reward": r.reward} for r in bon],
    }

    if sea_steps:
        from fastalign.sea import sea_generate

        say(f"SEA {sea_steps} steps on {len(prompt_list)} prompts")
        with time_ops(["sea_step", "gaussian_perturb"]) as ops_t, time_forward(model) as fwd_t:
            t0 = time.perf_counter()
            sea = sea_generate(model, tokenizer, prompt_list, reward.reward, steps=sea_steps,
                               max_new_tokens=min(max_new_tokens, 32), seed=seed, backend=backend,
                               progress=progress)
            sea_s = time.perf_counter() - t0
        report["sea"] = {
            "mean_reward": sum(r.reward for r in sea) / len(sea),
            "mean_base_reward": sum(r.base_reward for r in sea) / len(sea),
            "seconds": sea_s, "fused_ops_seconds": ops_t.seconds, "model_forward_seconds": fwd_t.seconds,
            "responses": [{"prompt": r.prompt, "base": r.base_response, "aligned": r.response, "reward": r.reward,
                           "base_reward": r.base_reward} for r in sea],
        }
    return report


def format_report(report: dict) -> str:
    s = report["settings"]
    a, b = report["aisp"], report["bon"]
    lines = [
        f"settings: {len(PROMPTS[:s['prompts']])} prompts, n={s['n']}, K={s['iterations']}, "
        f"{s['max_new_tokens']} new tokens, {s['threads']} threads, backend {s['backend']}",
        "",
        "| method | reward calls / prompt | mean reward | wall-clock s |",
        "|---|---|---|---|",
        f"| greedy base | 1 | {a['mean_base_reward']:.3f} | - |",
        f"| AISP n={s['n']} x K={s['iterations']} | {a['reward_calls_per_prompt']} | {a['mean_reward']:.3f} | {a['seconds']:.1f} |",
        f"| Best-of-{s['n'] * s['iterations']} | {b['reward_calls_per_prompt']} | {b['mean_reward']:.3f} | {b['seconds']:.1f} |",
    ]
    if "sea" in report:
        e = report["sea"]
        lines.append(f"| SEA {s['sea_steps']} steps (base: sampled start {e['mean_base_reward']:.3f}) | - | "
                     f"{e['mean_reward']:.3f} | {e['seconds']:.1f} |")
    lines += ["",
              f"AISP time: fused ops {a['fused_ops_seconds']:.3f} s ({100 * a['fused_ops_share']:.2f} %, "
              f"{a['fused_op_calls']} calls), model forward {a['model_forward_seconds']:.1f} s "
              f"({100 * a['model_forward_share']:.1f} %), reward {a['reward_seconds']:.1f} s"]
    if "sea" in report:
        e = report["sea"]
        lines.append(f"SEA time: fused ops {e['fused_ops_seconds']:.3f} s, model forward {e['model_forward_seconds']:.1f} s")
    lines.append("")
    for i, r in enumerate(a["responses"]):
        lines.append(f"prompt: {r['prompt']}")
        lines.append(f"  greedy ({r['base_reward']:.3f}): {r['base']}")
        lines.append(f"  AISP   ({r['reward']:.3f}): {r['aligned']}")
        lines.append(f"  BoN    ({b['responses'][i]['reward']:.3f}): {b['responses'][i]['aligned']}")
        if "sea" in report:
            e = report["sea"]["responses"][i]
            lines.append(f"  SEA    ({e['base_reward']:.3f} -> {e['reward']:.3f}): {e['aligned']}")
    return "\n".join(lines)


def main_from_args(args) -> int:
    """``fastalign bench --e2e`` (args from the CLI parser)."""
    settings = {k: (getattr(args, k, None) if getattr(args, k, None) is not None else v) for k, v in DEFAULTS.items()}
    if settings["prompts"] > len(PROMPTS):
        raise ValueError(f"--prompts: at most {len(PROMPTS)} fixed prompts, got {settings['prompts']}")
    report = run(**settings, backend=getattr(args, "backend", None), progress=not getattr(args, "quiet", False))
    print(json.dumps(report, indent=1) if getattr(args, "json", False) else format_report(report))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_e2e", description=__doc__.split("\n\n")[0])
    for key, value in DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=value)
    p.add_argument("--backend", default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return main_from_args(p.parse_args(argv))


if __name__ == "__main__":
    import os

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
