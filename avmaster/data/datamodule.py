"""One LightningDataModule for every dataset variant; the data config chooses files and table."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from avmaster.data.annotations import (
    AnnotationSet,
    concat,
    ensure_head_tail,
    load_annotations,
    load_head_tail,
)
from avmaster.data.config import DataConfig
from avmaster.data.dataset import QADataset
from avmaster.data.records import QARecord
from avmaster.data.store import MissingFeaturesError, TextFeatures, VideoFeatures
from avmaster.data.tables import TableSpec, get_table
from avmaster.data.vocab import AnswerVocab
from avmaster.errors import ConfigError
from avmaster.paths import resolve

log = logging.getLogger(__name__)
STAGES = ("train", "val", "test")


@dataclass(frozen=True)
class LeftOut:
    """Questions of a split left out because their video has no features."""

    annotated: int
    kept: int
    videos: list[str]

    def as_dict(self) -> dict[str, object]:
        return {"annotated": self.annotated, "evaluated": self.kept,
                "left_out": self.annotated - self.kept, "videos_without_features": self.videos}


class AVQADataModule(L.LightningDataModule):
    """Annotations + feature caches -> batches (:class:`~avmaster.data.batch.Batch`).

    ``answers`` fixes the vocabulary (a checkpoint's, at evaluation); otherwise it comes from
    ``cfg.answers`` or the training answers. ``spec`` is the dataset's per-type table (the
    LightningModule scores evaluation by it).
    """

    def __init__(self, cfg: DataConfig, answers: list[str] | None = None):
        super().__init__()
        self.cfg = cfg
        self.spec: TableSpec = get_table(cfg.table)
        self._answers = answers
        self.vocab: AnswerVocab | None = None
        self.annotations: dict[str, AnnotationSet] = {}
        self.datasets: dict[str, QADataset] = {}
        self.left_out: dict[str, LeftOut] = {}
        self._stores: tuple[VideoFeatures, VideoFeatures, TextFeatures] | None = None

    # -- paths ---------------------------------------------------------------------------
    def annotation_path(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else Path(self.cfg.annotations_dir) / p

    def feature_path(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else Path(self.cfg.features_dir) / p

    # -- loading -------------------------------------------------------------------------
    def load_split(self, stage: str) -> AnnotationSet | None:
        """The records of ``stage`` (None when the config lists no file for it)."""
        if stage in self.annotations:
            return self.annotations[stage]
        cfg = self.cfg
        if stage == "test" and (cfg.test_head or cfg.test_tail):
            if not (cfg.test_head and cfg.test_tail):
                raise ConfigError("data.test_head and data.test_tail go together; set both")
            sets = load_head_tail(self.annotation_path(cfg.test_head),
                                  self.annotation_path(cfg.test_tail), stage)
        else:
            files = list(getattr(cfg, stage))
            if not files:
                return None
            sets = concat([load_annotations(self.annotation_path(f), stage, cfg.format)
                           for f in files], stage)
            if stage == "test" and self.spec.head_tail:
                sets.records = ensure_head_tail(sets.records, cfg.head_tail_ratio,
                                                cfg.head_tail_group)
        self.annotations[stage] = sets
        sets.report(log)
        return sets

    def build_vocab(self) -> AnswerVocab:
        if self.vocab is None:
            if self._answers is not None:
                self.vocab = AnswerVocab(self._answers)
            elif self.cfg.answers:
                path = resolve(self.cfg.answers, self.cfg.annotations_dir)
                self.vocab = AnswerVocab.from_file(path)
            else:
                train = self.load_split("train")
                if train is None:
                    raise ConfigError("no answer vocabulary: choose the dataset with data=NAME "
                                      "(configs/data/), set data.answers or list data.train "
                                      "files, or evaluate a checkpoint (it carries its answers)")
                self.vocab = AnswerVocab.from_records(train.records)
        return self.vocab

    def stores(self) -> tuple[VideoFeatures, VideoFeatures, TextFeatures]:
        if self._stores is None:
            c = self.cfg
            self._stores = (
                VideoFeatures(self.feature_path(c.visual_features), c.seconds, c.preload),
                VideoFeatures(self.feature_path(c.audio_features), c.seconds, c.preload),
                TextFeatures(self.feature_path(c.text_features), c.preload),
            )
        return self._stores

    @property
    def dims(self) -> dict[str, int]:
        """Feature dimensions, read from the files (the model's input sizes)."""
        visual, audio, text = self.stores()
        return {"visual": visual.dim, "audio": audio.dim, "text": text.dim}

    @property
    def multiple_choice(self) -> bool:
        """True when the questions come with options (AVQA): the model then scores options."""
        splits = [a for s in STAGES if (a := self.load_split(s)) is not None and a.records]
        return bool(splits) and splits[0].records[0].options is not None

    def dataset(self, stage: str) -> QADataset:
        if stage not in self.datasets:
            split = self.load_split(stage)
            if split is None:
                raise ConfigError(f"data.{stage} lists no annotation file: choose the dataset "
                                  f"with data=NAME (configs/data/) or list the files as "
                                  f"data.{stage}=[FILE]")
            vocab = None if self.multiple_choice else self.build_vocab()
            records = split.records
            if self.cfg.skip_videos_without_features:
                records = self._leave_out_videos_without_features(stage, records)
            ds = QADataset(records, vocab, *self.stores(), self.spec, self.cfg.segments,
                           self.cfg.question_padding)
            if ds.num_unknown:
                what = "left out of the losses" if stage == "train" else "scored as wrong"
                log.warning("%s: %d of %d answers are outside the answer vocabulary; %s",
                            stage, ds.num_unknown, len(ds), what)
            self.datasets[stage] = ds
        return self.datasets[stage]

    def _leave_out_videos_without_features(self, stage: str, records: list[QARecord]
                                           ) -> list[QARecord]:
        """``records`` less the questions whose video is missing from a feature file; the
        count is logged and kept in :attr:`left_out` (the results file reports it)."""
        visual, audio, _ = self.stores()
        missing = sorted({r.video_id for r in records} - (visual.ids & audio.ids))
        kept = [r for r in records if r.video_id not in set(missing)]
        self.left_out[stage] = LeftOut(len(records), len(kept), missing)
        if missing:
            more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
            log.warning("%s: %d of %d questions left out: %d videos have no features (%s%s); "
                        "data.skip_videos_without_features=true", stage,
                        len(records) - len(kept), len(records), len(missing),
                        ", ".join(missing[:5]), more)
        if not kept:
            raise MissingFeaturesError(visual.path, missing)
        return kept

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                  "predict": ("test",), None: STAGES}[stage]
        for s in wanted:
            if self.load_split(s) is not None:
                self.dataset(s)

    # -- loaders -------------------------------------------------------------------------
    def _pin_memory(self) -> bool:
        """``data.pin_memory`` where batches go to a GPU: the trainer's device, or without a
        trainer whether CUDA is available (pinning for a CPU only warns, once per loader)."""
        if not self.cfg.pin_memory:
            return False
        if self.trainer is not None:
            return self.trainer.strategy.root_device.type == "cuda"
        return torch.cuda.is_available()

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        c = self.cfg
        return DataLoader(
            self.dataset(stage),
            batch_size=c.batch_size if stage == "train" else c.eval_batch_size,
            shuffle=shuffle,
            num_workers=c.num_workers,
            collate_fn=_identity,  # QADataset.__getitems__ already collates
            pin_memory=self._pin_memory(),
            persistent_workers=c.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def _identity(batch):
    return batch


__all__ = ["AVQADataModule"]
