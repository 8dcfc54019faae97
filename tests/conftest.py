"""Shared test settings: no downloads, few threads, small real data."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("SELFSUP_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def has_fashion_mnist() -> bool:
    return os.path.isfile(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz"))


needs_fashion_mnist = pytest.mark.skipif(
    not has_fashion_mnist() and not os.environ.get("CI"),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-tensor tests (``pytestmark = pytest.mark.usefixtures
    ("one_thread")``): fastest for small ops, and immune to thread-pool stalls on a busy machine
    (measured on a loaded 2-core box: ~8 ms per op instead of microseconds with 2 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
