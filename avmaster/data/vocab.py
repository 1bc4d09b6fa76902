"""The answer vocabulary: answer text <-> class index."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from avmaster.data.annotations import answer_key
from avmaster.data.records import QARecord
from avmaster.errors import ConfigError

log = logging.getLogger(__name__)

# The one "no label" value: an answer outside the vocabulary (or a multiple-choice question
# without its answer). The losses leave it out; the metrics score it wrong.
NO_LABEL = -1
UNKNOWN = NO_LABEL  # the earlier name, kept importable


class AnswerVocab:
    """An ordered list of answers. ``index(a)`` is :data:`NO_LABEL` for answers it lacks.

    Answers are matched by :func:`answer_key`; spellings of one answer in the list (trailing
    space, case) are one class, spelled as first listed.
    """

    def __init__(self, answers: Sequence[str]):
        self.answers: list[str] = []
        self._index: dict[str, int] = {}
        self.merged: dict[str, str] = {}  # a variant spelling -> the answer it was merged into
        for a in answers:
            key = answer_key(a)
            if key in self._index:
                first = self.answers[self._index[key]]
                if str(a) == first:
                    dup = [x for x, n in Counter(map(str, answers)).items() if n > 1]
                    raise ValueError(f"the answer vocabulary lists {dup} more than once")
                self.merged[str(a)] = first
                continue
            self._index[key] = len(self.answers)
            self.answers.append(str(a).strip())

    @classmethod
    def from_file(cls, path: Path | str) -> AnswerVocab:
        """A JSON list of answers (MUSIC-AVQA's 42-answer file) or a JSON object answer -> id."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: answer vocabulary file not found; set data.answers "
                                    "to a JSON list of answers, or null to build it from train")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno} "
                              f"({e.msg}); an answer vocabulary is a JSON list of answers"
                              ) from None
        if isinstance(data, dict):
            data = [a for a, _ in sorted(data.items(), key=lambda kv: kv[1])]
        if not isinstance(data, list) or not data:
            raise ConfigError(f"{path}: expected a non-empty JSON list of answers")
        try:
            vocab = cls(data)
        except ValueError as e:
            raise ConfigError(f"{path}: {e}; list each answer once") from None
        if vocab.merged:
            log.warning("%s: %d answers are spelling variants of others and were merged: %s",
                        path, len(vocab.merged),
                        ", ".join(f"{a!r} -> {b!r}" for a, b in list(vocab.merged.items())[:5]))
        return vocab

    @classmethod
    def from_records(cls, records: Iterable[QARecord]) -> AnswerVocab:
        """Answers of the training records, most frequent first (ties alphabetical); spelling
        variants take the most frequent spelling's class."""
        counts = Counter(r.answer for r in records)
        return cls(sorted(counts, key=lambda a: (-counts[a], a)))

    def index(self, answer: str) -> int:
        return self._index.get(answer_key(answer), NO_LABEL)

    def __contains__(self, answer: str) -> bool:
        return answer_key(answer) in self._index

    def __len__(self) -> int:
        return len(self.answers)

    def __getitem__(self, i: int) -> str:
        return self.answers[i]
