import os

import pytest
import torch
from support.display import xvfb  # noqa: F401 - the private X server, for the window tests
from support.isic_runs import ISIC, copy_split, train

# The machines that run these tests have 2 cores and run other work; one thread each keeps
# the suite predictable.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_isic(tmp_path_factory):
    """4 training and 2 validation images of ISIC 2017 (skips where the data is absent)."""
    if not ISIC.is_dir():
        pytest.skip(f"ISIC 2017 data not found at {ISIC}")
    root = tmp_path_factory.mktemp("isic")
    copy_split(ISIC / "train", root / "train", 4)
    copy_split(ISIC / "val", root / "val", 2)
    return root


@pytest.fixture(scope="session")
def trained_run(tiny_isic, tmp_path_factory):
    """A finished one-epoch run on ``tiny_isic`` (its folder)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert train(tiny_isic, run, "--epochs", "1") == 0
    return run
