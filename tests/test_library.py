"""The ops as ``torch.library`` operators: schemas, opcheck, torch.compile and CUDA graphs.

- Registration: ``torch.ops.fastalign.*`` exists once ``fastalign.ops`` is imported (the first use of any op); the schemas mark exactly
  ``udot`` and the Adam moments as mutated.
- ``torch.library.opcheck`` of every operator (schema, fake implementation, AOT dispatch with static
  and dynamic shapes) on CPU with the ``cpu`` and ``torch`` backends, over shapes and dtypes of the
  equivalence suite; on CUDA (GPU-marked) with the ``cuda`` and ``triton`` backends and the
  ``fastalign::*_triton`` triton_op variants.
- The path a traced call takes (metadata checks, then the operator), run eagerly through the
  dispatcher: bit-identical to the direct eager path for every backend that runs here, over the
  argument forms (int and tensor seeds and counters, non-contiguous in-place buffers, ``out=``).
- ``torch.compile(fullgraph=True)`` with Inductor on CPU of an AISP decode step (perturb with udot ->
  linear head -> argmax), an SEA Adam step and an AISP update: bit-identical to eager, in-place state
  included; the decode step compiled with ``dynamic=True`` runs two batch sizes from one graph.
- GPU-marked: a compiled decode step captured in a CUDA graph and replayed with new step and seed
  values matches eager, for the ``cuda`` and ``triton`` backends.

Inductor compiles on this CPU take tens of seconds each, so the module compiles three small graphs
once (module-scoped fixtures) and reuses them.
"""
from __future__ import annotations

import pytest
import torch

import fastalign as fa
from fastalign.ops import library
from fastalign import ops
from _util import FP32_TOL, assert_matches_reference, randn

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OP_NAMES = ("aisp_perturb", "aisp_update", "sea_step", "gaussian_perturb")
I64 = torch.int64


def _cpu_backends(include_triton: bool = False) -> list[str]:
    names = ["cpu", "torch"] + (["triton"] if include_triton else [])
    return [b for b in names if fa.available_backends("cpu").get(b) is None]


def _index(values, device):
    return torch.tensor(values, dtype=I64, device=device)


# ------------------------------------------------------------------------------------ registration
def test_every_op_is_a_fastalign_operator_with_its_mutations_in_the_schema():
    mutated = {}
    for name in OP_NAMES:
        op = getattr(torch.ops.fastalign, name).default
        assert op is library.OPS[name]
        mutated[name] = [a.name for a in op._schema.arguments if a.alias_info is not None and a.alias_info.is_write]
        assert [a.name for a in op._schema.arguments][-1] == "backend"
        assert not any(r.alias_info for r in op._schema.returns), "outputs are new tensors"
    assert mutated == {"aisp_perturb": ["udot"], "aisp_update": [], "sea_step": ["m", "v"], "gaussian_perturb": []}


def test_traced_backend_is_marked_the_way_assume_constant_result_marks():
    """fastalign.ops sets the attribute itself (the decorator would import torch._dynamo at import time);
    this fails if a torch release changes what the decorator does."""
    def probe():
        return 0

    assert torch.compiler.assume_constant_result(probe) is probe
    assert vars(probe) == {"_dynamo_marked_constant": True}
    assert ops._traced_backend._dynamo_marked_constant is True


# ------------------------------------------------------------------------------------------ opcheck
def _perturb_args(B, n, tau, d, dtype, device, backend, *, udot=True, active=True, step=1):
    h = randn((B, n, d), dtype, device, 1, scale=3.0)
    u = randn((B, tau, d), torch.float32, device, 2)
    act = (torch.arange(B * n, device=device).reshape(B, n) % 3) != 1 if active else None
    ud = torch.full((B, n), 0.25, device=device) if udot else None
    return (h, u, _index([7 + b for b in range(B)], device), _index([2], device), _index([step], device), ud, act,
            0.5, backend)


