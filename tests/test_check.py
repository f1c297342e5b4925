"""`fastalign check`: the tolerance rule, the rows it produces, and that it catches a wrong backend."""
import json
import types

import pytest
import torch

from fastalign import backends as registry
from fastalign.ops import check
from fastalign.backends import torch_ref


def test_fp32_rule_is_1e5_absolute_plus_relative():
    ref = torch.tensor([0.0, 1.0, 100.0], dtype=torch.float64)
    ok_out = (ref + torch.tensor([0.9e-5, 1.9e-5, 100.9e-5], dtype=torch.float64)).float()
    bad_out = (ref + torch.tensor([0.0, 0.0, 2e-3], dtype=torch.float64)).float()
    assert check.tolerance_ok(ok_out, ref, torch.float32)[2]
    abs_err, rel_err, ok = check.tolerance_ok(bad_out, ref, torch.float32)
    assert not ok and abs_err == pytest.approx(2e-3, rel=1e-3) and rel_err == pytest.approx(2e-5, rel=1e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_rule_is_one_ulp_of_the_storage_dtype(dtype):
    # references exactly representable in dtype, so that "one ulp off" is exactly one ulp of error
    ref = torch.tensor([1.0, -3.0, 1000.0, 0.0123], dtype=torch.float64).to(dtype).double()
    stored = ref.to(dtype)
    ulp = check._ulp(ref, dtype)
    one_up = (stored.double() + ulp).to(dtype)
    three_up = (stored.double() + 3 * ulp).to(dtype)
    assert check.tolerance_ok(stored, ref, dtype)[2]
    assert check.tolerance_ok(one_up, ref, dtype)[2]
    assert not check.tolerance_ok(three_up, ref, dtype)[2]


def test_nonfinite_and_shape_mismatch_fail():
    ref = torch.zeros(3, dtype=torch.float64)
    assert not check.tolerance_ok(torch.tensor([0.0, float("nan"), 0.0]), ref, torch.float32)[2]
    assert not check.tolerance_ok(torch.zeros(4), ref, torch.float32)[2]


def test_reference_backend_passes_every_quick_case_in_every_dtype():
    rows = check.run_checks("torch", quick=True)
    assert rows and all(r.ok for r in rows), [r for r in rows if not r.ok]
    ops = {r.op for r in rows}
    assert {"aisp_perturb", "aisp_perturb+udot", "aisp_update", "aisp_update+udot", "gaussian_perturb"} <= ops
    assert any(op.startswith("sea_step:adam") for op in ops) and any(op.startswith("sea_step:sgld") for op in ops)
    assert {r.dtype for r in rows} == {"float32", "float16", "bfloat16"}
    assert {r.backend for r in rows} == {"torch"}
    row = rows[0].as_json()
    assert list(row) == ["op", "backend", "dtype", "shape", "max_abs_err", "max_rel_err", "ok"]
    json.dumps([r.as_json() for r in rows])  # strict JSON


def test_full_cases_cover_odd_shapes_big_offsets_and_every_clip_mode():
    cs = check.cases(quick=False)
    ops = {c.op for c in cs}
    assert {"sea_step:sgld/chain", "sea_step:sgld/row", "sea_step:sgld/global", "sea_step:sgld/None",
            "sea_step:adam/chain"} <= ops
    shapes = " | ".join(c.shape for c in cs)
    assert "V=50257" in shapes and "d=1 " in shapes and "tau=1 " in shapes and "n=1 " in shapes
    assert any("it=" in c.shape for c in cs)  # AISP offsets past 2^32


def _install_fake_backend(monkeypatch, name, **overrides):
    module = types.ModuleType(f"fastalign_test_{name}")
    for fn in ("aisp_perturb", "aisp_udot", "aisp_apply", "sea_norm", "sea_update", "gaussian_perturb"):
        setattr(module, fn, getattr(torch_ref, fn))
    module.is_available = lambda device_type: None
    for key, value in overrides.items():
        setattr(module, key, value)
    monkeypatch.setitem(registry._REGISTRY, name, registry.BackendSpec(name, ("cpu",), module.__name__))
    monkeypatch.setitem(registry._MODULES, name, module)
    registry._reset_cache()
    monkeypatch.setattr(registry, "_AVAILABILITY", {})
    return module


def test_a_backend_that_is_off_by_a_little_fails_and_one_that_crashes_fails_with_the_reason(monkeypatch):
    def sea_update_off(y, grad, out, **kw):
        torch_ref.sea_update(y, grad, out, **kw)
        out.add_(3e-4)  # far below what a user would notice, far above the tolerance

    def gaussian_crash(x, out, **kw):
        raise RuntimeError("kernel launch failed")

    _install_fake_backend(monkeypatch, "fake", sea_update=sea_update_off, gaussian_perturb=gaussian_crash)
    rows = check.run_checks("fake", quick=True, dtypes=("float32",))
    by_op = {r.op: r for r in rows}
    assert by_op["aisp_perturb+udot"].ok and by_op["aisp_update"].ok
    sea = by_op["sea_step:sgld/chain"]
    assert not sea.ok and sea.max_abs_err == pytest.approx(3e-4, rel=0.05)
    crash = by_op["gaussian_perturb"]
    assert not crash.ok and "kernel launch failed" in crash.error
    assert crash.as_json()["max_abs_err"] is None
    assert check.format_table(rows).count("FAIL") == 3  # sgld/chain, adam/row, gaussian_perturb


def test_main_exit_status(monkeypatch, capsys):
    assert check.main("torch", quick=True) == 0
    assert "all passed" in capsys.readouterr().out
    _install_fake_backend(monkeypatch, "fake2", sea_norm=lambda grad, **kw: torch_ref.sea_norm(grad, **kw) * 2)
    assert check.main("fake2", quick=True, as_json=True) == 1
    rows = json.loads(capsys.readouterr().out)
    assert any(not r["ok"] for r in rows) and any(r["ok"] for r in rows)


def test_unknown_and_unavailable_backends():
    with pytest.raises(ValueError, match="--backend"):
        check.run_checks("nope", quick=True)
    if not torch.cuda.is_available():
        with pytest.raises(registry.BackendUnavailableError, match="cuda"):
            check.run_checks("cuda", quick=True)
