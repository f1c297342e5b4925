"""CPU-backend specifics: the SIMD stream on every ISA path, determinism across runs and thread
counts, low-precision storage, and the just-in-time build's failure modes.

(Agreement of every op with the float64 reference is tests/test_equivalence.py, which runs the cpu
backend automatically once it is available.)
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fastalign as fa
from fastalign.backends import rng
from fastalign.backends import _jit, cpu
from _util import assert_matches_reference

_REASON = cpu.is_available("cpu")
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"cpu backend unavailable: {_REASON}")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ext():
    return cpu.extension()


def _isas() -> list[str]:
    order = ["portable", "avx2", "avx512"]
    return order[: order.index(_ext().best_isa()) + 1]


@pytest.fixture
def isa_restore():
    before = _ext().active_isa()
    yield
    _ext().set_isa(before)


@pytest.fixture
def threads_restore():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------ the stream
STREAM_CASES = [  # seed, first logical index (unaligned, around 2^32 blocks, large), count (ragged)
    (0, 0, 1000),
    (7, 3, 517),
    (2**40 + 11, 4 * (2**32 - 20) + 1, 301),  # the counter's low word wraps inside a vector
    (2**62 + 1, 2**60 + 2, 129),
]


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("seed,k0,count", STREAM_CASES)
def test_stream_matches_reference(isa, seed, k0, count):
    if isa not in _isas():
        pytest.skip(f"this CPU has no {isa} (best: {_ext().best_isa()})")
    k = torch.arange(k0, k0 + count, dtype=torch.int64)
    words = _ext().stream_words(seed, k0, count, isa)
    ref_words = torch.gather(rng.stream_words(seed, k >> 2), -1, (k & 3).unsqueeze(-1)).squeeze(-1)
    assert torch.equal(words, ref_words)
    normals = _ext().stream_normals(seed, k0, count, isa)
    err = (normals.double() - rng.normal(seed, k, dtype=torch.float64)).abs().max().item()
    assert err <= 2e-6, f"{isa}: max |normal - float64 reference| = {err:.3g}"


def test_simd_paths_agree_with_portable():
    isas = _isas()
    if len(isas) == 1:
        pytest.skip("no SIMD path on this CPU")
    seed, k0, count = 12345, 2**33 + 5, 200_003
    ref_w = _ext().stream_words(seed, k0, count, "portable")
    ref_n = _ext().stream_normals(seed, k0, count, "portable")
    for isa in isas[1:]:
        assert torch.equal(_ext().stream_words(seed, k0, count, isa), ref_w), isa
        err = (_ext().stream_normals(seed, k0, count, isa) - ref_n).abs().max().item()
        assert err <= 2e-6, f"{isa} vs portable: {err:.3g}"


def test_stream_statistics():
    n = _ext().stream_normals(3, 0, 1 << 20).double()
    assert abs(n.mean().item()) < 5e-3 and abs(n.std().item() - 1.0) < 5e-3
    assert abs((n**4).mean().item() - 3.0) < 0.05  # Gaussian kurtosis: the four lanes are used correctly


def test_isa_env_var_forces_portable():
    code = textwrap.dedent(
        """
        from fastalign.backends import cpu
        print(cpu.extension().active_isa())
        """
    )
    env = dict(os.environ, FASTALIGN_CPU_ISA="portable", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "portable"


# ------------------------------------------------------------------------------- the fused ops
def _run_all_ops(dtype=torch.float32):
    """Every op on fixed inputs; returns all outputs (several rows and chunks, ragged sizes)."""
    g = torch.Generator().manual_seed(0)
    B, n, tau, d = 2, 5, 3, 2 * 2048 + 37
    h = torch.randn(B, n, d, generator=g).to(dtype)
    u = torch.randn(B, tau, d, generator=g)
    udot = torch.zeros(B, n)
    z = fa.aisp_perturb(h, u, sigma=0.5, seed=11, iteration=2**31, step=1, udot=udot, backend="cpu")
    lengths = torch.tensor([[3, 1, 2, 0, 3], [2, 2, 3, 3, 1]])
    rewards = torch.randn(B, n, generator=g)
    u_new, w = fa.aisp_update(u, rewards, sigma=0.5, lam=0.3, alpha=0.9, seed=11, iteration=2**31,
                              lengths=lengths, backend="cpu")
    L, V = 3, 5003
    y = torch.randn(B, L, V, generator=g).to(dtype)
    grad = torch.randn(B, L, V, generator=g).to(dtype)
    outs = [z, udot, u_new, w]
    for clip in ("chain", "row", "global"):
        y1, norm = fa.sea_step(y, grad, lr=0.1, noise_std=0.05, max_norm=10.0, clip=clip, seed=5, step=3,
                               backend="cpu")
        outs += [y1, norm]
    state = (torch.zeros(B, L, V), torch.zeros(B, L, V))
    y2, _ = fa.sea_step(y, grad, lr=0.1, noise_std=0.05, max_norm=1.0, seed=5, step=3, optimizer="adam",
                        state=state, backend="cpu")
    outs += [y2, *state, fa.gaussian_perturb(y, std=0.3, seed=9, step=2**33, backend="cpu")]
    return outs


def _assert_identical(a, b, what):
    for i, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(x, y), f"{what}: output {i} differs"


def test_bit_identical_across_runs():
    _assert_identical(_run_all_ops(), _run_all_ops(), "repeat run")


def test_bit_identical_across_thread_counts(threads_restore):
    torch.set_num_threads(1)
    one = _run_all_ops()
    torch.set_num_threads(2)
    two = _run_all_ops()
    _assert_identical(one, two, "1 vs 2 threads")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_storage(dtype):
    g = torch.Generator().manual_seed(1)
    y = (torch.randn(2, 3, 777, generator=g) * 4).to(dtype)
    grad = torch.randn(2, 3, 777, generator=g).to(dtype)
    kw = dict(lr=0.1, noise_std=0.05, max_norm=5.0, seed=2, step=7)
    y_new, norm = fa.sea_step(y, grad, backend="cpu", **kw)
    y64, norm64 = fa.sea_step(y.double(), grad.double(), backend="torch", compute_dtype=torch.float64, **kw)
    assert y_new.dtype == dtype
    assert_matches_reference(y_new, y64, dtype, name="y_new")
    assert_matches_reference(norm, norm64, torch.float32, name="grad_norm")
    h = (torch.randn(2, 4, 333, generator=g) * 3).to(dtype)
    u = torch.randn(2, 2, 333, generator=g)
    z = fa.aisp_perturb(h, u, sigma=0.5, seed=4, iteration=1, step=1, backend="cpu")
    z64 = fa.aisp_perturb(h.double(), u.double(), sigma=0.5, seed=4, iteration=1, step=1, backend="torch",
                          compute_dtype=torch.float64)
    assert z.dtype == dtype
    assert_matches_reference(z, z64, dtype, name="z")


def test_ops_on_every_isa_path(isa_restore):
    results = {}
    for isa in _isas():
        assert _ext().set_isa(isa) == isa
        results[isa] = _run_all_ops()
    base = results["portable"]
    for isa, outs in results.items():
        for i, (x, ref) in enumerate(zip(outs, base)):
            assert torch.allclose(x, ref, rtol=1e-5, atol=2e-5), f"{isa} vs portable: output {i}"


# ------------------------------------------------------------------------------- the JIT build
TINY_SOURCE = textwrap.dedent(
    """
    #include <pybind11/pybind11.h>
    PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("answer", [] { return 42; }); }
    """
)


def test_cache_dir_layout(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTALIGN_CACHE_DIR", str(tmp_path / "c"))
    assert _jit.cache_dir().parent == tmp_path / "c"
    assert torch.__version__.split("+")[0] in _jit.cache_dir().name
    monkeypatch.delenv("FASTALIGN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _jit.cache_dir().parent == tmp_path / "xdg" / "fastalign"
    assert (_jit.csrc_dir() / "cpu" / "stream_simd.h").is_file()


def test_unusable_cache_dir_gives_clear_error(monkeypatch, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("FASTALIGN_CACHE_DIR", str(blocker / "cache"))
    src = tmp_path / "tiny.cpp"
    src.write_text(TINY_SOURCE)
    with pytest.raises(_jit.BuildError, match="not writable.*FASTALIGN_CACHE_DIR"):
        _jit.load("fastalign_tiny", [src])


def test_missing_compiler_gives_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", "fastalign-no-such-compiler")
    src = tmp_path / "tiny.cpp"
    src.write_text(TINY_SOURCE)
    with pytest.raises(_jit.BuildError, match="no C\\+\\+ compiler"):
        _jit.load("fastalign_tiny", [src])


def test_corrupt_cached_build_is_rebuilt(tmp_path):
    src = tmp_path / "tiny.cpp"
    src.write_text(TINY_SOURCE)
    code = textwrap.dedent(
        f"""
        from fastalign.backends import _jit
        m = _jit.load("fastalign_tiny", [{str(src)!r}])
        print(m.answer(), m.__file__)
        """
    )
    env = dict(os.environ, FASTALIGN_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def run():
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        answer, path = out.stdout.split()[-2:]
        assert answer == "42"
        return path

    so_path = run()
    with open(so_path, "wb") as f:  # an interrupted build: a truncated, invalid library
        f.write(b"\x7fELF garbage")
    assert run() == so_path
    with open(so_path, "rb") as f:
        assert len(f.read()) > 1000, "the corrupt library was not rebuilt"


def test_source_change_gives_new_build(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTALIGN_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "tiny.cpp"
    src.write_text(TINY_SOURCE)
    first = _jit._build_hash([src], [], ())
    src.write_text(TINY_SOURCE.replace("42", "43"))
    assert _jit._build_hash([src], [], ()) != first
