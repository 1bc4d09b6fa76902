"""The random number generators' states in every checkpoint, so that a resumed run draws the
batch order and dropout masks of a run that never stopped."""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch

log = logging.getLogger(__name__)

KEY = "avmaster_random_states"  # checkpoint entry


def collect() -> dict[str, Any]:
    """This process's generator states: Python, NumPy, torch on the CPU and on its current
    CUDA device (when CUDA is in use; not every device's, which would start a context on each)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    # as tensors and numbers: checkpoints must load with torch.load(weights_only=True)
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore(states: dict[str, Any]) -> None:
    """Set the generators to ``states`` (from :func:`collect`); CUDA's on the current device,
    where CUDA is available."""
    random.setstate(states["python"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda)


class RandomStatesCallback(L.Callback):
    """Saves :func:`collect` in each checkpoint and restores it when a run resumes from one.
    Lightning restores a checkpoint before its fit loop builds the first epoch's loader and
    skips the sanity check when resuming, so the next draw is the one an uninterrupted run
    makes after saving: the epoch's loader seed and order, then the dropout masks. A checkpoint
    without the entry resumes with fresh draws (logged)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[KEY] = collect()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if (states := checkpoint.get(KEY)) is None:
            log.info("the checkpoint holds no random states: the resumed epochs draw other "
                     "batch orders and dropout masks than an uninterrupted run would")
            return
        restore(states)
