"""Decode-step benchmark on a randomly initialised model built from a real config (no download: timing
needs no trained weights): fastalign's engine eager vs compiled (static cache + ``torch.compile``, a CUDA
graph on a GPU) against ``model.generate`` at the same batch, the weight-read floor, and AISP against
Best-of-N at equal samples with the share of the fused ops.

* ``--config``: ``llama-3.2-1b`` (hidden 2048, 16 layers, 32/8 heads, vocab 128256, tied head),
  ``smollm2-135m`` (576, 30 layers, 9/3 heads, vocab 49152, tied) or ``tiny`` (a smoke test).
* Weight-read floor of one step: the parameter bytes divided by the device's copy bandwidth measured in
  the same run (bytes read + written per second of ``dst.copy_(src)``), i.e. the time to read every
  weight once. A decode step at a small batch is bound by it on a GPU.
* Step times are medians over the timed decode calls (``--repeats``), prefill excluded; the compiled
  step's first call (compilation, graph capture) is reported on its own.
* AISP (``--n`` rollouts x ``--iterations``) and Best-of-(n*K) on ``--batch / n`` prompts with a
  synthetic reward over the decoded word ids (the model is random: the text is not meaningful), both
  through the same engine; the fused ops (``aisp_perturb`` + ``aisp_update``) are timed separately in an
  eager run (synchronising around each call) to give their share.

Run ``python bench/bench_decode.py --help``; ``--dry-run`` runs the tiny config on the CPU in seconds.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ops  # noqa: E402  (time_fn, copy_bandwidth_gbps)
from bench_e2e import time_ops  # noqa: E402

CONFIGS = {
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                         max_position_embeddings=4096, rope_theta=500000.0, tie_word_embeddings=True),
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
                         max_position_embeddings=2048, rope_theta=100000.0, tie_word_embeddings=True),
    "tiny": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=512,
                 max_position_embeddings=512, tie_word_embeddings=True),
}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_model(name: str, dtype: torch.dtype, device: torch.device):
    """A random model of config ``name`` (seed 0) and a word tokenizer over its vocabulary (``w0 w1 ...``)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(CONFIGS[name])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, 1
    return model.eval(), word_tokenizer(config.vocab_size)


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer whose token i is ``w{i}`` (0: pad, 1: eos), so responses decode to text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i for i in range(2, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", padding_side="left")


def even_word_reward(prompts, responses):
    """A synthetic reward: the fraction of even-numbered words in the response."""
    out = []
    for r in responses:
        words = [w for w in r.split() if w[1:].isdigit()]
        out.append(sum(int(w[1:]) % 2 == 0 for w in words) / max(1, len(words)))
    return torch.tensor(out, dtype=torch.float32)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def parameter_bytes(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:  # a tied head counts once
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def step_times(model, ids, mask, T: int, device, repeats: int, quick: bool) -> dict:
    """Median seconds per decode step: fastalign eager, fastalign compiled (and its first call), and
    ``model.generate`` (dynamic and static cache), all greedy over T tokens at the batch of ``ids``."""
    from fastalign import engine

    out = {}
    pc = engine.prefill(model, ids, mask)
    out["prefill_s"] = _timed(lambda: engine.prefill(model, ids, mask), device)
    run = dict(max_new_tokens=T, eos_ids=[], pad_id=0, prompt_cache=pc)  # no EOS: every run is T steps
    out["eager_step_s"] = statistics.median(
        _timed(lambda: engine.decode(model, ids, mask, **run), device) for _ in range(repeats)) / T
    try:
        with engine.CompiledStep(model, pc, repeats=1, max_new_tokens=T) as step:
            out["compiled_first_call_s"] = _timed(lambda: engine.decode(model, ids, mask, compiled=step, **run), device)
            out["compiled_step_s"] = statistics.median(
                _timed(lambda: engine.decode(model, ids, mask, compiled=step, **run), device)
                for _ in range(repeats)) / T
    except Exception as exc:  # noqa: BLE001 - report, keep measuring the rest
        out["compiled_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    for key, extra in (("generate", {}), ("generate_static", {"cache_implementation": "static"})):
        if quick and extra:
            continue
        out[f"{key}_step_s"] = _generate_step_s(model, ids, mask, T, device, repeats, **extra)
    return out


@torch.no_grad()
def _generate_step_s(model, ids, mask, T: int, device, repeats: int, **extra) -> float:
    """Seconds per decode step of greedy ``model.generate``: (time for T tokens - time for 1) / (T - 1),
    so its prefill (which also yields the first token) is not counted."""
    def gen(tokens):
        return lambda: model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=tokens,
                                      min_new_tokens=tokens, do_sample=False, pad_token_id=0, eos_token_id=1, **extra)

    gen(T)()  # warm-up (a static cache is compiled or allocated here)
    full = statistics.median(_timed(gen(T), device) for _ in range(repeats))
    first = statistics.median(_timed(gen(1), device) for _ in range(repeats))
    return (full - first) / max(1, T - 1)


def methods(model, tok, prompts, n, iterations, T, device, compile: bool) -> dict:
    """Wall-clock of AISP n x K and Best-of-(n*K) on the same prompts, and the fused ops' share of AISP."""
    from fastalign.methods.aisp import aisp_generate
    from fastalign.methods.bon import bon_generate

    common = dict(max_new_tokens=T, seed=0, progress=False, chat_template=False, compile=compile)
    out = {}
    out["aisp_s"] = _timed(lambda: aisp_generate(model, tok, prompts, even_word_reward, n=n, iterations=iterations,
                                                 lam=0.05, **common), device)
    out["bon_s"] = _timed(lambda: bon_generate(model, tok, prompts, even_word_reward, n=n * iterations,
                                               batch_size=n * len(prompts), **common), device)
    with time_ops(["aisp_perturb", "aisp_update"]) as ops_timer:
        eager_s = _timed(lambda: aisp_generate(model, tok, prompts, even_word_reward, n=n, iterations=iterations,
                                               lam=0.05, **dict(common, compile=False)), device)
    out["fused_ops_share"] = ops_timer.seconds / eager_s
    out["fused_op_calls"] = ops_timer.calls
    return out


def run(config="smollm2-135m", *, dtype="float32", device=None, batch=32, prompt_len=64, new_tokens=64, n=8,
        iterations=4, repeats=3, compile=True, quick=False, progress=True) -> dict:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    say = (lambda m: print(f"bench decode: {m}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    say(f"building a random {config} ({dtype}) on {device}")
    model, tok = build_model(config, _DTYPES[dtype], device)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, model.config.vocab_size, (batch, prompt_len), generator=g).to(device)
    mask = torch.ones_like(ids)
    report = {"settings": dict(config=config, dtype=dtype, device=str(device), batch=batch, prompt_len=prompt_len,
                               new_tokens=new_tokens, n=n, iterations=iterations, repeats=repeats,
                               threads=torch.get_num_threads(), torch=torch.__version__,
                               gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None)}
    weights = parameter_bytes(model)
    copy_gbps = bench_ops.copy_bandwidth_gbps(device, quick=quick)
    report["floor"] = dict(parameter_bytes=weights, copy_gbps=copy_gbps, weight_read_s=weights / (copy_gbps * 1e9))
    say("decode steps: eager, compiled, generate")
    steps = step_times(model, ids, mask, new_tokens, device, repeats, quick)
    for base in ("eager", "compiled", "generate", "generate_static"):
        if f"{base}_step_s" in steps:
            steps[f"{base}_step_over_floor"] = steps[f"{base}_step_s"] / report["floor"]["weight_read_s"]
            steps[f"{base}_tokens_per_s"] = batch / steps[f"{base}_step_s"]
    report["steps"] = steps
    say(f"AISP n={n} x K={iterations} vs Best-of-{n * iterations} on {batch // n} prompts")
    prompts = [" ".join(f"w{int(t)}" for t in row) for row in ids[: max(1, batch // n)].tolist()]
    report["methods"] = methods(model, tok, prompts, n, iterations, new_tokens, device, compile and not quick)
    report["methods"]["aisp_over_bon"] = report["methods"]["aisp_s"] / report["methods"]["bon_s"]
    return report


def format_report(r: dict) -> str:
    s, f, st, m = r["settings"], r["floor"], r["steps"], r["methods"]
    lines = [f"{s['config']} {s['dtype']} on {s['gpu'] or s['device']} (torch {s['torch']}, {s['threads']} threads), "
             f"batch {s['batch']}, prompt {s['prompt_len']}, {s['new_tokens']} new tokens",
             f"weights {f['parameter_bytes'] / 1e9:.3f} GB, copy bandwidth {f['copy_gbps']:.0f} GB/s, "
             f"weight-read floor {f['weight_read_s'] * 1e3:.3f} ms/step", "",
             "| decode step | ms | x floor | tokens/s |", "|---|---:|---:|---:|"]
    for key, label in (("eager", "fastalign eager"), ("compiled", "fastalign compiled"),
                       ("generate", "model.generate"), ("generate_static", "model.generate (static cache)")):
        if f"{key}_step_s" in st:
            lines.append(f"| {label} | {st[f'{key}_step_s'] * 1e3:.3f} | {st[f'{key}_step_over_floor']:.2f} | "
                         f"{st[f'{key}_tokens_per_s']:.0f} |")
    if "compiled_first_call_s" in st:
        lines.append(f"\ncompiled step: first call (compile/capture) {st['compiled_first_call_s']:.1f} s")
    if "compiled_error" in st:
        lines.append(f"\ncompiled step failed: {st['compiled_error']}")
    lines.append(f"\nAISP n={s['n']} x K={s['iterations']}: {m['aisp_s']:.2f} s; Best-of-{s['n'] * s['iterations']}: "
                 f"{m['bon_s']:.2f} s (AISP/BoN {m['aisp_over_bon']:.2f}); fused ops {100 * m['fused_ops_share']:.2f} % "
                 f"of an eager AISP run ({m['fused_op_calls']} calls)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_decode", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="smollm2-135m")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="float32")
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="AISP/BoN eager only (the step table still compiles)")
    p.add_argument("--dry-run", action="store_true", help="tiny config, CPU, short: checks the script runs")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    kw = dict(config=args.config, dtype=args.dtype, device=args.device, batch=args.batch, prompt_len=args.prompt_len,
              new_tokens=args.new_tokens, n=args.n, iterations=args.iterations, repeats=args.repeats,
              compile=not args.no_compile)
    if args.dry_run:
        kw.update(config="tiny", dtype="float32", device="cpu", batch=8, prompt_len=8, new_tokens=6, n=4,
                  iterations=2, repeats=1, quick=True)
    report = run(**kw)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
