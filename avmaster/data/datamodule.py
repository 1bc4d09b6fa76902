"""One LightningDataModule for every dataset variant; the data config chooses files and table."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
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
from avmaster.data.store import TextFeatures, VideoFeatures
from avmaster.data.tables import TableSpec, get_table
from avmaster.data.vocab import AnswerVocab
from avmaster.paths import resolve

log = logging.getLogger(__name__)
STAGES = ("train", "val", "test")


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
                raise ValueError("data.test_head and data.test_tail go together; set both")
            sets = load_head_tail(self.annotation_path(cfg.test_head),
                                  self.annotation_path(cfg.test_tail), stage)
        else:
            files = list(getattr(cfg, stage))
            if not files:
                return None
            sets = concat([load_annotations(self.annotation_path(f), stage, cfg.format)
                           for f in files], stage)
            if stage == "test" and self.spec.head_tail:
                sets.records = ensure_head_tail(sets.records, cfg.head_tail_ratio)
        self.annotations[stage] = sets
        log.info(sets.summary())
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
                    raise ValueError("no answer vocabulary: set data.answers, list data.train "
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
                raise ValueError(f"data.{stage} lists no annotation file")
            vocab = None if self.multiple_choice else self.build_vocab()
            ds = QADataset(split.records, vocab, *self.stores(), self.spec)
            if ds.num_unknown:
                what = "left out of the losses" if stage == "train" else "scored as wrong"
                log.warning("%s: %d of %d answers are outside the answer vocabulary; %s",
                            stage, ds.num_unknown, len(ds), what)
            self.datasets[stage] = ds
        return self.datasets[stage]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                  "predict": ("test",), None: STAGES}[stage]
        for s in wanted:
            if self.load_split(s) is not None:
                self.dataset(s)

    # -- loaders -------------------------------------------------------------------------
    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        c = self.cfg
        return DataLoader(
            self.dataset(stage),
            batch_size=c.batch_size if stage == "train" else c.eval_batch_size,
            shuffle=shuffle,
            num_workers=c.num_workers,
            collate_fn=_identity,  # QADataset.__getitems__ already collates
            pin_memory=c.pin_memory,
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
