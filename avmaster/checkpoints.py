"""Reading checkpoints safely: a truncated or foreign file is one clear error, and a run
resumes from the newest checkpoint that still reads."""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

LAST = "last.ckpt"
FOLDER = "checkpoints"  # a run folder's checkpoints: <output_dir>/<name>/checkpoints/
# what torch.load raises on a truncated, empty or non-checkpoint file
_UNREADABLE = (RuntimeError, EOFError, OSError, ValueError, KeyError, pickle.UnpicklingError,
               zipfile.BadZipFile)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, empty, not a checkpoint)."""


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """The checkpoint's contents (on CPU), or :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except _UNREADABLE as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason}); it may be "
                              "truncated (disk full, killed copy): pass another ckpt=... or "
                              "delete the file") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a checkpoint written by `avmaster train` "
                              "(no state_dict); pass another ckpt=...")
    return ckpt


def run_of(ckpt: Path | str) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/<file>.ckpt``), else None."""
    path = Path(ckpt)
    return path.parent.parent if path.parent.name == FOLDER else None


def best_checkpoint(folder: Path) -> Path:
    """A run folder's selected checkpoint (the one ``save_top_k=1`` kept), else ``last.ckpt``."""
    ckpts = folder / FOLDER
    kept = sorted(p for p in ckpts.glob("*.ckpt") if p.name != LAST)
    if len(kept) == 1:
        return kept[0]
    if (ckpts / LAST).exists():
        return ckpts / LAST
    raise FileNotFoundError(f"{folder}: no checkpoint under {ckpts}; train it first")


def resolve_checkpoint(ckpt: Path | str) -> Path:
    """``ckpt``, or for a run folder its selected checkpoint (:func:`best_checkpoint`); a
    folder of several runs (seeds) is one error naming them."""
    path = Path(ckpt)
    if not path.is_dir():
        return path
    if not (path / FOLDER).is_dir():
        runs = sorted(p.name for p in path.iterdir() if (p / FOLDER).is_dir())
        if runs:
            raise FileNotFoundError(f"{path}: a folder of {len(runs)} runs ({', '.join(runs)}); "
                                    f"pass one of them, e.g. ckpt={path / runs[0]}")
    chosen = best_checkpoint(path)
    log.info("%s: its selected checkpoint %s", path, chosen.name)
    return chosen


def newest_readable(ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint of ``ckpt_dir`` to resume from: ``last.ckpt`` when it reads, otherwise
    the readable one with the most optimizer steps (with a warning naming what was skipped).
    None when the folder holds no checkpoint; :class:`CheckpointError` when none reads."""
    files = sorted(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []
    if not files:
        return None
    files.sort(key=lambda p: p.name != LAST)  # last.ckpt first: the common case reads one file
    readable: list[tuple[int, Path, dict[str, Any]]] = []
    broken: list[str] = []
    for path in files:
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as e:
            broken.append(str(e))
            continue
        if path.name == LAST:
            return path, ckpt
        readable.append((int(ckpt.get("global_step", 0)), path, ckpt))
    if not readable:
        raise CheckpointError(f"{ckpt_dir}: no checkpoint reads ({'; '.join(broken)}); "
                              "move them away (or choose another name=...) to start over")
    step, path, ckpt = max(readable, key=lambda t: t[0])
    for reason in broken:
        log.warning("%s", reason)
    log.warning("resuming from %s (epoch %s, step %d), the newest checkpoint that reads",
                path, ckpt.get("epoch"), step)
    return path, ckpt
