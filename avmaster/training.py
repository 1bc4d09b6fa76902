"""Train and evaluate: one Lightning loop behind ``avmaster train`` and ``avmaster eval``."""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from avmaster.atomic import atomic_path, atomic_write_json, atomic_write_text
from avmaster.checkpoints import FOLDER as CHECKPOINTS
from avmaster.checkpoints import (
    LAST,
    newest_readable,
    read_checkpoint,
    resolve_checkpoint,
    run_of,
)
from avmaster.config import FULL, Config, ConfigError, load_config, switch_keys, to_dict
from avmaster.data.datamodule import AVQADataModule
from avmaster.data.store import read_settings
from avmaster.lightning_module import TOP_KEY, AVMasterModule
from avmaster.malloc import cpu_hint
from avmaster.metrics import write_results
from avmaster.models.avmaster import AVMaster, as_dims
from avmaster.models.config import (
    InferenceConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    to_dataclass,
)
from avmaster.random_states import RandomStatesCallback

log = logging.getLogger(__name__)
CKPT_KEY = "avmaster_features"  # checkpoint entry: the extraction settings of its features

# Warnings every run would print that say nothing about the user's setup: AVMasterModule's
# float16 -> float32 cast hook, a torch deprecation inside Lightning's own code, a non-empty
# checkpoint folder on resume (train() itself refuses to overwrite an earlier run), and advice to
# add loader workers (data.num_workers says when they help).
KNOWN_WARNINGS = (r"You have overridden `on_after_batch_transfer`",
                  r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                  r"Checkpoint directory .* exists and is not empty",
                  r"The '\w+' does not have many workers")


def ignore_known_warnings() -> None:
    """Filter out :data:`KNOWN_WARNINGS` (done when this module is imported)."""
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


ignore_known_warnings()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file renamed into place: a killed run never leaves a
    truncated ``last.ckpt`` behind, and the previous one stays readable."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class FeatureSettingsCallback(L.Callback):
    """Stores the training features' extraction settings in every checkpoint (``CKPT_KEY``),
    so that prediction on a raw video extracts it the same way."""

    def __init__(self, settings: Mapping[str, Any]):
        self.settings = dict(settings)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[CKPT_KEY] = self.settings


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` and continues its columns (Lightning's writer deletes
    it whenever the folder is reused: on resume and on every ``avmaster eval``)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` holds every epoch of a resumed run and the test
    rows of later evaluations, instead of only the last session's."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def build_datamodule(cfg: Config, answers: list[str] | None = None) -> AVQADataModule:
    return AVQADataModule(cfg.data, answers=answers)


def build_module(cfg: Config, dm: AVQADataModule) -> AVMasterModule:
    """A fresh model sized by the data: feature dims from the files, answers from the vocab."""
    multiple_choice = dm.multiple_choice
    answers = None if multiple_choice else dm.build_vocab().answers
    module = AVMasterModule(model_cfg=cfg.model, loss_cfg=cfg.loss, optim_cfg=cfg.optim,
                           dims=dm.dims, answers=answers, multiple_choice=multiple_choice)
    if cfg.compile:  # each block once; parameter names stay as they are
        module.model.compile_blocks(**({"mode": cfg.compile_mode} if cfg.compile_mode else {}))
    return module


def build_trainer(cfg: Config, *, logs: bool = True, callbacks: list | None = None) -> L.Trainer:
    """A Trainer with every ``cfg.trainer`` field as its argument of the same name."""
    run_dir = cfg.run_dir
    loggers = [AppendingCSVLogger(run_dir, name="logs", version=""),
               TensorBoardLogger(run_dir, name="tb", version="")] if logs else False
    args = asdict(cfg.trainer)
    if not cfg.data.val:  # nothing to validate on
        args["limit_val_batches"] = 0
    try:
        return L.Trainer(**args, default_root_dir=run_dir, logger=loggers,
                         callbacks=callbacks or [], plugins=[AtomicCheckpointIO()])
    except (ValueError, MisconfigurationException) as e:  # e.g. an accelerator this lacks
        shown = ", ".join(f"trainer.{k}={args[k]}"
                          for k in ("accelerator", "devices", "strategy", "precision"))
        raise ConfigError(f"{shown}: {e}") from e


RUN_KEY = "avmaster_run"  # checkpoint entry: the presets and overrides a model was trained with
METHOD = "AV-Master"


def run_record(cfg: Config) -> dict[str, list[str]]:
    """What a training run applied: its ``presets`` and dotted ``overrides``."""
    return {"presets": list(cfg.presets), "overrides": list(cfg.overrides)}


class RunRecordCallback(L.Callback):
    """Stores :func:`run_record` in every checkpoint, so an evaluation labels its results by
    the presets the model was trained with."""

    def __init__(self, record: dict[str, list[str]]):
        self.record = record

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[RUN_KEY] = self.record


def ablations_of(record: dict[str, list[str]]) -> list[str]:
    """The paper experiments a record stands for: its ablation presets (``["full"]`` for none),
    or ``[]`` when it also overrides a key that a preset sets (an unnamed variant, labelled by
    its overrides and counted in no paper row)."""
    if switch_overrides(record):
        return []
    named = [p.split("=", 1)[1] for p in record.get("presets", []) if p.startswith("ablation=")]
    return named or [FULL]


def switch_overrides(record: dict[str, list[str]]) -> list[str]:
    """The record's overrides that set a key an ablation preset sets to another value than
    the default (sizes, paths and the optimiser are not ablations)."""
    keys, default = switch_keys(), _default_config()
    out = []
    for item in record.get("overrides", []):
        key = item.split("=", 1)[0]
        if key in keys and (OmegaConf.select(OmegaConf.from_dotlist([item]), key)
                            != OmegaConf.select(default, key)):
            out.append(item)
    return out


@functools.lru_cache(maxsize=1)
def _default_config() -> DictConfig:
    """The default configuration (read-only; the YAML files do not change while running)."""
    cfg = OmegaConf.structured(load_config())
    OmegaConf.set_readonly(cfg, True)
    return cfg


def result_label(record: dict[str, list[str]], variant: str = "") -> str:
    """A results row's name: the method, its ablation presets, its switch overrides and the
    inference-time variant, e.g. ``AV-Master [wo_avfc] {table12: wo_ape}``."""
    label = METHOD
    named = [p.split("=", 1)[1] for p in record.get("presets", []) if p.startswith("ablation=")]
    tags = named + switch_overrides(record)
    if tags:
        label += f" [{', '.join(tags)}]"
    if variant:
        label += f" {{{variant}}}"
    return label


def checkpoint_record(raw: Mapping[str, Any], cfg: Config) -> dict[str, list[str]]:
    """The training record stored in a checkpoint's contents ``raw`` (older checkpoints: the
    eval run's own)."""
    return raw.get(RUN_KEY) or run_record(cfg)


def results_meta(cfg: Config, ckpt: str | Path, record: dict[str, list[str]],
                 inference: InferenceConfig) -> dict[str, Any]:
    """The ``meta`` of a results file: checkpoint, data, the training presets and overrides,
    the ablation names they amount to and the inference settings."""
    return {"checkpoint": str(ckpt), "data": cfg.data.name, "test": list(cfg.data.test),
            "presets": record["presets"], "overrides": record["overrides"],
            "ablation": ablations_of(record), "inference": to_dict(inference)}