def _update_args(B, n, tau, d, device, backend, *, lengths=True, udot=False):
    u = randn((B, tau, d), torch.float32, device, 5)
    rewards = randn((B, n), torch.float32, device, 6, scale=0.1)
    lens = (torch.arange(B * n, device=device).reshape(B, n) * 7) % (tau + 1) if lengths else None
    ud = randn((B, n), torch.float32, device, 8) if udot else None
    return (u, rewards, _index([11 + b for b in range(B)], device), _index([3], device), lens, ud, 0.5, 0.3, 0.9,
            backend)


def _sea_args(shape, dtype, device, backend, *, clip="chain", adam=True):
    y = randn(shape, dtype, device, 14, scale=2.0)
    grad = randn(shape, dtype, device, 15, scale=0.5)
    m = randn(shape, torch.float32, device, 16, scale=0.1) if adam else None
    v = randn(shape, torch.float32, device, 17, scale=0.1).abs() if adam else None
    return (y, grad, _index([3 + b for b in range(shape[0])], device), _index([2], device), m, v, 0.1, 0.05,
            None if clip is None else 1.0, clip, "adam" if adam else "sgld", 0.9, 0.999, 1e-8, False, backend)


def _gauss_args(shape, dtype, device, backend):
    return (randn(shape, dtype, device, 22), _index([1 + b for b in range(shape[0])], device), _index([4], device),
            0.3, backend)


def _opcheck_cases(device, backend, dtypes):
    """(operator name, args) over a small subset of tests/test_equivalence.py's shapes and dtypes."""
    cases = []
    for dtype in dtypes:
        cases.append(("aisp_perturb", _perturb_args(3, 5, 4, 37, dtype, device, backend)))
        cases.append(("sea_step", _sea_args((3, 2, 37), dtype, device, backend, clip="row")))
        cases.append(("gaussian_perturb", _gauss_args((2, 1, 1029), dtype, device, backend)))
    cases += [
        ("aisp_perturb", _perturb_args(1, 1, 1, 1, torch.float32, device, backend, udot=False, active=False)),
        ("aisp_perturb", _perturb_args(2, 3, 2, 130, torch.float32, device, backend, step=2)),  # past the horizon
        ("aisp_update", _update_args(3, 4, 3, 37, device, backend)),
        ("aisp_update", _update_args(2, 5, 4, 130, device, backend, lengths=False, udot=True)),
        ("sea_step", _sea_args((2, 3, 1000), torch.float32, device, backend, clip=None, adam=False)),
        ("sea_step", _sea_args((1, 1, 1), torch.float32, device, backend, clip="global")),
        ("sea_step", _sea_args((2, 3, 40), torch.float32, device, backend, clip="chain", adam=False)),
        ("gaussian_perturb", _gauss_args((3, 2, 37), torch.float32, device, backend)),
    ]
    return cases


@pytest.mark.parametrize("backend", _cpu_backends())
def test_opcheck_on_cpu(backend):
    for name, args in _opcheck_cases("cpu", backend, (torch.float32, torch.bfloat16)):
        torch.library.opcheck(getattr(torch.ops.fastalign, name).default, args)


def _gpu_backend(name: str) -> str:
    reason = fa.available_backends("cuda").get(name, "not registered")
    if reason is not None:
        pytest.skip(f"backend {name!r}: {reason}")
    return name


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_opcheck_on_cuda(backend):
    _gpu_backend(backend)
    for name, args in _opcheck_cases("cuda", backend, (torch.float32, torch.float16, torch.bfloat16)):
        torch.library.opcheck(getattr(torch.ops.fastalign, name).default, args)


@pytest.mark.gpu
def test_opcheck_of_the_triton_op_variants_on_cuda():
    _gpu_backend("triton")
    variants = library.triton_ops()
    for name, args in _opcheck_cases("cuda", "triton", (torch.float32, torch.float16, torch.bfloat16)):
        args = args[:-1]  # no backend argument
        if name == "sea_step":
            args = args[:-1]  # nor error_if_nonfinite
        torch.library.opcheck(variants[name], args)


