"""A torch Dataset joining QA records with cached features, and its batching."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from avmaster.data.records import QARecord
from avmaster.data.store import MissingFeaturesError, TextFeatures, VideoFeatures
from avmaster.data.vocab import UNKNOWN, AnswerVocab
from avmaster.metrics import TableSpec

Batch = dict[str, torch.Tensor]


def required_texts(records: Sequence[QARecord]) -> list[str]:
    """Every text the model reads for these records: questions and multiple-choice options."""
    seen: dict[str, None] = {}
    for r in records:
        seen.setdefault(r.question)
        for o in r.options or ():
            seen.setdefault(o)
    return list(seen)


class QADataset(Dataset):
    """Items are dicts of arrays (see :func:`collate`); labels index ``vocab`` or the options.

    Every video and text the records need is checked up front: missing ones raise one
    :class:`MissingFeaturesError` listing them, before any training starts.
    """

    def __init__(self, records: Sequence[QARecord], vocab: AnswerVocab | None,
                 visual: VideoFeatures, audio: VideoFeatures, text: TextFeatures,
                 spec: TableSpec):
        self.records = list(records)
        self.visual, self.audio, self.text = visual, audio, text
        videos = {r.video_id for r in self.records}
        missing = sorted(v for v in videos if v not in visual or v not in audio)
        if missing:
            path = visual.path if any(v not in visual for v in missing) else audio.path
            raise MissingFeaturesError(path, missing)
        text.check(required_texts(self.records))
        self.multiple_choice = any(r.options for r in self.records)
        if self.multiple_choice:
            self.labels = np.array([UNKNOWN if r.answer_index is None else r.answer_index
                                    for r in self.records], dtype=np.int64)
        else:
            if vocab is None:
                raise ValueError("open-ended questions need an answer vocabulary")
            self.labels = np.array([vocab.index(r.answer) for r in self.records], dtype=np.int64)
        self.groups = np.array([spec.group_of(r) for r in self.records], dtype=np.int64)

    @property
    def num_unknown(self) -> int:
        """Questions whose answer is outside the vocabulary (scored wrong, not trained on)."""
        return int((self.labels == UNKNOWN).sum())

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, np.ndarray | int]:
        r = self.records[i]
        q = self.text[r.question]
        item: dict[str, np.ndarray | int] = {
            "visual": self.visual[r.video_id],
            "audio": self.audio[r.video_id],
            "question": q.sentence,
            "question_tokens": q.tokens,
            "label": int(self.labels[i]),
            "group": int(self.groups[i]),
            "index": i,
        }
        if self.multiple_choice:
            item["options"] = np.stack([self.text[o].sentence for o in r.options or ()])
        return item

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """Batched fetch (used by DataLoader): returns the collated batch directly."""
        return collate([self[i] for i in indices])


def collate(items: Sequence[dict[str, np.ndarray | int]]) -> Batch:
    """Stack items; pad question tokens to the longest with a boolean ``question_mask``."""
    lengths = [it["question_tokens"].shape[0] for it in items]  # type: ignore[union-attr]
    dim = items[0]["question_tokens"].shape[1]  # type: ignore[union-attr]
    tokens = np.zeros((len(items), max(lengths), dim), dtype=np.float32)
    mask = np.zeros((len(items), max(lengths)), dtype=bool)
    for b, (it, n) in enumerate(zip(items, lengths, strict=True)):
        tokens[b, :n] = it["question_tokens"]
        mask[b, :n] = True
    batch = {
        "visual": torch.from_numpy(np.stack([it["visual"] for it in items])),
        "audio": torch.from_numpy(np.stack([it["audio"] for it in items])),
        "question": torch.from_numpy(np.stack([it["question"] for it in items])),
        "question_tokens": torch.from_numpy(tokens),
        "question_mask": torch.from_numpy(mask),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "group": torch.tensor([it["group"] for it in items], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }
    if "options" in items[0]:
        batch["options"] = torch.from_numpy(np.stack([it["options"] for it in items]))
    return batch