def results_name(data: str, row: str = "") -> str:
    """``results_<data>`` or, for an inference-time row, ``results_<data>__<row>`` (characters
    other than letters, digits, ``-`` and ``_`` become ``-``)."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", row).strip("-")
    return f"results_{data}__{safe}" if safe else f"results_{data}"


def load_module(ckpt: str | Path | None, purpose: str = "evaluation"
                ) -> tuple[str, dict[str, Any], AVMasterModule]:
    """``ckpt``, its contents (read once: one clear error for a missing or truncated file) and
    the module it holds."""
    if not ckpt:
        raise ConfigError(f"{purpose} needs a checkpoint: pass ckpt=path/to/file.ckpt or "
                          "ckpt=RUN_FOLDER")
    ckpt = resolve_checkpoint(ckpt)
    raw = read_checkpoint(ckpt)
    return str(ckpt), raw, AVMasterModule.from_checkpoint(raw)


def check_inference(inference: InferenceConfig, model: AVMaster, steps: int, ckpt: str | Path,
                    where: str) -> None:
    """Refuse inference settings the checkpoint's model cannot honour (a dropped path it does
    not have, a readout without focus templates or past the last second), naming ``where``."""
    voters = {"tdpp": model.decoder, "audio": model.audio_decoder,
              "visual": model.visual_decoder}
    have = {name for name, decoder in voters.items() if decoder is not None}
    missing = sorted(set(inference.drop) - have)
    if missing:
        raise ConfigError(f"{where}: drop={inference.drop}, but the model in {ckpt} has no "
                          f"{', '.join(missing)} path (it has {sorted(have)}); evaluate a "
                          "checkpoint of the full model")
    if not have - set(inference.drop):
        raise ConfigError(f"{where}: drop={inference.drop} leaves none of the paths of the "
                          f"model in {ckpt} ({sorted(have)}) to answer")
    k = inference.readout_step
    if k is not None and model.focus is None:
        raise ConfigError(f"{where}: readout_step={k}, but the model in {ckpt} has no focus "
                          "templates (w/o AVFC or w/o TDPP); the readout (fig6) does not apply")
    if k is not None and not 0 <= k < steps:
        raise ConfigError(f"{where}: readout_step={k} must be between 0 and {steps - 1} (the "
                          "model sees data.segments or data.seconds steps)")


@dataclass
class TrainResult:
    best_ckpt: str
    last_ckpt: str
    test: dict[str, float] | None


def train(cfg: Config, callbacks: Sequence[L.Callback] = ()) -> TrainResult:
    """Fit on ``data.train``, select on ``data.val``, resume from the newest readable checkpoint
    (``last.ckpt``, written at the end of every epoch) when present, then evaluate the best
    checkpoint on ``data.test`` (when listed). ``callbacks``: more Lightning callbacks."""
    L.seed_everything(cfg.seed, workers=True)
    if cfg.cuda_graph and cfg.data.question_padding != "split":
        log.info("cuda_graph=true: question tokens are padded to each split's longest question "
                 "(data.question_padding=split), so that every batch has one shape")
        cfg.data.question_padding = "split"
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    ckpt_dir = cfg.run_dir / CHECKPOINTS
    # Lightning's save_last rewrites last.ckpt only when the monitored best improves, so the
    # last epoch gets a callback of its own; the best epoch is kept as epochNN.ckpt.
    last = ModelCheckpoint(dirpath=ckpt_dir, filename=Path(LAST).stem, save_top_k=1,
                           enable_version_counter=False, save_on_train_epoch_end=True)
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="epoch{epoch:02d}",
                           auto_insert_metric_name=False, monitor="val/avg", mode="max",
                           save_top_k=1) if cfg.data.val else None
    features = FeatureSettingsCallback({
        "visual": read_settings(dm.feature_path(cfg.data.visual_features)),
        "audio": read_settings(dm.feature_path(cfg.data.audio_features)),
        "text": read_settings(dm.feature_path(cfg.data.text_features)),
        "seconds": cfg.data.seconds,
        "segments": cfg.data.segments,
    })
    checkpoints = [c for c in (best, last) if c is not None]
    record = RunRecordCallback(run_record(cfg))
    trainer = build_trainer(cfg, callbacks=[*checkpoints, LearningRateMonitor("epoch"), features,
                                            record, RandomStatesCallback(), *callbacks])
    if (trainer.is_global_zero and trainer.strategy.root_device.type == "cpu"
            and (hint := cpu_hint())):
        log.info(hint)
    if cfg.cuda_graph:
        device = trainer.strategy.root_device
        if device.type != "cuda" or trainer.world_size != 1:
            raise ConfigError(f"cuda_graph=true needs one CUDA device, but this run trains on "
                              f"{trainer.world_size} x {device.type}: set trainer.devices=1 on a "
                              "machine with a GPU, or cuda_graph=false")
        module.use_step_graph()
    resume, contents = _resume_point(cfg, ckpt_dir)
    step = None
    if contents is not None:
        if changed := resume_differences(contents, module, cfg):
            shown = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if
                                             len(changed) > 6 else "")
            raise ConfigError(
                f"{resume}: this command would continue the run of this checkpoint with other "
                f"settings ({shown}). Continue it with its own settings (trainer.*, data loading "
                "and paths may change), or start a new run with name=NEW_NAME")
        step = int(contents.get("global_step", 0))
        del contents  # Lightning reads the file again
    (cfg.run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg.run_dir / "config.json", to_dict(cfg))
    if step is not None:
        drop_rows_after(cfg.run_dir / "logs" / "metrics.csv", step)
    trainer.fit(module, datamodule=dm, ckpt_path=resume)
    best_path = (best.best_model_path if best else "") or last.best_model_path
    results = None
    if cfg.data.test or cfg.data.test_head:
        results = evaluate(cfg, best_path, trainer_logs=False, dm=dm)
    return TrainResult(best_path, last.best_model_path, results)


def _resume_point(cfg: Config, ckpt_dir: Path) -> tuple[str | None, dict[str, Any] | None]:
    """The checkpoint to continue from (``ckpt=`` or this run's newest readable one) and its
    contents; refuses to start over in a folder holding checkpoints with ``resume=false``."""
    if cfg.ckpt is not None:
        return str(cfg.ckpt), read_checkpoint(cfg.ckpt)
    if cfg.resume:
        found = newest_readable(ckpt_dir)
        if found is None:
            return None, None
        log.info("resuming from %s", found[0])
        return str(found[0]), found[1]
    earlier = sorted(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []
    if earlier:
        raise FileExistsError(
            f"{cfg.run_dir}: resume=false, but this run folder already holds checkpoints of an "
            f"earlier run ({', '.join(p.name for p in earlier)}) that starting over would "
            "overwrite. Drop resume=false to continue it, or choose another name=...")
    return None, None


def resume_differences(contents: Mapping[str, Any], module: AVMasterModule, cfg: Config
                       ) -> list[str]:
    """What continuing the run of a checkpoint (its ``contents``) with ``cfg`` and its fresh
    ``module`` would change: model, loss and optimiser settings, feature sizes, the answers,
    the data preset, seconds and segments. Lightning restores the weights, the optimiser and
    the schedule as saved, so such a change would fail deep inside (other parameters) or be
    silently half-applied (same parameters)."""
    old, new = contents.get("hyper_parameters") or {}, module.hparams
    changed = []
    for key, cls, section in (("model_cfg", ModelConfig, "model"), ("loss_cfg", LossConfig, "loss"),
                              ("optim_cfg", OptimConfig, "optim")):
        a, b = asdict(to_dataclass(cls, old.get(key))), asdict(to_dataclass(cls, new[key]))
        changed += [f"{section}.{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k]]
    a, b = asdict(as_dims(old.get("dims"))), asdict(as_dims(new["dims"]))
    changed += [f"{k} feature size: {a[k]} -> {b[k]}" for k in a if a[k] != b[k]]
    if (old.get("answers"), bool(old.get("multiple_choice"))) != (new["answers"],
                                                                  new["multiple_choice"]):
        changed.append("the answers")
    record = contents.get(RUN_KEY)
    if record is not None:
        a, b = ([p for p in presets if p.startswith("data=")][-1:] or ["none"]  # the last counts
                for presets in (record.get("presets", []), cfg.presets))
        if a != b:
            changed.append(f"data: {a[0]} -> {b[0]}")
    features = contents.get(CKPT_KEY) or {}
    for key in ("seconds", "segments"):
        if key in features and features[key] != getattr(cfg.data, key):
            changed.append(f"data.{key}: {features[key]!r} -> {getattr(cfg.data, key)!r}")
    return changed


@rank_zero_only
def drop_rows_after(metrics: Path, step: int) -> int:
    """Remove the rows a killed run logged past the checkpoint it resumes from (``step`` >= the
    checkpoint's global step): the rerun logs those steps again. Returns how many went."""
    if not metrics.exists():
        return 0
    with open(metrics, newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames or [], list(reader)
    kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
    dropped = len(rows) - len(kept)
    if dropped:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=header)
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(metrics, buffer.getvalue())
        log.warning("%s: dropped %d rows logged after step %d by the interrupted run (the "
                    "resumed run logs those steps again)", metrics, dropped, step - 1)
    return dropped


def use_inference(module: AVMasterModule, cfg: Config, ckpt: str | Path) -> None:
    """Set ``module`` to infer as ``cfg.inference`` says, after refusing settings the model of
    ``ckpt`` cannot honour."""
    check_inference(cfg.inference, module.model, cfg.data.segments or cfg.data.seconds, ckpt,
                    "inference")
    module.inference = cfg.inference


def load_checkpoint(cfg: Config, ckpt: str | None, purpose: str
                    ) -> tuple[AVMasterModule, AVQADataModule]:
    """The module of ``ckpt``, set to infer as ``cfg.inference`` says, and a datamodule of
    ``cfg.data`` with the checkpoint's answers."""
    ckpt, _, module = load_module(ckpt, purpose)
    use_inference(module, cfg, ckpt)
    return module, data_for(module, cfg, ckpt)


def data_for(module: AVMasterModule, cfg: Config, ckpt: str | Path) -> AVQADataModule:
    """A datamodule of ``cfg.data`` with the answers of the model of ``ckpt``; data of the
    other kind (options to choose from, or open answers) is refused: the scores would be
    meaningless, or the model would fail on the first batch."""
    dm = build_datamodule(cfg, answers=module.hparams.get("answers"))
    trained = bool(module.hparams.get("multiple_choice"))
    if trained != dm.multiple_choice:
        kinds = {True: "chooses among each question's options (AVQA)",
                 False: "answers from a vocabulary (MUSIC-AVQA and its variants)"}
        raise ConfigError(f"{ckpt}: its model {kinds[trained]}, but the questions of "
                          f"data={cfg.data.name} need a model that {kinds[not trained]}; "
                          "evaluate it on data of its own kind")
    return dm


def checkpoint_run(cfg: Config, ckpt: str | Path) -> Config:
    """``cfg`` with the run folder that evaluating ``ckpt`` writes into: ``name=`` /
    ``output_dir=`` when given, else the checkpoint's own run (``<run>/checkpoints/x.ckpt``),
    else ``<output_dir>/<checkpoint file stem>``, so that evaluating one run's checkpoint never
    overwrites the results of the default run ``runs/avmaster``."""
    chosen = {o.split("=", 1)[0] for o in cfg.overrides} & {"name", "output_dir"}
    if chosen or (cfg.name, cfg.output_dir) != (Config.name, Config.output_dir):
        return cfg
    run = run_of(ckpt) or Path(cfg.output_dir) / Path(ckpt).stem
    return replace(cfg, output_dir=str(run.parent), name=run.name)


def evaluate(cfg: Config, ckpt: str | None = None, trainer_logs: bool = True,
             dm: AVQADataModule | None = None) -> dict[str, float]:
    """Per-type accuracy of a checkpoint on ``data.test``; writes ``results.json``/``.md`` and,
    with ``save_predictions``, ``predictions.jsonl`` (question id, answer, top-5) in the run
    folder :func:`checkpoint_run` chooses. Returns the table (percent)."""
    if cfg.variants:
        raise ConfigError(f"variants={','.join(cfg.variants)}: evaluated by "
                          "avmaster.variants.evaluate_variants (as `avmaster eval` does)")
    ckpt, raw, module = load_module(ckpt or cfg.ckpt)
    cfg = checkpoint_run(cfg, ckpt)
    use_inference(module, cfg, ckpt)
    record = checkpoint_record(raw, cfg)
    # after training, its datamodule (files loaded once, warnings given once) is reused
    dm = dm or data_for(module, cfg, ckpt)
    trainer = build_trainer(cfg, logs=trainer_logs)
    logged = trainer.test(module, datamodule=dm, verbose=False)[0]
    columns = [c for c, _ in dm.spec.columns]
    accuracy = {c: float(logged[f"test/{c}"]) for c in columns}
    groups = torch.from_numpy(dm.dataset("test").groups)
    counts = dm.spec.counts(torch.bincount(groups, minlength=len(dm.spec.groups)).tolist())
    chosen = [o for o in cfg.overrides if o.startswith("inference.")]
    out = cfg.run_dir / results_name(cfg.data.name, "_".join(chosen))
    meta = results_meta(cfg, ckpt, record, cfg.inference)
    if "test" in dm.left_out:
        meta["questions"] = dm.left_out["test"].as_dict()
    if trainer.is_global_zero:
        meta["data_config"] = data_config(cfg)
        js, md = write_results(out, dm.spec, accuracy, counts,
                               result_label(record, ", ".join(chosen)), meta=meta)
        print(md.read_text())
        if "questions" in meta:
            q = meta["questions"]
            print(f"evaluated on {q['evaluated']} of {q['annotated']} questions "
                  f"({len(q['videos_without_features'])} videos without features left out)")
        log.info("results written to %s and %s", js, md)
    if cfg.save_predictions:
        write_predictions(trainer, module, dm, cfg.run_dir / f"predictions_{cfg.data.name}.jsonl")
    return accuracy


def data_config(cfg: Config) -> dict[str, Any]:
    """The data section with absolute folders: what ``avmaster compare`` reloads the test
    split from, wherever it is run."""
    out = to_dict(cfg.data)
    for key in ("annotations_dir", "features_dir"):
        out[key] = str(Path(out[key]).resolve())
    return out


def write_predictions(trainer: L.Trainer, module: AVMasterModule, dm: AVQADataModule,
                      path: Path) -> None:
    """One JSON line per test question: id, predicted answer, the top answers with their
    probabilities (``top5``)."""
    if trainer.world_size > 1:
        log.warning("predictions are written by single-process evaluation only; rerun "
                    "`avmaster eval ... trainer.devices=1` to get %s", path)
        return
    outputs = trainer.predict(module, datamodule=dm)
    if not outputs:
        return
    records = dm.dataset("test").records
    answers = module.hparams.get("answers")
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for out in outputs:
            for i, top, prob in zip(out["index"].tolist(), out[TOP_KEY].tolist(),
                                    out[f"{TOP_KEY}_prob"].tolist(), strict=True):
                r = records[i]
                names = [answers[k] if answers else (r.options or ())[k] for k in top]
                f.write(json.dumps({"question_id": r.question_id, "answer": names[0],
                                    TOP_KEY: [[n, round(p, 4)] for n, p in zip(names, prob,
                                                                               strict=True)]})
                        + "\n")
