import os
from pathlib import Path

# under pytest-xdist (the README's `-n 2`) the workers share the cores: each gets its share of them as
# threads, set before torch is imported (torch's pool, OpenMP's and the runtimes' follow it), unless the
# user chose a count. Two workers of one thread run the suite about 1.5x faster than one of two threads.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ["OMP_NUM_THREADS"] = str(max(1, cores // WORKERS))

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
# torch's intra-op thread count for this process, before any test ran
DEFAULT_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test starts from seed 0 and the process's default thread count, whatever the test before it set
    (``InferenceSession(num_threads=...)`` sets torch's thread count for the whole process)."""
    torch.manual_seed(0)
    torch.set_num_threads(DEFAULT_THREADS)
    yield


@pytest.fixture
def shared_datasets() -> Path:
    """../shared/datasets from the project root; tests that need it skip where it is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS
