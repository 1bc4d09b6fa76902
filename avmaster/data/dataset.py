"""A torch Dataset joining QA records with cached features, and its batching."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from avmaster.data.annotations import AnnotationError
from avmaster.data.batch import Batch
from avmaster.data.records import QARecord
from avmaster.data.segments import segment_seconds
from avmaster.data.store import MissingFeaturesError, TextFeatures, VideoFeatures
from avmaster.data.tables import TableSpec
from avmaster.data.vocab import NO_LABEL, AnswerVocab


def required_texts(records: Sequence[QARecord]) -> list[str]:
    """Every text the model reads for these records: questions and multiple-choice options."""
    seen: dict[str, None] = {}
    for r in records:
        seen.setdefault(r.question)
        for o in r.options or ():
            seen.setdefault(o)
    return list(seen)


class QADataset(Dataset):
    """Items are :class:`~avmaster.data.batch.Batch` dicts; labels index ``vocab`` or the options.

    Every video and text the records need is checked up front: missing ones raise one
    :class:`MissingFeaturesError` listing them, before any training starts.
    """

    def __init__(self, records: Sequence[QARecord], vocab: AnswerVocab | None,
                 visual: VideoFeatures, audio: VideoFeatures, text: TextFeatures,
                 spec: TableSpec, segments: int | None = None, question_padding: str = "batch"):
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
            self.labels = np.array([NO_LABEL if r.answer_index is None else r.answer_index
                                    for r in self.records], dtype=np.int64)
        else:
            if vocab is None:
                raise ValueError("open-ended questions need an answer vocabulary")
            self.labels = np.array([vocab.index(r.answer) for r in self.records], dtype=np.int64)
        self.groups = np.array([spec.group_of(r) for r in self.records], dtype=np.int64)
        self._seconds = segment_seconds(visual.seconds or 0, segments)
        self._visual_rows = visual.rows([r.video_id for r in self.records])
        self._audio_rows = audio.rows([r.video_id for r in self.records])
        self._text_rows = text.rows([r.question for r in self.records])
        # "split": every batch's question tokens padded to the longest question of the split
        self._min_tokens = (int(text.lengths(self._text_rows).max(initial=1))
                        if question_padding == "split" else 1)
        if self.multiple_choice:
            k = _option_count(self.records)
            self._option_rows = text.rows([o for r in self.records for o in r.options or ()]
                                          ).reshape(len(self.records), k)

    @property
    def num_unknown(self) -> int:
        """Questions whose answer is outside the vocabulary (scored wrong, not trained on)."""
        return int((self.labels == NO_LABEL).sum())

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Batch:
        """One question as a batch of one (see :meth:`__getitems__`)."""
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """A whole batch in a few vectorised reads (DataLoader calls this with the indices of
        one batch); keys and shapes as in :class:`~avmaster.data.batch.Batch`."""
        idx = np.asarray(indices, dtype=np.int64)
        sentence, tokens, mask = self.text.take(self._text_rows[idx], self._min_tokens)
        visual, audio = self.visual.take(self._visual_rows[idx]), self.audio.take(
            self._audio_rows[idx])
        if self._seconds is not None:
            visual, audio = visual[:, self._seconds], audio[:, self._seconds]
        batch: Batch = {
            "visual": torch.from_numpy(visual),
            "audio": torch.from_numpy(audio),
            "question": torch.from_numpy(sentence),
            "question_tokens": torch.from_numpy(tokens),
            "question_mask": torch.from_numpy(mask),
            "label": torch.from_numpy(self.labels[idx]),
            "group": torch.from_numpy(self.groups[idx]),
            "index": torch.from_numpy(idx),
        }
        if self.multiple_choice:
            opts = self._option_rows[idx]  # [B, K]
            sent, _, _ = self.text.take(opts.reshape(-1))
            batch["options"] = torch.from_numpy(sent.reshape(*opts.shape, -1))
        return batch


def _option_count(records: Sequence[QARecord]) -> int:
    """The number of options every question of a multiple-choice split has (the decoders score
    a fixed number); the first question with another number is an :class:`AnnotationError`."""
    k = Counter(len(r.options or ()) for r in records).most_common(1)[0][0]
    for r in records:
        if (n := len(r.options or ())) != k:
            raise AnnotationError(r.source[0], f"{n} answer options where the split's other "
                                  f"questions have {k}: give every question the same options "
                                  "count", r.source[1], "multi_choice")
    return k
