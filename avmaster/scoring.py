"""Score a predictions file against annotations: expert models and AV-LLMs on one table.

Predictions are JSONL (one object per line) or one JSON object/list. Each prediction names its
question (``question_id`` or ``id``) and gives an answer as ``answer``/``prediction``/``pred``/
``text``/``output``: vocabulary text, free text (``<answer>X</answer>`` as Crab emits, or a
sentence naming one answer), or, for multiple choice, an option index or option text.
A prediction that maps to no answer, and a question with no prediction, are scored wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from avmaster.data.records import QARecord
from avmaster.data.tables import TableSpec
from avmaster.data.vocab import NO_LABEL, AnswerVocab
from avmaster.metrics import GroupedAccuracy

ID_KEYS = ("question_id", "id", "qid")
ANSWER_KEYS = ("answer", "prediction", "pred", "text", "output", "response")
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
NUMBERS = {str(i): w for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"])}


class PredictionError(ValueError):
    """A predictions file that cannot be read; names the file, the line and the field."""


def normalise(text: str) -> str:
    """Lower case, underscores and hyphens as spaces, punctuation dropped, digits as words."""
    text = text.lower().replace("_", " ").replace("-", " ")
    text = re.sub(r"[^\w\s]", " ", text)
    words = [NUMBERS.get(w, w) for w in text.split()]
    return " ".join(words)


class AnswerMapper:
    """Maps free text to one answer of a list (vocabulary or a question's options)."""

    def __init__(self, answers: Sequence[str]):
        self.answers = list(answers)
        self._exact = {normalise(a): i for i, a in enumerate(self.answers)}
        # longest first, so "more than ten" wins over "ten" inside the same text
        self._phrases = sorted(self._exact.items(), key=lambda kv: -len(kv[0]))

    def __call__(self, text: str) -> int:
        """Index of the answer ``text`` names, or :data:`NO_LABEL`.

        Order: the ``<answer>`` tag's content if present; an exact match after
        :func:`normalise`; else the answer phrase occurring first in the text, when exactly one
        distinct answer occurs (text naming two different answers is ambiguous: scored wrong).
        """
        tag = ANSWER_TAG.search(text)
        norm = normalise(tag.group(1) if tag else text)
        if norm in self._exact:
            return self._exact[norm]
        padded, found = f" {norm} ", []
        for phrase, i in self._phrases:
            pos = padded.find(f" {phrase} ")
            if pos >= 0:
                found.append((pos, i))
                padded = padded.replace(f" {phrase} ", " " + "#" * len(phrase) + " ")
        return found[0][1] if len({i for _, i in found}) == 1 else NO_LABEL


def read_predictions(path: Path | str) -> dict[str, str | int]:
    """Question id -> raw prediction (text or option index)."""
    path = Path(path)
    if not path.exists():
        raise PredictionError(f"{path}: predictions file not found")
    text = path.read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
        rows = whole if isinstance(whole, list) else None
        if isinstance(whole, dict):
            if not any(k in whole for k in ID_KEYS):  # {question_id: answer}
                return {str(k): v for k, v in whole.items()}
            rows = [whole]
    except json.JSONDecodeError:
        rows = None
    if rows is None:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise PredictionError(f"{path}, line {n}: not JSON ({e.msg}); expected one "
                                      'object per line like {"question_id": 1, "answer": "two"}'
                                      ) from e
    out: dict[str, str | int] = {}
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise PredictionError(f"{path}, entry {n}: expected a JSON object")
        qid = next((row[k] for k in ID_KEYS if k in row), None)
        ans = next((row[k] for k in ANSWER_KEYS if k in row), None)
        if qid is None:
            raise PredictionError(f"{path}, entry {n}: no question id field (one of {ID_KEYS})")
        if ans is None:
            raise PredictionError(f"{path}, entry {n}, question {qid}: no answer field (one of "
                                  f"{ANSWER_KEYS})")
        qid = str(int(qid)) if isinstance(qid, float) and qid.is_integer() else str(qid)
        out[qid] = ans
    return out


@dataclass
class ScoreReport:
    accuracy: dict[str, float]
    counts: dict[str, int]
    missing: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    extra: int = 0

    def summary(self) -> str:
        parts = [f"{sum(1 for _ in self.counts)} columns"]
        if self.missing:
            parts.append(f"{len(self.missing)} questions without a prediction (scored wrong)")
        if self.unmapped:
            parts.append(f"{len(self.unmapped)} predictions that name no answer (scored wrong)")
        if self.extra:
            parts.append(f"{self.extra} predictions for questions not in the annotations (ignored)")
        return "; ".join(parts)


def score(predictions: dict[str, str | int], records: Sequence[QARecord], spec: TableSpec,
          vocab: AnswerVocab | None) -> ScoreReport:
    """Per-type accuracy of ``predictions`` on ``records`` (vocab: open-ended answers)."""
    mapper = AnswerMapper(vocab.answers) if vocab is not None else None
    pred, label, group = [], [], []
    missing, unmapped = [], []
    for r in records:
        raw = predictions.get(r.question_id)
        if r.options:
            target = r.answer_index if r.answer_index is not None else NO_LABEL
            if isinstance(raw, int) or (isinstance(raw, str) and raw.strip().isdigit()):
                p = int(raw)
            else:
                p = AnswerMapper(r.options)(str(raw)) if raw is not None else NO_LABEL
        else:
            assert mapper is not None and vocab is not None, "open-ended scoring needs a vocab"
            target = vocab.index(r.answer)
            p = mapper(str(raw)) if raw is not None else NO_LABEL
        if raw is None:
            missing.append(r.question_id)
        elif p == NO_LABEL:
            unmapped.append(r.question_id)
        pred.append(p)
        label.append(target)
        group.append(spec.group_of(r))
    metric = GroupedAccuracy(spec)  # an NO_LABEL label never counts as correct
    metric.update(torch.tensor(pred), torch.tensor(label), torch.tensor(group))
    ids = {r.question_id for r in records}
    return ScoreReport(metric.compute(), metric.counts(), missing, unmapped,
                       sum(1 for q in predictions if q not in ids))
