"""Several seeds of one config: one run folder per seed, and an aggregate results file.

``avmaster train --seeds N ...`` trains ``<name>/seed0`` ... ``<name>/seed{N-1}`` one after
the other (each an ordinary run: Lightning, its own checkpoints, resumable), then writes
``<name>/results_<data>.json``/``.md``: per column the mean and standard deviation over seeds
and the pooled 95 % interval. ``avmaster eval ckpt=<name>`` evaluates every seed's checkpoint
and writes the aggregate for the chosen data. Readers (notebooks, :mod:`avmaster.reports`)
take an aggregate like a single run: its ``accuracy`` is the mean.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from avmaster.checkpoints import best_checkpoint
from avmaster.config import Config, ConfigError
from avmaster.data.tables import get_table
from avmaster.metrics import write_results
from avmaster.stats import correct_counts

log = logging.getLogger(__name__)

SEED_PREFIX = "seed"  # seed runs are <name>/seed<k>
AGGREGATE_METHOD = "AV-Master (ours), mean of {n} seeds"


class AggregateError(ValueError):
    """Seed runs that cannot be aggregated; names the file and how to fix it."""


def seed_config(cfg: Config, seed: int) -> Config:
    """``cfg`` with ``seed`` and the run folder ``<name>/seed<seed>``."""
    return dataclasses.replace(cfg, seed=seed, name=str(Path(cfg.name) / f"{SEED_PREFIX}{seed}"))


def train_seeds(cfg: Config, seeds: int) -> Path:
    """Train seeds 0..``seeds``-1 of ``cfg`` and aggregate their test results; returns the
    aggregate JSON (its parent folder when the config has no test split)."""
    from avmaster.training import train

    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give at least 1")
    for seed in range(seeds):
        log.info("seed %d of %d: %s", seed + 1, seeds, seed_config(cfg, seed).run_dir)
        train(seed_config(cfg, seed))
    if not (cfg.data.test or cfg.data.test_head):
        return cfg.run_dir
    return aggregate(cfg.run_dir, cfg.data.name)


def seed_folders(folder: Path) -> list[Path]:
    """The seed runs under ``folder`` (``seed<k>``), in seed order."""
    found = [p for p in folder.glob(f"{SEED_PREFIX}*") if p.is_dir()
             and p.name[len(SEED_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(SEED_PREFIX):]))


def evaluate_folder(cfg: Config, folder: Path) -> Path:
    """Evaluate a run folder given as ``ckpt=``: every seed run's checkpoint and their
    aggregate when it holds seed runs, else its own selected checkpoint; with ``variants``
    every row of them, aggregated per row. Returns the (first) results JSON."""
    from avmaster.training import evaluate, results_name
    from avmaster.variants import evaluate_variants

    runs = seed_folders(folder) or [folder]
    rows = [""]
    for run in runs:
        one = dataclasses.replace(cfg, output_dir=str(run.parent), name=run.name, ckpt=None)
        if cfg.variants:
            rows = list(evaluate_variants(one, str(best_checkpoint(run))))
        else:
            evaluate(one, str(best_checkpoint(run)))
    if runs == [folder]:
        return folder / f"{results_name(cfg.data.name, rows[0])}.json"
    written = [aggregate(folder, cfg.data.name, row) for row in rows]
    return written[0]


def aggregate(folder: Path, data: str, row: str = "") -> Path:
    """Write ``folder/results_<data>.{json,md}`` (``results_<data>__<row>`` for an
    inference-time row of ``variants=``) from its seed runs' results: mean and sample
    standard deviation over seeds per column, and the pooled interval (exact binomial on the
    mean correct count over the column's questions: the questions, not question x seed, are
    the sample, so more seeds do not narrow it). Returns the JSON path."""
    from avmaster.training import results_name

    name = results_name(data, row)
    files = [(run, run / f"{name}.json") for run in seed_folders(folder)]
    missing = [str(f) for _, f in files if not f.exists()]
    if not files or missing:
        raise FileNotFoundError(f"{folder}: no seed results to aggregate for data {data!r}"
                                + (f" (missing: {', '.join(missing)})" if missing else "")
                                + "; run `avmaster eval ckpt=<folder>` with that data")
    results = [json.loads(f.read_text()) for _, f in files]
    counts = results[0]["counts"]
    for (_, f), r in zip(files, results, strict=True):
        if r["counts"] != counts or r["table"] != results[0]["table"]:
            raise AggregateError(f"{f}: evaluated on other questions than {files[0][1]} "
                             f"(counts {r['counts']} vs {counts}); re-evaluate the seeds on "
                             "the same test split")
    cols = list(counts)
    acc = np.array([[r["accuracy"][c] for c in cols] for r in results], dtype=np.float64)
    correct = np.array([[(r.get("correct") or correct_counts(r["accuracy"], counts))[c]
                         for c in cols] for r in results], dtype=np.float64)
    std = acc.std(axis=0, ddof=1) if len(results) > 1 else np.zeros(len(cols))
    seeds: dict[str, Any] = {run.name: r["accuracy"] for (run, _), r in zip(files, results,
                                                                           strict=True)}
    meta = dict(results[0].get("meta") or {})
    meta.pop("checkpoint", None)
    meta["sources"] = [os.path.relpath(f, folder) for _, f in files]
    js, md = write_results(
        folder / name, get_table(results[0]["table"]),
        dict(zip(cols, acc.mean(axis=0).tolist(), strict=True)), counts,
        AGGREGATE_METHOD.format(n=len(results)) + (f", {row}" if row else ""), meta,
        extra={"correct": dict(zip(cols, correct.mean(axis=0).tolist(), strict=True)),
               "std": dict(zip(cols, std.tolist(), strict=True)), "seeds": seeds})
    print(md.read_text())
    log.info("aggregate of %d seeds written to %s and %s", len(results), js, md)
    return js
