"""The CI workflows parse as YAML and promise what the README says: GPU tests, `fastalign check` and
the benchmark artifact on self-hosted GPU runners; `bash .ci/run` on a CPU runner."""
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def _load(name):
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict), f"{name} is not a YAML mapping"
    return data


def _triggers(wf):
    # YAML 1.1 reads the bare key `on` as the boolean True.
    return wf.get("on", wf.get(True))


def _runs(job):
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_gpu_workflow_runs_on_self_hosted_gpu_runners_on_dispatch_and_pull_requests():
    wf = _load("gpu.yml")
    triggers = _triggers(wf)
    assert "workflow_dispatch" in triggers and "pull_request" in triggers
    assert len(wf["jobs"]) == 1
    job = next(iter(wf["jobs"].values()))
    labels = job["runs-on"]
    assert isinstance(labels, list) and "self-hosted" in labels and "gpu" in labels


def test_gpu_workflow_steps_install_build_test_check_and_upload():
    job = next(iter(_load("gpu.yml")["jobs"].values()))
    steps = job["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@")
    runs = _runs(job)
    install = [line for line in runs.splitlines() if "pip install" in line]
    assert install and all("--no-build-isolation" in line for line in install), install
    assert not any(" torch" in line.split("pip install", 1)[1] for line in install), "never install torch"
    names = [s.get("name", "") for s in steps]
    build = steps[names.index("Build the CUDA extension")]["run"]
    assert "available_backends" in build and "'cuda'" in build
    assert "pytest -m gpu" in runs
    assert "fastalign check" in runs
    assert "fastalign bench --json" in runs and "bench-gpu.json" in runs
    upload = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert len(upload) == 1
    assert upload[0].get("if") == "always()"
    assert "bench-gpu.json" in upload[0]["with"]["path"]
    # order: install before build before tests before check before upload
    order = [next(i for i, s in enumerate(steps) if key in (s.get("run", "") + s.get("uses", "")))
             for key in ("pip install", "available_backends", "pytest -m gpu", "fastalign check", "upload-artifact")]
    assert order == sorted(order)


def test_cpu_workflow_runs_both_readme_commands_through_ci_run():
    wf = _load("cpu.yml")
    assert "pull_request" in _triggers(wf)
    job = next(iter(wf["jobs"].values()))
    assert job["runs-on"] == "ubuntu-latest"
    runs = _runs(job)
    assert "bash .ci/run" in runs
    assert "install torch" not in runs, ".ci/run installs torch itself, in fresh environments"
    # the README's `pip install torch==2.13.0` inside .ci/run's environments must find the CPU build
    assert job["env"]["PIP_EXTRA_INDEX_URL"].endswith("/whl/cpu")
    assert (ROOT / ".ci" / "run").is_file()


def test_gpu_session_script_parses_and_brings_back_at_most_eight_files():
    """bench/gpu_session.sh (one prepared device session): valid bash, a --dry-run mode, and no more output
    files than one device call returns (8)."""
    import re
    import subprocess

    script = ROOT / "bench" / "gpu_session.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "--dry-run" in text and "pytest -q -p no:cacheprovider -m gpu" in text and "fastalign check" in text
    outputs = set(re.findall(r"\$OUT/([A-Za-z0-9_.-]+\.(?:json|csv|txt|log))", text))
    assert {"env.txt", "session.log", "pytest-gpu.txt", "check.json", "bench-gpu.json", "decode.json"} <= outputs
    assert len(outputs) <= 8, outputs
