"""Training throughput of ``avmaster train`` itself (loader, step, optimiser, Lightning).

    python tools/bench_fit.py --device cuda --batch 32 \
        --set trainer.precision=bf16-mixed cuda_graph=true

Writes MUSIC-AVQA-sized synthetic features (``make_dataset`` of ``tools/bench_loader.py``) to a
temporary folder (or ``--work``), trains one epoch of ``--warmup + --batches`` batches with the
run's own code (:func:`avmaster.training.train`, no validation or test) and prints one line:
samples/s over the last ``--batches`` batches (wall time from the start of the first to the end
of the last, the device synchronised at both ends), peak memory (as ``bench_train``'s) and the
memory allocator.
``--set`` takes ``avmaster train`` overrides (``cuda_graph=true``,
``trainer.precision=bf16-mixed``, ``model.dim=...``). ``--no-model`` times the loop without the
model (:class:`NoModel`): what is left, the loader, the transfer and Lightning's loop, bounds the
samples/s of any device's step.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from bench_loader import make_dataset
from bench_train import peak_memory_mb, sync

from avmaster.config import ConfigError, load_config
from avmaster.malloc import loaded_allocator
from avmaster.training import train


class BatchTimer(L.Callback):
    """Wall time and samples from the start of batch ``skip`` to the end of batch ``last``."""

    def __init__(self, skip: int, last: int):
        self.skip, self.last = skip, last
        self.samples, self.start, self.end = 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        if batch_idx == self.skip:
            sync(module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if batch_idx >= self.skip:
            self.samples += int(batch["label"].shape[0])
        if batch_idx == self.last:
            sync(module.device)
            self.end = time.perf_counter()


class NoModel(L.Callback):
    """Replaces the training step's forward, losses and backward by a loss that costs almost
    nothing (the mean of the batch's visual features; one trainable parameter gets a zero
    gradient), with the keys the real losses have (learnt from the first batch, which runs the
    model), so that logging does the same work."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def setup(self, trainer, module, stage: str) -> None:
        real = module._losses

        def losses(model: torch.nn.Module, batch) -> dict[str, torch.Tensor]:
            if not self.keys:
                self.keys = list(real(model, batch))
            first = next(p for p in model.parameters() if p.requires_grad)
            loss = batch["visual"].mean() + first.sum() * 0
            return {k: loss for k in self.keys}

        module._losses = losses


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Without the run's logs, warnings and Lightning's model summary (one line of output)."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "avmaster")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            for logger in loggers:
                logger.setLevel(logging.ERROR)
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def dataset(work: Path, videos: int, questions: int, seconds: int, dims: tuple[int, ...]
            ) -> dict[str, str]:
    """The synthetic dataset's overrides, written under ``work`` unless it is there (a
    folder per size, so that runs of one size share it)."""
    folder = work / f"v{videos}_q{questions}_t{seconds}_{'-'.join(map(str, dims))}"
    done = folder / "complete"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        files = make_dataset(folder, videos, questions, seconds, dims)
        done.write_text(json.dumps(files))
    return {**json.loads(done.read_text()), "folder": str(folder), "features_dir": str(folder)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="trainer.accelerator (cpu, cuda, ...)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=100, help="timed batches")
    p.add_argument("--warmup", type=int, default=10, help="untimed batches before them")
    p.add_argument("--seconds", type=int, default=60, help="T")
    p.add_argument("--dims", type=int, nargs=3, default=(768, 128, 768),
                   help="visual, audio, text feature sizes")
    p.add_argument("--videos", type=int, default=500)
    p.add_argument("--workers", type=int, default=None,
                   help="data.num_workers (default: the config's)")
    p.add_argument("--work", default=None,
                   help="keep the synthetic dataset here for later runs (default: a temporary "
                        "folder)")
    p.add_argument("--no-model", action="store_true",
                   help="time the loop without the model's forward and backward (NoModel)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="avmaster train overrides")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n = args.warmup + args.batches
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = dataset(Path(args.work) if args.work else root, args.videos, n * args.batch,
                        args.seconds, tuple(args.dims))
        accelerator = "gpu" if args.device == "cuda" else args.device
        overrides = [
            f"data.annotations_dir={files.pop('folder')}", "data.train=[train.json]",
            "data.val=[]", "data.test=[]", f"data.features_dir={files.pop('features_dir')}",
            f"data.seconds={args.seconds}",
            f"data.batch_size={args.batch}",
            *([] if args.workers is None else [f"data.num_workers={args.workers}"]),
            *(f"data.{k}={v}" for k, v in files.items()), f"output_dir={root / 'runs'}",
            "name=bench", "trainer.max_epochs=1", f"trainer.limit_train_batches={n}",
            f"trainer.accelerator={accelerator}", "trainer.devices=1",
            "trainer.enable_progress_bar=false", *args.set]
        timer = BatchTimer(args.warmup, n - 1)
        callbacks = [timer, NoModel()] if args.no_model else [timer]
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            cfg = load_config(overrides=overrides)
            if args.no_model and cfg.cuda_graph:
                raise ConfigError("--no-model leaves no step to record: drop cuda_graph=true")
            with quiet():
                train(cfg, callbacks=callbacks)
        except ConfigError as e:
            print(f"bench_fit: error: {e}", file=sys.stderr)
            return 2
    seconds = timer.end - timer.start
    print(f"fit device={args.device} batch={args.batch} T={args.seconds} "
          f"timed_batches={args.batches} model={'no' if args.no_model else 'yes'} "
          f"set={' '.join(args.set) or '-'} "
          f"samples_per_s={timer.samples / seconds:,.1f} s_per_batch={seconds / args.batches:.4f} "
          f"peak_mem_mb={peak_memory_mb(torch.device(args.device)):.0f} "
          f"malloc={loaded_allocator()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
