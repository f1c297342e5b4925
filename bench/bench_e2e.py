"""End-to-end benchmark on the embedded default model (``fastalign bench --e2e``).

On SmolLM2-135M-Instruct with the all-MiniLM-L6-v2 cosine reward and a fixed target, over a fixed
set of prompts:

* AISP (n rollouts x K iterations) against Best-of-(n*K) sampling (temperature 1) at the same number
  of reward calls, and SEA against its base response: mean reward (and the text metrics the results
  carry), wall-clock, and where each method's time goes: prefill (forward passes over more than one
  position), decode forward (one position per row), the fused ops, the reward, and everything else;
  decode throughput in rollout-tokens per second;
* the anchor: ``model.generate`` decoding the same batch as AISP (B prompts x n rows, greedy, every
  row ``max_new_tokens`` long) against fastalign's engine on the same rows;
* ``--prompt-tokens 256``: each prompt prefixed by a fixed context so that it is about that many
  tokens long (multi-turn-like prompts, where re-computing the prompt costs most);
* ``--compare-with DIR``: the AISP and Best-of-N workload timed alternately (A B A B ...) in fresh
  processes with this checkout's fastalign and with the one in DIR (e.g. a ``git worktree`` of an
  older commit), medians and per-pair ratios;
* ``--compact``: the engine's compaction of ended rollouts (``compact_below=0.5``) against none, on a
  sampled decode of the AISP batch, alternately.

The workload uses only the public ``aisp_generate`` / ``bon_generate`` arguments that every release
has, so the same script times an older checkout. The responses are printed beside the numbers: the
reward is a similarity score, not a quality score. Numbers from a busy machine are provisional.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
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
# the context that --prompt-tokens repeats in front of each prompt (a multi-turn-like preamble)
CONTEXT = ("Earlier in this conversation we talked about daily habits, cooking at home, travelling on a "
           "budget, staying active through the winter and keeping in touch with friends who live far away. "
           "You gave practical, friendly suggestions and asked what I had already tried. ")
DEFAULTS = dict(n=8, iterations=4, max_new_tokens=48, prompts=4, sea_steps=20, seed=0, prompt_tokens=0)
# the AISP settings of the timed workload (the same for every checkout compared)
AISP_KW = dict(sigma=0.5, lam=0.02, alpha=0.999, normalize_rewards=False)


# ------------------------------------------------------------------------------------- timers
class _Timer:
    """Accumulates wall time of wrapped calls (synchronising CUDA so the time is the op's own)."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            _sync()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _sync()
                self.seconds += time.perf_counter() - t0
                self.calls += 1
        return timed


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextlib.contextmanager
def time_ops(names):
    """Time every call of ``fastalign.ops.<name>`` (the algorithms call them through the module)."""
    from fastalign import ops

    timer = _Timer()
    saved = {name: getattr(ops, name) for name in names if hasattr(ops, name)}
    try:
        for name, fn in saved.items():
            setattr(ops, name, timer.wrap(fn))
        yield timer
    finally:
        for name, fn in saved.items():
            setattr(ops, name, fn)


class ForwardTimes:
    """Wall time of a model's top-level forward passes, split into prefill (more than one position per
    row) and decode (one position per row); ``decode_rows`` counts rows x decode steps."""

    def __init__(self):
        self.prefill_s = self.decode_s = 0.0
        self.prefill_calls = self.decode_calls = self.decode_rows = 0


def _positions(args, kwargs) -> tuple[int, int]:
    """(rows, positions) of a forward's input ids or embeddings."""
    x = kwargs.get("input_ids")
    if x is None:
        x = kwargs.get("inputs_embeds")
    if x is None and args:
        x = args[0]
    return (int(x.shape[0]), int(x.shape[1])) if torch.is_tensor(x) and x.dim() >= 2 else (1, 1)


@contextlib.contextmanager
def time_forward(model):
    """Time every top-level forward pass of ``model`` (a :class:`ForwardTimes`)."""
    times, starts = ForwardTimes(), []

    def pre(module, args, kwargs):
        _sync()
        starts.append((time.perf_counter(), _positions(args, kwargs)))

    def post(module, args, kwargs, output):
        _sync()
        t0, (rows, positions) = starts.pop()
        if positions > 1:
            times.prefill_s += time.perf_counter() - t0
            times.prefill_calls += 1
        else:
            times.decode_s += time.perf_counter() - t0
            times.decode_calls += 1
            times.decode_rows += rows

    h1 = model.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = model.register_forward_hook(post, with_kwargs=True)
    try:
        yield times
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


@contextlib.contextmanager
def timed_method(model, reward, op_names):
    """Times one method call: yields a dict filled on exit with seconds and the breakdown."""
    row = {}
    reward.timer = _Timer()
    with time_ops(op_names) as ops_t, time_forward(model) as fwd:
        t0 = time.perf_counter()
        yield row
        _sync()
        total = time.perf_counter() - t0
    parts = {"prefill_s": fwd.prefill_s, "decode_forward_s": fwd.decode_s, "fused_ops_s": ops_t.seconds,
             "reward_s": reward.timer.seconds}
    row.update(seconds=total, **parts, other_s=total - sum(parts.values()), fused_op_calls=ops_t.calls,
               prefill_calls=fwd.prefill_calls, decode_steps=fwd.decode_calls, decode_rows=fwd.decode_rows,
               decode_tokens_per_s=fwd.decode_rows / fwd.decode_s if fwd.decode_s else None)


# ------------------------------------------------------------------------------------- workload
def make_prompts(count: int, prompt_tokens: int, tokenizer=None) -> list[str]:
    """The first ``count`` fixed prompts; with ``prompt_tokens`` each is prefixed by repeats of
    :data:`CONTEXT` until the prompt is at least that many tokens long."""
    if count > len(PROMPTS):
        from fastalign.errors import InputError  # bad input: exit 2 under the CLI
        raise InputError(f"--prompts: at most {len(PROMPTS)} fixed prompts, got {count}")
    prompts = PROMPTS[:count]
    if not prompt_tokens:
        return prompts
    per = len(tokenizer(CONTEXT)["input_ids"])
    context = CONTEXT * max(1, -(-prompt_tokens // per))
    return [context + p for p in prompts]


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _metric_means(results) -> dict:
    """Means of the text metrics the results carry (``result.metrics``), and of the objective and AISP's
    control health (:func:`fastalign.methods.results.health`), where they do."""
    from fastalign.methods.results import health

    numbers = [{**(getattr(r, "metrics", None) or {}), **health(r)} for r in results]
    keys = sorted({k for x in numbers for k in x})
    return {k: _mean([x.get(k) for x in numbers]) for k in keys}


def _responses(results, base=None) -> list[dict]:
    rows = []
    for i, r in enumerate(results):
        row = {"prompt": r.prompt, "response": r.response, "reward": r.reward,
               "metrics": getattr(r, "metrics", None) or {}}
        if base is not None:
            row.update(base=base[i].base_response, base_reward=base[i].base_reward)
        rows.append(row)
    return rows


def run_aisp(model, tokenizer, prompts, reward, *, n, iterations, max_new_tokens, seed, backend, progress):
    from fastalign.methods.aisp import aisp_generate

    with timed_method(model, reward, ["aisp_perturb", "aisp_update"]) as row:
        results = aisp_generate(model, tokenizer, prompts, reward, n=n, iterations=iterations, **AISP_KW,
                                max_new_tokens=max_new_tokens, seed=seed, backend=backend, progress=progress)
    row.update(mean_reward=_mean([r.reward for r in results]), reward_calls_per_prompt=results[0].reward_calls,
               metrics=_metric_means(results))
    return row, results


def run_bon(model, tokenizer, prompts, reward, *, samples, max_new_tokens, seed, progress):
    from fastalign.methods.bon import bon_generate

    with timed_method(model, reward, []) as row:
        results = bon_generate(model, tokenizer, prompts, reward, n=samples, temperature=1.0,
                               max_new_tokens=max_new_tokens, seed=seed, progress=progress)
    row.update(mean_reward=_mean([r.reward for r in results]), reward_calls_per_prompt=results[0].reward_calls,
               metrics=_metric_means(results))
    return row, results


def run_sea(model, tokenizer, prompts, reward, *, steps, max_new_tokens, seed, backend, progress):
    from fastalign.methods.sea import sea_generate

    with timed_method(model, reward, ["sea_step", "gaussian_perturb"]) as row:
        results = sea_generate(model, tokenizer, prompts, reward, steps=steps,
                               max_new_tokens=min(max_new_tokens, 32), seed=seed, backend=backend, progress=progress)
    row.update(mean_reward=_mean([r.reward for r in results]), mean_base_reward=_mean([r.base_reward for r in results]),
               metrics=_metric_means(results), responses=_responses(results, base=results))
    return row, results


def greedy_base(model, tokenizer, prompts, reward, *, max_new_tokens, seed):
    """The greedy response of each prompt and its reward (untimed; Best-of-1 with ``with_base``)."""
    from fastalign.methods.bon import bon_generate

    return bon_generate(model, tokenizer, prompts, reward, n=1, max_new_tokens=max_new_tokens, seed=seed,
                        with_base=True, progress=False)


# ------------------------------------------------------------------------------------- anchor
def anchor_generate(model, tokenizer, prompts, *, rows_per_prompt, max_new_tokens) -> dict:
    """``model.generate`` (greedy, dynamic cache) against fastalign's engine on the same
    ``len(prompts) * rows_per_prompt`` rows, every row ``max_new_tokens`` long (EOS ignored)."""
    from fastalign.methods import _common
    from fastalign import engine

    device = engine.input_device(model)
    encoded = _common.EncodedPrompts.from_texts(model, tokenizer, prompts, chat_template=None, device=device)
    ids = encoded.input_ids.repeat_interleave(rows_per_prompt, dim=0)
    mask = encoded.attention_mask.repeat_interleave(rows_per_prompt, dim=0)
    out = {}
    with engine.eval_mode(model), torch.no_grad():
        for _ in range(2):  # warm-up of both paths (first-call allocations), the timed pass second
            with time_forward(model) as fwd:
                t0 = time.perf_counter()
                model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                               min_new_tokens=max_new_tokens, pad_token_id=encoded.pad_id)
                out["generate"] = _anchor_row(time.perf_counter() - t0, fwd)
            with time_forward(model) as fwd:
                t0 = time.perf_counter()
                engine.decode(model, encoded.input_ids, encoded.attention_mask, max_new_tokens=max_new_tokens,
                              eos_ids=[], pad_id=encoded.pad_id, repeats=rows_per_prompt)
                out["fastalign"] = _anchor_row(time.perf_counter() - t0, fwd)
    out["rows"] = ids.shape[0]
    return out


def _anchor_row(seconds: float, fwd: ForwardTimes) -> dict:
    return {"seconds": seconds, "prefill_s": fwd.prefill_s, "decode_forward_s": fwd.decode_s,
            "decode_tokens_per_s": fwd.decode_rows / fwd.decode_s if fwd.decode_s else None,
            "tokens_per_s": fwd.decode_rows / seconds}


def compaction(model, tokenizer, prompts, *, rows_per_prompt, max_new_tokens, seed, repeats=3) -> dict:
    """Sampled decode (temperature 1) of the AISP batch with ``compact_below=0.5`` against none,
    alternately ``repeats`` times: medians and the tokens produced (equal when compaction is exact)."""
    from fastalign.methods import _common
    from fastalign import engine
    from fastalign.engine import sampling

    device = engine.input_device(model)
    encoded = _common.EncodedPrompts.from_texts(model, tokenizer, prompts, chat_template=None, device=device)
    times = {"none": [], "compact": []}
    tokens = {}
    with engine.eval_mode(model), torch.no_grad():
        encoded.prefill(model)
        for _ in range(repeats):
            for name, below in (("none", None), ("compact", 0.5)):
                seeds = torch.arange(len(prompts) * rows_per_prompt, device=device) + seed

                def choose(logits, step, active, seeds=seeds):  # the per-row stream: same draws either way
                    return sampling.sample_tokens(logits, seeds, torch.full_like(seeds, step))
                t0 = time.perf_counter()
                rollouts = encoded.decode(model, repeats=rows_per_prompt, max_new_tokens=max_new_tokens,
                                          choose=choose, compact_below=below)
                times[name].append(time.perf_counter() - t0)
                tokens[name] = rollouts.tokens
    same = tokens["none"].shape == tokens["compact"].shape and bool((tokens["none"] == tokens["compact"]).all())
    return {"none_s": statistics.median(times["none"]), "compact_s": statistics.median(times["compact"]),
            "speedup": statistics.median(times["none"]) / statistics.median(times["compact"]),
            "same_tokens": same, "repeats": repeats}


# ------------------------------------------------------------------------------------- the run
def run(*, n, iterations, max_new_tokens, prompts, sea_steps, seed, prompt_tokens=0, backend=None,
        methods=("aisp", "bon", "sea"), anchor=True, compact=False, progress=True) -> dict:
    from fastalign.scoring import models

    say = (lambda m: print(f"bench e2e: {m}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    say("loading the default model and reward")
    model, tokenizer = models.load_default()
    reward = _TimedReward(models.load_default_reward(TARGET))
    prompt_list = make_prompts(prompts, prompt_tokens, tokenizer)
    report = {"settings": dict(n=n, iterations=iterations, max_new_tokens=max_new_tokens, prompts=len(prompt_list),
                               prompt_tokens=prompt_tokens, sea_steps=sea_steps, seed=seed, target=TARGET,
                               threads=torch.get_num_threads(), backend=backend or "auto",
                               fastalign=os.path.dirname(os.path.dirname(models.__file__)))}
    common = dict(max_new_tokens=max_new_tokens, seed=seed, progress=progress)
    if "aisp" in methods:
        say(f"AISP n={n} x K={iterations} on {len(prompt_list)} prompts")
        report["aisp"], aisp = run_aisp(model, tokenizer, prompt_list, reward, n=n, iterations=iterations,
                                        backend=backend, **common)
    if "bon" in methods:
        say(f"Best-of-{n * iterations} on {len(prompt_list)} prompts")
        report["bon"], bon = run_bon(model, tokenizer, prompt_list, reward, samples=n * iterations, **common)
    if "aisp" in methods and "bon" in methods:
        base = greedy_base(model, tokenizer, prompt_list, reward, max_new_tokens=max_new_tokens, seed=seed)
        report["base"] = {"mean_reward": _mean([r.base_reward for r in base])}
        report["responses"] = [dict(a, bon=b["response"], bon_reward=b["reward"], bon_metrics=b["metrics"])
                               for a, b in zip(_responses(aisp, base=base), _responses(bon))]
    if "sea" in methods and sea_steps:
        say(f"SEA {sea_steps} steps on {len(prompt_list)} prompts")
        report["sea"], _ = run_sea(model, tokenizer, prompt_list, reward, steps=sea_steps, backend=backend, **common)
    if anchor:
        say(f"model.generate against the engine on {len(prompt_list) * n} rows")
        report["anchor"] = anchor_generate(model, tokenizer, prompt_list, rows_per_prompt=n,
                                           max_new_tokens=max_new_tokens)
    if compact:
        say("compaction of ended rollouts against none")
        report["compaction"] = compaction(model, tokenizer, prompt_list, rows_per_prompt=n,
                                          max_new_tokens=max_new_tokens, seed=seed)
    return report


# ------------------------------------------------------------------------------------- A/B
WORKLOAD_METHODS = ("aisp", "bon")


def compare(other: str, settings: dict, *, repeats: int, backend=None, progress=True) -> dict:
    """The AISP and Best-of-N workload timed alternately in fresh processes: this checkout's fastalign
    (``new``) and the one in the checkout ``other`` (``old``), ``repeats`` pairs. Medians, per-pair
    ratios old/new (> 1: this checkout is faster), and whether the two gave the same responses (Best-of-N's
    may differ where a batch shape changes a logit's rounding near a sampling boundary)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs = {"new": [], "old": []}
    for i in range(repeats):
        for name, root in (("new", here), ("old", os.path.abspath(other))):
            if progress:
                print(f"bench e2e: compare pair {i + 1}/{repeats}: {name} ({root})", file=sys.stderr, flush=True)
            runs[name].append(_workload_process(root, settings, backend))
    out = {"repeats": repeats, "old": os.path.abspath(other), "new": here}
    for method in WORKLOAD_METHODS:
        new_s = [r[method]["seconds"] for r in runs["new"]]
        old_s = [r[method]["seconds"] for r in runs["old"]]
        out[method] = {"new_s": new_s, "old_s": old_s, "new_median_s": statistics.median(new_s),
                       "old_median_s": statistics.median(old_s),
                       "ratios": [o / n for o, n in zip(old_s, new_s)],
                       "speedup": statistics.median(old_s) / statistics.median(new_s),
                       "same_responses": _method_responses(runs["new"][0], method) == _method_responses(runs["old"][0], method)}
    return out


def _method_responses(report: dict, method: str) -> list[str]:
    return [pair[WORKLOAD_METHODS.index(method)] for pair in report["responses"]]


def _workload_process(root: str, settings: dict, backend) -> dict:
    """One AISP + Best-of-N run of this script in a new process importing fastalign from ``root``."""
    cmd = [sys.executable, os.path.abspath(__file__), "--json", "--quiet", "--methods", ",".join(WORKLOAD_METHODS),
           "--no-anchor"] + [f"--{k.replace('_', '-')}={v}" for k, v in settings.items() if k != "sea_steps"]
    if backend:
        cmd += ["--backend", backend]
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"the workload failed with {root}:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout)
    report["responses"] = [(r["response"], r["bon"]) for r in report.get("responses", [])]
    return report


# ------------------------------------------------------------------------------------- report
def _breakdown(name: str, row: dict) -> str:
    total = row["seconds"]
    parts = [("prefill", "prefill_s"), ("decode forward", "decode_forward_s"), ("fused ops", "fused_ops_s"),
             ("reward", "reward_s"), ("other", "other_s")]
    text = ", ".join(f"{label} {row[key]:.2f} s ({100 * row[key] / total:.1f} %)" for label, key in parts)
    tps = row.get("decode_tokens_per_s")
    return f"{name} {total:.1f} s: {text}; decode {tps:.0f} rollout-tokens/s" if tps else f"{name} {total:.1f} s: {text}"


def _metrics_text(metrics: dict) -> str:
    return " ".join(f"{k}={v:.3g}" for k, v in metrics.items() if v is not None)


def format_report(report: dict) -> str:
    s = report["settings"]
    lines = [f"settings: {s['prompts']} prompts (prompt_tokens={s['prompt_tokens']}), n={s['n']}, "
             f"K={s['iterations']}, {s['max_new_tokens']} new tokens, {s['threads']} threads, backend {s['backend']}",
             "", "| method | reward calls / prompt | mean reward | wall-clock s | text metrics (means) |",
             "|---|---|---|---|---|"]
    if "base" in report:
        lines.append(f"| greedy base | 1 | {report['base']['mean_reward']:.3f} | - | |")
    labels = {"aisp": f"AISP n={s['n']} x K={s['iterations']}", "bon": f"Best-of-{s['n'] * s['iterations']}",
              "sea": f"SEA {s['sea_steps']} steps"}
    for key, label in labels.items():
        if key in report:
            r = report[key]
            calls = r.get("reward_calls_per_prompt", "-")
            if key == "sea":
                label += f" (sampled start {r['mean_base_reward']:.3f})"
            lines.append(f"| {label} | {calls} | {r['mean_reward']:.3f} | {r['seconds']:.1f} | {_metrics_text(r['metrics'])} |")
    lines.append("")
    lines += [_breakdown(labels[k], report[k]) for k in labels if k in report]
    if "aisp" in report and "bon" in report:
        lines.append(f"AISP / Best-of-N wall-clock at equal reward calls: {report['aisp']['seconds'] / report['bon']['seconds']:.2f}x")
    if "anchor" in report:
        a = report["anchor"]
        g, f = a["generate"], a["fastalign"]
        lines.append(f"anchor, {a['rows']} rows greedy: model.generate {g['seconds']:.1f} s "
                     f"(decode {g['decode_tokens_per_s']:.0f} tok/s), fastalign engine {f['seconds']:.1f} s "
                     f"(decode {f['decode_tokens_per_s']:.0f} tok/s): {g['seconds'] / f['seconds']:.2f}x")
    if "compaction" in report:
        c = report["compaction"]
        lines.append(f"compaction (sampled decode, median of {c['repeats']}): none {c['none_s']:.2f} s, "
                     f"compact_below=0.5 {c['compact_s']:.2f} s: {c['speedup']:.2f}x, same tokens: {c['same_tokens']}")
    if "compare" in report:
        lines += _compare_text(report["compare"])
    lines.append("")
    for r in report.get("responses", []):
        lines += [f"prompt: {r['prompt'][-80:]}",
                  f"  greedy ({r['base_reward']:.3f}): {r['base']}",
                  f"  AISP   ({r['reward']:.3f}): {r['response']}",
                  f"  BoN    ({r['bon_reward']:.3f}): {r['bon']}"]
    for r in report.get("sea", {}).get("responses", []):
        lines += [f"prompt: {r['prompt'][-80:]}", f"  SEA ({r['base_reward']:.3f} -> {r['reward']:.3f}): {r['response']}"]
    return "\n".join(lines)


def _compare_text(c: dict) -> list[str]:
    lines = [f"A/B against {c['old']} ({c['repeats']} pairs, alternating, fresh processes):"]
    for method in WORKLOAD_METHODS:
        m = c[method]
        ratios = ", ".join(f"{x:.2f}" for x in m["ratios"])
        same = f"; same responses: {m['same_responses']}"
        lines.append(f"  {method}: old {m['old_median_s']:.1f} s, new {m['new_median_s']:.1f} s (medians): "
                     f"{m['speedup']:.2f}x faster; per-pair ratios {ratios}{same}")
    return lines


# ------------------------------------------------------------------------------------- entry points
def _settings(args) -> dict:
    return {k: (getattr(args, k, None) if getattr(args, k, None) is not None else v) for k, v in DEFAULTS.items()}


def main_from_args(args) -> int:
    """``fastalign bench --e2e`` (args from the CLI parser)."""
    settings = _settings(args)
    progress = not getattr(args, "quiet", False)
    backend = getattr(args, "backend", None)
    methods = tuple((getattr(args, "methods", None) or "aisp,bon,sea").split(","))
    if getattr(args, "compare_with", None):
        report = {"settings": dict(settings, threads=torch.get_num_threads(), backend=backend or "auto")}
        report["compare"] = compare(args.compare_with, settings, repeats=getattr(args, "repeats", None) or 3,
                                    backend=backend, progress=progress)
    else:
        report = run(**settings, backend=backend, methods=methods, anchor=not getattr(args, "no_anchor", False),
                     compact=getattr(args, "compact", False), progress=progress)
    if getattr(args, "json", False):
        print(json.dumps(report, indent=1))
    elif "compare" in report:
        print("\n".join(_compare_text(report["compare"])))
    else:
        print(format_report(report))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The --e2e options beyond the shared ones (also used by ``fastalign bench``)."""
    p.add_argument("--prompt-tokens", type=int, default=None,
                   help="--e2e: prefix each prompt with a fixed context to about this many tokens")
    p.add_argument("--methods", default=None, help="--e2e: comma-separated subset of aisp,bon,sea")
    p.add_argument("--no-anchor", action="store_true", help="--e2e: skip the model.generate anchor")
    p.add_argument("--compact", action="store_true",
                   help="--e2e: also time the engine's compaction of ended rollouts against none")
    p.add_argument("--compare-with", metavar="DIR", default=None,
                   help="--e2e: time AISP and Best-of-N alternately against the fastalign in checkout DIR")
    p.add_argument("--repeats", type=int, default=None, help="--e2e --compare-with: pairs (default 3)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_e2e", description=__doc__.split("\n\n")[0])
    for key, value in DEFAULTS.items():
        if key != "prompt_tokens":
            p.add_argument(f"--{key.replace('_', '-')}", type=int, default=value)
    add_arguments(p)
    p.add_argument("--backend", default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return main_from_args(p.parse_args(argv))


if __name__ == "__main__":
    import importlib.util

    if importlib.util.find_spec("fastalign") is None:  # a checkout without an install (PYTHONPATH wins)
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
