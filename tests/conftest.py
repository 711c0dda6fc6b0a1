"""Shared fixtures: the real photo set and deterministic torch settings."""

import os
from pathlib import Path

# No downloads in tests or CI: pretrained weights come from files the tests write. Set before
# anything imports huggingface_hub (it reads HF_HUB_OFFLINE once, at import).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MLB_OFFLINE"] = "1"

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def human_seg_290() -> Path:
    """The 290 real photos with coarse masks (../shared/data/human-seg-290)."""
    root = SHARED_DATA / "human-seg-290"
    if not (root / "Training_Images").is_dir():
        pytest.skip(f"real photo set not found at {root}")
    return root


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


# Prefect's temporary API server gets 30 s to start by default; on a 2-core machine under
# load it has needed more, and every flow test of the module then errors at setup.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