# ----------------------------------------------- the triton_op variants, traced without a GPU
_TRACE_TRITON_OPS = r'''
import json, torch
import fastalign
from fastalign.ops import library
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
from torch._subclasses.fake_tensor import FakeTensorMode
from torch._subclasses.functional_tensor import dispatch_functionalize
from torch.fx.experimental.proxy_tensor import make_fx

variants = library.triton_ops()
with FakeTensorMode():  # fake CUDA tensors: shapes and devices only, no GPU needed
    def t(*shape, dtype=torch.float32):
        return torch.empty(*shape, dtype=dtype, device="cuda")
    seed, one = t(2, dtype=torch.int64), t(1, dtype=torch.int64)
    calls = {
        "aisp_perturb": (variants["aisp_perturb"], (t(2, 3, 130, dtype=torch.float16), t(2, 4, 130), seed, one, one,
                                                    t(2, 3), t(2, 3, dtype=torch.bool), 0.5)),
        "aisp_update two passes": (variants["aisp_update"], (t(2, 4, 37), t(2, 3), seed, one,
                                                             t(2, 3, dtype=torch.int64), None, 0.5, 0.3, 0.9)),
        "aisp_update with udot": (variants["aisp_update"], (t(2, 4, 37), t(2, 3), seed, one, None, t(2, 3), 0.5, 0.3,
                                                            0.9)),
        "sea_step adam row": (variants["sea_step"], (t(2, 3, 37), t(2, 3, 37), seed, one, t(2, 3, 37), t(2, 3, 37),
                                                     0.1, 0.01, 1.0, "row", "adam", 0.9, 0.999, 1e-8)),
        "sea_step sgld no clip": (variants["sea_step"], (t(2, 3, 37, dtype=torch.bfloat16), t(2, 3, 37,
                                  dtype=torch.bfloat16), seed, one, None, None, 0.1, 0.01, None, None, "sgld", 0.9,
                                  0.999, 1e-8)),
        "gaussian_perturb": (variants["gaussian_perturb"], (t(2, 5, 7), seed, one, 0.3)),
    }
    report = {}
    for name, (op, args) in calls.items():
        outs = op(*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        gm = make_fx(dispatch_functionalize(lambda *a: op(*a)), tracing_mode="fake")(*args)
        kernels = [kernel_side_table.get_kernel(n.kwargs["kernel_idx"]).fn.__name__ for n in gm.graph.nodes
                   if n.op == "call_function" and "triton_kernel_wrapper" in str(n.target)]
        report[name] = dict(kernels=kernels, outputs=[[list(o.shape), str(o.dtype), o.device.type] for o in outs])
print(json.dumps(report))
'''


