"""The shared per-element math of csrc/include/fastalign, compiled by g++ on the host (no torch).

csrc/tests/test_stream.cpp checks the Random123 known-answer vectors of Philox4x32 itself (its exit
status) and prints ~300 stream words/uniforms/normals, which must equal fastalign.backends.rng: words and
uniforms bit for bit, normals (float32 Box-Muller with libm, and with the polynomials of
box_muller_poly.h that the CPU backend uses) within 2e-6 of the float64 evaluation.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest
import torch

from fastalign.backends import rng
from fastalign.backends._jit import csrc_dir

CXX = os.environ.get("CXX", "g++")
pytestmark = pytest.mark.skipif(shutil.which(CXX) is None, reason=f"no C++ compiler ({CXX}) on PATH")


@pytest.fixture(scope="module")
def stream_output(tmp_path_factory) -> str:
    exe = tmp_path_factory.mktemp("cpp_header") / "test_stream"
    src = csrc_dir() / "tests" / "test_stream.cpp"
    build = subprocess.run(
        [CXX, "-O2", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{csrc_dir() / 'include'}", str(src),
         "-o", str(exe)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, f"g++ failed:\n{build.stderr}"
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"test_stream failed (known-answer vectors or clip_coef):\n{run.stderr}"
    return run.stdout


def _parse(text: str, tag: str):
    seeds, ks, values = [], [], []
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == tag:
            seeds.append(int(parts[1]))
            ks.append(int(parts[2]))
            values.append(parts[3])
    return torch.tensor(seeds, dtype=torch.int64), torch.tensor(ks, dtype=torch.int64), values


def test_known_answer_vectors(stream_output):
    assert stream_output.splitlines()[0] == "KAT 4/4"


def test_words_bit_exact(stream_output):
    seed, k, values = _parse(stream_output, "W")
    assert len(values) >= 300 and int(k.max()) > 2**32
    words = rng.stream_words(seed, k >> 2)
    expected = torch.gather(words, -1, (k & 3).unsqueeze(-1)).squeeze(-1)
    assert torch.equal(torch.tensor([int(v) for v in values], dtype=torch.int64), expected)


def test_uniforms_bit_exact(stream_output):
    seed, k, values = _parse(stream_output, "U")
    got = torch.tensor([struct.unpack("<f", struct.pack("<I", int(v)))[0] for v in values], dtype=torch.float32)
    expected = rng.uniform(seed, k)
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))
    assert float(got.min()) >= 0.0 and float(got.max()) < 1.0


@pytest.mark.parametrize("tag", ["N", "P"])  # libm, the shared polynomials
def test_normals_close_to_float64(stream_output, tag):
    seed, k, values = _parse(stream_output, tag)
    got = torch.tensor([float(v) for v in values], dtype=torch.float64)
    expected = rng.normal(seed, k, dtype=torch.float64)
    err = (got - expected).abs().max().item()
    assert err <= 2e-6, f"max |normal - float64 reference| = {err:.3g}"
    assert got.std().item() > 0.5  # not a constant stream


def test_the_clip_group_codes_are_one_table_in_python_and_cpp(tmp_path):
    """fastalign/_clip.py's CLIP_GROUPS and fastalign::ClipGroup (csrc/include/fastalign/clip.h) give each
    group the same code: g++ checks static_asserts generated from the Python table."""
    from fastalign._clip import CLIP_GROUPS, NO_CLIP

    names = {"chain": "kChain", "row": "kRow", "global": "kGlobal"}
    assert set(CLIP_GROUPS) == set(names)
    checks = [f"static_assert(static_cast<int>(fastalign::ClipGroup::{names[g]}) == {code}, \"{g}\");"
              for g, code in CLIP_GROUPS.items()]
    checks.append(f"static_assert(static_cast<int>(fastalign::ClipGroup::kNone) == {NO_CLIP}, \"none\");")
    src = tmp_path / "clip_codes.cpp"
    src.write_text('#include "fastalign/clip.h"\n' + "\n".join(checks) + "\nint main() { return 0; }\n")
    build = subprocess.run([CXX, "-std=c++17", "-fsyntax-only", f"-I{csrc_dir() / 'include'}", str(src)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert len(set(CLIP_GROUPS.values()) | {NO_CLIP}) == 4  # distinct codes
