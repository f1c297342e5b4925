"""Test configuration shared by the whole suite.

Without a CUDA device the Triton kernels run under the Triton interpreter on CPU tensors; that must
be decided before triton is first imported, so it happens here.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

try:  # property-based tests (tests/test_properties.py); the rest of the suite runs without hypothesis
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover
    settings = None

if settings is not None:
    # "fastalign" (the default): bounded so tests/test_properties.py runs in well under a minute with
    # the Triton interpreter included. "long": `pytest --hypothesis-profile=long` for deeper searches.
    # No deadline: the first call of a backend compiles or interprets kernels.
    _common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("fastalign", max_examples=25, **_common)
    settings.register_profile("long", max_examples=400, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fastalign"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module with one torch thread: tiny models are dominated by per-op overhead, and one thread
    is several times faster than two on a busy 2-core box."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
