"""Inference-time variants of one checkpoint (paper Tables XII, XIII and Fig. 6).

``avmaster eval ckpt=... variants=table12,table13,fig6`` evaluates one trained model under each
row of the named ``configs/variants/*.yaml`` files and writes one results file per row
(``results_<data>__<variant>-<row>.json``), labelled by the checkpoint's training presets and the
row. The paths' softmaxes are predicted once per readout step (Lightning's predict loop) and
every combination / dropped-path row is scored from them, so Tables XII and XIII cost one pass
over the test split and Fig. 6 one pass per step k.

W-ADD's weights are each path's own overall accuracy (see :mod:`avmaster.models.combine`),
measured on the validation split (``data.val``); without one, on the test split, said in the
log and recorded in the results' ``meta.weights_from``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from avmaster.atomic import atomic_write_json
from avmaster.config import Config, VariantRow, load_variant
from avmaster.data.vocab import NO_LABEL
from avmaster.lightning_module import PATH_PREFIX, AVMasterModule
from avmaster.metrics import GroupedAccuracy, write_results
from avmaster.models.combine import combine
from avmaster.models.config import InferenceConfig
from avmaster.training import (
    build_trainer,
    check_inference,
    checkpoint_record,
    checkpoint_run,
    data_for,
    load_module,
    result_label,
    results_meta,
    results_name,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PathPredictions:
    """Every question's per-path softmax ``{path: [N, C]}``, label ``[N]`` and group ``[N]``."""

    probs: dict[str, torch.Tensor]
    label: torch.Tensor
    group: torch.Tensor

    def accuracy(self, inference: InferenceConfig) -> float:
        """Overall accuracy (%) of the combined prediction."""
        pred = combine(self.probs, inference).argmax(dim=-1)
        return 100.0 * ((pred == self.label) & (self.label != NO_LABEL)).float().mean().item()


def predict_paths(trainer: Any, module: AVMasterModule, loader: Any,
                  readout_step: int | None) -> PathPredictions:
    """One predict pass over ``loader`` with the templates read out after ``readout_step``."""
    module.inference = InferenceConfig(readout_step=readout_step)
    outputs = trainer.predict(module, dataloaders=loader)
    order = torch.cat([o["index"] for o in outputs]).argsort()
    keys = [k for k in outputs[0] if k.startswith(PATH_PREFIX)]
    probs = {k[len(PATH_PREFIX):]: torch.cat([o[k] for o in outputs])[order] for k in keys}
    return PathPredictions(probs, torch.cat([o["label"] for o in outputs])[order],
                           torch.cat([o["group"] for o in outputs])[order])


def path_scores(preds: PathPredictions) -> dict[str, float]:
    """Each path's overall accuracy (%) when it answers alone: W-ADD's scores."""
    return {name: preds.accuracy(InferenceConfig(drop=[p for p in preds.probs if p != name]))
            for name in preds.probs}


def evaluate_variants(cfg: Config, ckpt: str | None = None) -> dict[str, float]:
    """Score ``ckpt`` (default ``cfg.ckpt``) under every row of ``cfg.variants``; writes one
    results file per row and ``variants_<data>.json`` (row -> overall accuracy); returns that
    mapping."""
    variants = [load_variant(name) for name in cfg.variants]
    ckpt, raw, module = load_module(ckpt or cfg.ckpt)
    cfg = checkpoint_run(cfg, ckpt)
    record = checkpoint_record(raw, cfg)
    dm = data_for(module, cfg, ckpt)
    single = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, devices=1))
    trainer = build_trainer(single, logs=False)
    steps = cfg.data.segments or cfg.data.seconds
    rows: list[tuple[str, VariantRow]] = [(v.name, row) for v in variants
                                          for row in v.expand(steps, cfg.inference)]
    for group_name, row in rows:
        check_inference(row.inference, module.model, steps, ckpt,
                        f"variants={group_name}, row {row.name}")
    dm.setup("test")
    cache: dict[int | None, PathPredictions] = {}

    def predictions(step: int | None) -> PathPredictions:
        if step not in cache:
            cache[step] = predict_paths(trainer, module, dm.test_dataloader(), step)
        return cache[step]

    weights: dict[str, float] = {}
    weights_from = ""
    if any(r.inference.combine == "w_add" and not r.inference.weights for _, r in rows):
        if cfg.data.val:
            dm.setup("validate")
            weights, weights_from = path_scores(
                predict_paths(trainer, module, dm.val_dataloader(), None)), "val"
        else:
            log.warning("W-ADD weights: no data.val; each path's accuracy on the test split is "
                        "used instead (the row then saw the test labels)")
            weights, weights_from = path_scores(predictions(None)), "test"
        log.info("W-ADD weights (each path's overall accuracy on %s): %s", weights_from, weights)

    overall: dict[str, float] = {}
    for group_name, row in rows:
        inference = row.inference
        if inference.combine == "w_add" and not inference.weights:
            inference = dataclasses.replace(inference, weights=weights)
        preds = predictions(inference.readout_step)
        metric = GroupedAccuracy(dm.spec)
        metric.update(combine(preds.probs, inference).argmax(dim=-1), preds.label, preds.group)
        accuracy = {k: float(v) for k, v in metric.compute().items()}
        name = f"{group_name}-{row.name}"
        meta = results_meta(cfg, ckpt, record, inference)
        meta.update({"variant": group_name, "row": row.name, "setting": row.setting,
                     "paper": next(v.paper for v in variants if v.name == group_name)})
        if weights_from and inference.combine == "w_add":
            meta["weights_from"] = weights_from
        write_results(cfg.run_dir / results_name(cfg.data.name, name), dm.spec, accuracy,
                      metric.counts(), result_label(record, f"{group_name}: {row.name}"), meta)
        overall[name] = accuracy.get("avg", float("nan"))
        log.info("%s: avg %.2f", name, overall[name])
    summary = cfg.run_dir / f"variants_{cfg.data.name}.json"
    atomic_write_json(summary, {"checkpoint": str(ckpt), "avg": overall})
    print("\n".join(f"{k:24s} {v:6.2f}" for k, v in overall.items()))
    log.info("variant results written under %s", Path(cfg.run_dir))
    return overall
