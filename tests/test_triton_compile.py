"""Every Triton kernel compiles to a real GPU binary (cubin for sm_80 and sm_90), without a GPU.

The interpreter tests check the kernels' math on CPU; this checks that the same source also goes
through Triton's whole GPU pipeline (TTIR -> TTGIR -> LLVM -> PTX -> ptxas), for each storage dtype and
each constexpr variant the launchers use, with the launchers' options (4 warps, no FP contraction),
and that ``ptxas -v`` (the one that ships with Triton) reports zero spill stores and loads. (Some
kernels have a 32-byte stack frame without spills: the call frame of the int64 division routine.) Compilation runs in a subprocess without ``TRITON_INTERPRET`` (the test
session sets it before importing Triton).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = r'''
import json, os, re, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fastalign.kernels import _common, aisp_perturb, aisp_update, gaussian_perturb, sea_step

I64, F32 = "*i64", "*fp32"
STORAGE = ["*fp32", "*fp16", "*bf16"]
ELEMENTWISE = dict(num_warps=4, enable_fp_fusion=False)
WINDOW = dict(ELEMENTWISE, num_warps=_common.WINDOW_NUM_WARPS)  # the kernels drawing GPU_BLOCK_C blocks per tile

def cases():
    for s in STORAGE:
        for has_udot in (True, False):
            yield (aisp_perturb.aisp_perturb_kernel, s,
                   dict(h_ptr=s, u_ptr=F32, out_ptr=s, udot_ptr=F32, active_ptr="*i1", seed_ptr=I64, it_ptr=I64,
                        step_ptr=I64, n="i64", tau="i64", d="i64", sigma="fp32"),
                   dict(HAS_UDOT=has_udot, HAS_ACTIVE=has_udot, ALIGNED=False, BLOCK_C=_common.GPU_BLOCK_C),
                   WINDOW)
        yield (gaussian_perturb.gaussian_perturb_kernel, s,
               dict(x_ptr=s, out_ptr=s, seed_ptr=I64, step_ptr=I64, N="i64", std="fp32"),
               dict(ALIGNED=False, BLOCK_C=_common.GPU_BLOCK_C), WINDOW)
        yield (sea_step.sea_norm_partial_kernel, s, dict(grad_ptr=s, partial_ptr=F32, M="i64", P="i64"),
               dict(BLOCK=sea_step.NORM_BLOCK_GPU, TILES=sea_step.NORM_TILES_GPU), dict(num_warps=4))
        for adam, row32 in ((True, True), (False, True), (False, False)):
            args = dict(y_ptr=s, grad_ptr=s, out_ptr=s, norm_ptr=F32, m_ptr=F32, v_ptr=F32, seed_ptr=I64,
                        step_ptr=I64, L="i64", V="i64", N="i64")
            args.update({k: "fp32" for k in ("max_norm", "lr", "noise_std", "beta1", "beta2", "one_minus_beta1",
                                             "one_minus_beta2", "log_beta1", "log_beta2", "adam_eps")})
            yield (sea_step.sea_update_kernel, s, args,
                   dict(CLIP=True, GROUP=1, ADAM=adam, HAS_NOISE=True, ALIGNED=False, ROW32=row32,
                        BLOCK_C=_common.GPU_BLOCK_C),
                   WINDOW)
    yield (aisp_update.aisp_udot_kernel, "*fp32",
           dict(u_ptr=F32, lengths_ptr=I64, partial_ptr=F32, seed_ptr=I64, it_ptr=I64, n="i64", tau="i64", d="i64",
                P="i64", TILES_PER_PROG="i64"),
           dict(ALIGNED=False, BLOCK_C=_common.GPU_BLOCK_C), dict(num_warps=4))
    yield (aisp_update.aisp_apply_kernel, "*fp32",
           dict(u_ptr=F32, weights_ptr=F32, lengths_ptr=I64, out_ptr=F32, seed_ptr=I64, it_ptr=I64, n="i64",
                tau="i64", d="i64", numel="i64", sigma="fp32"),
           dict(ALIGNED=False, BLOCK_C=aisp_update.GPU_APPLY_BLOCK_C), ELEMENTWISE)
    yield (_common.sum_partials_kernel, "*fp32", dict(partial_ptr=F32, out_ptr=F32, P="i64"),
           dict(SQRT=True, BLOCK=1024), dict(num_warps=4))

bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
ptxas_tools = [os.path.join(bindir, name) for name in ("ptxas-blackwell", "ptxas") if os.path.exists(os.path.join(bindir, name))]
tmp = tempfile.mkdtemp()
rows = []
# Triton specialises an int argument as i32 when it fits and i64 otherwise: compile both
every = [(k, s, a, c, o) for k, s, a, c, o in cases()]
every += [(k, s, {n: ("i32" if t == "i64" else t) for n, t in a.items()}, c, o) for k, s, a, c, o in every]
for kernel, storage, args, constexprs, options in every:
    assert list(args) + list(constexprs) == list(kernel.arg_names), (kernel.fn.__name__, kernel.arg_names)
    signature = dict(args, **{k: "constexpr" for k in constexprs})
    for arch in (80, 90):
        compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                                  target=GPUTarget("cuda", arch, 32), options=options)
        ptx = compiled.asm["ptx"]
        gpu = re.search(r"^\.target\s+(sm_\w+)", ptx, re.M).group(1)
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        for tool in ptxas_tools:  # the first that accepts this PTX version
            proc = subprocess.run([tool, "-v", "--gpu-name", gpu, path, "-o", path + ".cubin"], capture_output=True, text=True)
            if proc.returncode == 0:
                break
        else:
            raise SystemExit(f"no ptxas accepted the PTX of {kernel.fn.__name__}: {proc.stderr}")
        report = proc.stdout + proc.stderr
        spills = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", report)
        regs = re.search(r"Used (\d+) registers", report)
        rows.append(dict(kernel=kernel.fn.__name__, storage=storage, constexprs=constexprs, arch=arch, gpu=gpu,
                         ints="i32" if "i32" in args.values() else "i64",
                         cubin_bytes=len(compiled.asm["cubin"]), regs=int(regs.group(1)),
                         stack=int(spills.group(1)), spill_stores=int(spills.group(2)),
                         spill_loads=int(spills.group(3)), warnings=[l for l in report.splitlines() if "warning" in l]))
print(json.dumps(rows))
'''


@pytest.fixture(scope="module")
def compiled() -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0 and "ptxas" in proc.stderr and "not found" in proc.stderr:
        pytest.skip("this Triton install has no ptxas")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_kernel_compiles_for_sm80_and_sm90(compiled):
    kernels = {"aisp_perturb_kernel", "aisp_udot_kernel", "aisp_apply_kernel", "gaussian_perturb_kernel",
               "sea_norm_partial_kernel", "sea_update_kernel", "sum_partials_kernel"}
    assert {r["kernel"] for r in compiled} == kernels
    for arch in (80, 90):
        assert {r["kernel"] for r in compiled if r["arch"] == arch} == kernels
    assert {r["storage"] for r in compiled if r["kernel"] == "sea_update_kernel"} == {"*fp32", "*fp16", "*bf16"}
    assert all(r["cubin_bytes"] > 1000 for r in compiled)


def test_no_kernel_spills_and_no_ptxas_warnings(compiled):
    spilled = [r for r in compiled if r["spill_stores"] or r["spill_loads"]]
    assert not spilled, spilled
    assert not [r for r in compiled if r["warnings"]]
    assert all(0 < r["regs"] <= 255 for r in compiled)
    assert {r["gpu"] for r in compiled} == {"sm_80", "sm_90a"}
    assert {r["ints"] for r in compiled} == {"i32", "i64"}