def test_triton_op_variants_trace_their_kernel_launches_without_a_gpu():
    """Each fastalign::*_triton operator, traced the way AOTAutograd does for Inductor (functionalized,
    on fake CUDA tensors), becomes one triton_kernel_wrapper node per kernel launch, with the fake
    outputs the real operator returns. Runs in a subprocess: under the Triton interpreter this test
    session uses, wrap_triton cannot trace."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _TRACE_TRITON_OPS], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    f32 = "torch.float32"
    assert report == {
        "aisp_perturb": dict(kernels=["aisp_perturb_kernel"], outputs=[[[2, 3, 130], "torch.float16", "cuda"]]),
        "aisp_update two passes": dict(kernels=["aisp_udot_kernel", "sum_partials_kernel", "aisp_apply_kernel"],
                                       outputs=[[[2, 4, 37], f32, "cuda"], [[2, 3], f32, "cuda"]]),
        "aisp_update with udot": dict(kernels=["aisp_apply_kernel"],
                                      outputs=[[[2, 4, 37], f32, "cuda"], [[2, 3], f32, "cuda"]]),
        "sea_step adam row": dict(kernels=["sea_norm_partial_kernel", "sum_partials_kernel", "sea_update_kernel"],
                                  outputs=[[[2, 3, 37], f32, "cuda"], [[2, 3], f32, "cuda"]]),
        "sea_step sgld no clip": dict(kernels=["sea_update_kernel"],
                                      outputs=[[[2, 3, 37], "torch.bfloat16", "cuda"], [[0], f32, "cuda"]]),
        "gaussian_perturb": dict(kernels=["gaussian_perturb_kernel"], outputs=[[[2, 5, 7], f32, "cuda"]]),
    }


# ------------------------------------------------------------- the traced path, dispatched eagerly
def _variants(device):
    """(op, kwargs factory) pairs: every argument form the traced path normalises differently."""
    B, n, tau, d = 2, 3, 4, 37
    L, V = 2, 37

    def perturb(seed, step, udot_layout, out):
        h = randn((B, n, d), torch.float32, device, 1)
        udot = torch.zeros(B, n, device=device) if udot_layout == "contiguous" else \
            torch.zeros(n, B, device=device).t() if udot_layout == "transposed" else None
        return dict(h=h, u=randn((B, tau, d), torch.float32, device, 2), sigma=0.5, seed=seed, iteration=3, step=step,
                    udot=udot, active=torch.tensor([[True, False, True], [True, True, False]], device=device),
                    out=torch.empty(B, d, n, device=device).transpose(1, 2) if out else None)

    def update(seed, lengths, udot, out):
        return dict(u=randn((B, tau, d), torch.float32, device, 5), rewards=randn((B, n), torch.float32, device, 6),
                    sigma=0.5, lam=0.3, alpha=0.9, seed=seed, iteration=_index([2], device),
                    lengths=torch.tensor([[4, 2, 0], [1, 4, 3]], device=device) if lengths else None,
                    udot=randn((B, n), torch.float32, device, 8) if udot else None,
                    out=torch.empty(B, d, tau, device=device).transpose(1, 2) if out else None)

    def sea(seed, step, clip, optimizer, transposed_state):
        shape = (B, L, V)
        state = None
        if optimizer == "adam":
            make = (lambda s: randn((B, V, L), torch.float32, device, s).abs().transpose(1, 2)) if transposed_state \
                else (lambda s: randn(shape, torch.float32, device, s).abs())
            state = (make(16), make(17))
        return dict(y=randn(shape, torch.float32, device, 14), grad=randn(shape, torch.float32, device, 15), lr=0.1,
                    noise_std=0.05, max_norm=None if clip is None else 1.0, clip=clip, seed=seed, step=step,
                    optimizer=optimizer, state=state)

    def gauss(seed, step):
        return dict(x=randn((B, L, V), torch.float32, device, 22), std=0.3, seed=seed, step=step)

    seed_t = _index([2**40, 5], device)
    return [
        (fa.aisp_perturb, lambda: perturb(7, 1, "contiguous", False)),
        (fa.aisp_perturb, lambda: perturb(seed_t, _index([2], device), "transposed", True)),
        (fa.aisp_perturb, lambda: perturb(torch.tensor(9), torch.tensor(0, dtype=torch.int32), None, False)),
        (fa.aisp_perturb, lambda: perturb(7, tau, "contiguous", True)),  # past the horizon
        (fa.aisp_update, lambda: update(11, False, False, False)),
        (fa.aisp_update, lambda: update(seed_t, True, True, True)),
        (fa.sea_step, lambda: sea(3, 0, "chain", "adam", True)),
        (fa.sea_step, lambda: sea(seed_t, _index([5], device), "row", "adam", False)),
        (fa.sea_step, lambda: sea(torch.tensor(4), 2, None, "sgld", False)),
        (fa.sea_step, lambda: sea(3, 1, "global", "sgld", False)),
        (fa.gaussian_perturb, lambda: gauss(1, 3)),
        (fa.gaussian_perturb, lambda: gauss(seed_t, _index([2**31 + 3], device))),
    ]


def _tensors(result, kwargs):
    """Every tensor a call returns or writes, in a fixed order."""
    outs = [t for t in (result if isinstance(result, tuple) else (result,)) if t is not None]
    written = [kwargs.get(k) for k in ("udot", "out")] + list(kwargs.get("state") or ())
    return outs + [t for t in written if t is not None]


@pytest.mark.parametrize("backend", _cpu_backends(include_triton=True))
def test_traced_path_dispatched_eagerly_equals_the_direct_path(backend):
    for op, make in _variants("cpu"):
        direct_kw, traced_kw = make(), make()
        direct_result = op(**direct_kw, backend=backend)
        with ops._through_operators():
            traced_result = op(**traced_kw, backend=backend)
        direct, traced = _tensors(direct_result, direct_kw), _tensors(traced_result, traced_kw)
        assert len(direct) == len(traced)
        for i, (a, b) in enumerate(zip(direct, traced)):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), f"{op.__name__} output {i}"
        if traced_kw.get("out") is not None:
            first = traced_result[0] if isinstance(traced_result, tuple) else traced_result
            assert first is traced_kw["out"], "out= is returned"


def test_traced_path_checks_metadata_but_not_values():
    """While tracing, a wrong shape/dtype still raises (naming the argument); values are not read, so a
    NaN reward or an out-of-range length is the caller's to avoid."""
    u, rewards = torch.zeros(2, 3, 5), torch.zeros(2, 4)
    with ops._through_operators():
        with pytest.raises(ValueError, match="lengths"):
            fa.aisp_update(u, rewards, sigma=0.5, lam=0.3, alpha=0.5, seed=0, iteration=0,
                           lengths=torch.zeros(2, 3, dtype=I64))
        with pytest.raises(TypeError, match="udot"):
            fa.aisp_perturb(torch.zeros(2, 4, 5), u, sigma=0.5, seed=0, iteration=0, step=0,
                            udot=torch.zeros(2, 4, dtype=torch.float16), backend="cpu")
        with pytest.raises(ValueError, match="compute_dtype"):
            fa.gaussian_perturb(u, std=0.1, seed=0, step=0, backend="torch", compute_dtype=torch.float64)
        with pytest.raises(ValueError, match="step"):
            fa.gaussian_perturb(u, std=0.1, seed=0, step=-1, backend="cpu")
        bad = torch.tensor([[0.0, float("nan"), 1.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
        u_new, weights = fa.aisp_update(u, bad, sigma=0.5, lam=0.3, alpha=1.0, seed=0, iteration=0, backend="cpu")
        assert bool(weights[0].isnan().all()) and bool(torch.isfinite(weights[1]).all())
    with pytest.raises(ValueError, match="rewards"):
        fa.aisp_update(u, bad, sigma=0.5, lam=0.3, alpha=1.0, seed=0, iteration=0, backend="cpu")


# ------------------------------------------------------------------------------- torch.compile (CPU)
class CountingInductor:
    """torch.compile backend: Inductor, counting the graphs it is handed (one per (re)compilation)."""

    def __init__(self):
        self.graphs = 0
        self._inductor = torch._dynamo.lookup_backend("inductor")

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return self._inductor(gm, example_inputs)


def decode_step(h, u, udot, head, seed, step):
    """One AISP decode step as a user writes it: perturb the pre-logits, project, pick greedy tokens."""
    z = fa.aisp_perturb(h, u, sigma=0.5, seed=seed, iteration=1, step=step, udot=udot)
    logits = torch.nn.functional.linear(z, head)
    return logits.argmax(dim=-1), z


@pytest.fixture(scope="module")
def compiled_decode_step():
    torch._dynamo.reset()
    backend = CountingInductor()
    return torch.compile(decode_step, fullgraph=True, dynamic=True, backend=backend), backend


def _decode_inputs(B, n=4, tau=3, d=48, vocab=40):
    h = randn((B, n, d), torch.float32, "cpu", 30 + B, scale=2.0)
    u = randn((B, tau, d), torch.float32, "cpu", 31)
    head = randn((vocab, d), torch.float32, "cpu", 32)
    return h, u, head, torch.arange(B, dtype=I64) * 5 + 3


def test_compiled_decode_step_is_bit_identical_to_eager(compiled_decode_step):
    compiled, _ = compiled_decode_step
    h, u, head, seed = _decode_inputs(B=2)
    udot_c, udot_e = torch.zeros(2, 4), torch.zeros(2, 4)
    for t in range(4):  # the last step is past the horizon (tau = 3): z = h, udot untouched
        step = torch.tensor([t])
        tokens_c, z_c = compiled(h, u, udot_c, head, seed, step)
        tokens_e, z_e = decode_step(h, u, udot_e, head, seed, step)
        assert torch.equal(z_c, z_e) and torch.equal(tokens_c, tokens_e) and torch.equal(udot_c, udot_e), t
    assert torch.equal(z_c, h) and bool((udot_c != 0).all())


def test_compiled_decode_step_runs_two_batch_sizes_without_recompiling(compiled_decode_step):
    compiled, backend = compiled_decode_step
    for B in (2, 3):
        h, u, head, seed = _decode_inputs(B)
        udot_c, udot_e = torch.zeros(B, 4), torch.zeros(B, 4)
        tokens_c, z_c = compiled(h, u, udot_c, head, seed + B, torch.tensor([1]))
        tokens_e, z_e = decode_step(h, u, udot_e, head, seed + B, torch.tensor([1]))
        assert torch.equal(z_c, z_e) and torch.equal(tokens_c, tokens_e) and torch.equal(udot_c, udot_e), B
    assert backend.graphs == 1


def sea_adam_step(y, grad, m, v, seed, step):
    return fa.sea_step(y, grad, lr=0.1, noise_std=0.01, max_norm=1.0, clip="row", seed=seed, step=step,
                       optimizer="adam", state=(m, v), betas=(0.9, 0.99))


def test_compiled_sea_adam_step_is_bit_identical_to_eager():
    compiled = torch.compile(sea_adam_step, fullgraph=True)
    shape = (2, 3, 257)
    y_c = y_e = randn(shape, torch.float32, "cpu", 40)
    state_c = (torch.zeros(shape), torch.zeros(shape))
    state_e = (torch.zeros(shape), torch.zeros(shape))
    seed = torch.tensor([4, 9])
    for t in range(3):
        grad = randn(shape, torch.float32, "cpu", 41 + t, scale=3.0)
        y_c, norm_c = compiled(y_c, grad, *state_c, seed, torch.tensor([t]))
        y_e, norm_e = sea_adam_step(y_e, grad, *state_e, seed, torch.tensor([t]))
        assert torch.equal(y_c, y_e) and torch.equal(norm_c, norm_e), t
        assert torch.equal(state_c[0], state_e[0]) and torch.equal(state_c[1], state_e[1]), t
    assert norm_c.shape == (2, 3) and bool((state_c[1] > 0).all())


def aisp_update_step(u, rewards, lengths, udot, seed, iteration):
    return fa.aisp_update(u, rewards, sigma=0.5, lam=0.3, alpha=0.9, seed=seed, iteration=iteration, lengths=lengths,
                          udot=udot)


def test_compiled_aisp_update_is_bit_identical_to_eager():
    compiled = torch.compile(aisp_update_step, fullgraph=True)
    B, n, tau, d = 2, 5, 4, 33
    u = randn((B, tau, d), torch.float32, "cpu", 50)
    lengths = torch.tensor([[4, 2, 0, 3, 4], [1, 4, 4, 2, 3]])
    seed = torch.tensor([6, 2**41])
    for it in range(2):
        rewards = randn((B, n), torch.float32, "cpu", 51 + it, scale=0.2)
        udot = randn((B, n), torch.float32, "cpu", 53 + it)
        iteration = torch.tensor([it])
        u_c, w_c = compiled(u, rewards, lengths, udot, seed, iteration)
        u_e, w_e = aisp_update_step(u, rewards, lengths, udot, seed, iteration)
        assert torch.equal(u_c, u_e) and torch.equal(w_c, w_e), it
        u = u_c
    assert not torch.equal(u_c, randn((B, tau, d), torch.float32, "cpu", 50))


def test_compiled_error_if_nonfinite_still_raises_at_run_time():
    def step(y, grad):
        return fa.sea_step(y, grad, lr=0.1, noise_std=0.0, max_norm=1.0, seed=0, step=0, error_if_nonfinite=True)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    y = torch.zeros(2, 2, 8)
    compiled(y, torch.ones(2, 2, 8))
    with pytest.raises(RuntimeError, match="non-finite"):
        compiled(y, torch.full((2, 2, 8), float("inf")))


# ------------------------------------------------------------------------------- CUDA graphs (GPU)
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_compiled_decode_step_captured_in_a_cuda_graph_replays_new_steps_and_seeds(backend):
    """Inductor-compiled decode step (the cuda op opaque; the triton kernels traced through triton_op)
    captured once in a CUDA graph; replays with new step and seed values in the captured tensors match
    eager calls: bit for bit for the cuda operator; for the triton kernels, which Inductor compiles and
    may contract mul+add into FMA, to the reference tolerance. Tokens are compared where eager's top-2
    logit margin is clear."""
    _gpu_backend(backend)
    dev = "cuda"
    B, n, tau, d, vocab = 2, 8, 3, 256, 96
    h = randn((B, n, d), torch.float32, dev, 60, scale=2.0)
    u = randn((B, tau, d), torch.float32, dev, 61)
    head = randn((vocab, d), torch.float32, dev, 62)
    seed = _index([5, 6], dev)
    step = _index([0], dev)
    udot = torch.zeros(B, n, device=dev)

    def step_fn(h, u, udot, head, seed, step):
        z = fa.aisp_perturb(h, u, sigma=0.5, seed=seed, iteration=2, step=step, udot=udot, backend=backend)
        logits = torch.nn.functional.linear(z, head)
        return logits.argmax(dim=-1), z

    compiled = torch.compile(step_fn, fullgraph=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # compile, build, autotune outside the capture
        for _ in range(2):
            compiled(h, u, torch.zeros(B, n, device=dev), head, seed, step)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        tokens_static, z_static = compiled(h, u, udot, head, seed, step)
    udot.zero_()

    udot_eager = torch.zeros(B, n, device=dev)
    for t, seeds in [(0, [5, 6]), (1, [2**40, 7]), (2, [5, 6]), (tau, [8, 9])]:
        step.copy_(_index([t], dev))
        seed.copy_(_index(seeds, dev))
        graph.replay()
        tokens_e, z_e = step_fn(h, u, udot_eager, head, seed.clone(), t)
        torch.cuda.synchronize()
        if backend == "cuda":
            assert torch.equal(z_static, z_e) and torch.equal(udot, udot_eager), t
        else:
            assert_matches_reference(z_static, z_e.double(), torch.float32, name=f"z step={t}")
            assert_matches_reference(udot, udot_eager.double(), torch.float32, name=f"udot step={t}",
                                     atol=FP32_TOL * d ** 0.5 * (t + 1))
        # the head's matmul may pick another cuBLAS algorithm when compiled: compare clear argmaxes
        top2 = torch.nn.functional.linear(z_e, head).topk(2, dim=-1).values
        clear = (top2[..., 0] - top2[..., 1]) > 1e-3
        assert bool(clear.any()) and torch.equal(tokens_static[clear], tokens_e[clear]), t
    assert torch.equal(z_static, h)
