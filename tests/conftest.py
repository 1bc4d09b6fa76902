"""Shared fixtures (helper functions live in helpers.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import FIXTURES, run_ddp_script, tiny_overrides

from avmaster.cli import main

# Under pytest-xdist (`make test` runs one worker per core) each worker, and each process it
# starts, gets an equal share of the cores: threads of two workers competing for one core slow
# both several-fold.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_share)
    torch.set_num_threads(_share)


@pytest.fixture
def single_thread():
    """Tiny tensors: one intra-op thread is fastest and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@dataclass(frozen=True)
class TinyRun:
    """A tiny model trained for one epoch (``avmaster train``) and evaluated on the test
    sample: the folder holding its features and run, its overrides and its checkpoint."""

    root: Path
    overrides: list[str]

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / "tiny"

    @property
    def ckpt(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """Trained once per session; only test_train_resume_eval_score continues it."""
    root = tmp_path_factory.mktemp("tiny")
    overrides = tiny_overrides(root)
    assert main(["train", *overrides, "trainer.max_epochs=1"]) == 0
    return TinyRun(root, overrides)


@pytest.fixture(scope="session")
def ddp_run(tmp_path_factory) -> Path:
    """One two-rank DDP run on CPU (fit, then the per-type metric over uneven shards), shared
    by the DDP tests of the model and of the metrics."""
    return run_ddp_script(tmp_path_factory.mktemp("ddp"))
