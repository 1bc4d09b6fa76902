"""The typed question-answer record every annotation format is loaded into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# MUSIC-AVQA's nine question types, in the column order of the papers' tables.
MUSIC_AVQA_TYPES: tuple[tuple[str, str, str], ...] = (
    ("Audio", "Counting", "a_count"),
    ("Audio", "Comparative", "a_comp"),
    ("Visual", "Counting", "v_count"),
    ("Visual", "Location", "v_local"),
    ("Audio-Visual", "Existential", "av_exist"),
    ("Audio-Visual", "Counting", "av_count"),
    ("Audio-Visual", "Location", "av_local"),
    ("Audio-Visual", "Comparative", "av_comp"),
    ("Audio-Visual", "Temporal", "av_temp"),
)
MODALITY_PREFIX = {"Audio": "a", "Visual": "v", "Audio-Visual": "av"}

# AVQA (Yang et al., MM'22) question types, in the order the dataset paper lists them.
AVQA_TYPES: tuple[str, ...] = (
    "Which", "Come From", "Happening", "Where", "Why", "Before Next", "When", "Used For",
)


@dataclass(frozen=True)
class QARecord:
    """One question about one video, whatever file format it came from.

    ``question`` is the filled text without its trailing question mark, as the text encoder
    sees it. ``options``/``answer_index`` are set for multiple-choice datasets (AVQA).
    ``source`` is ``(file, entry index)`` for error messages; ``extra`` keeps every field the
    format has beyond these (``templ_values``, ``unmatch_audio``, ``head_tail``, ...).
    """

    question_id: str
    video_id: str
    question: str
    answer: str
    modality: str
    qtype: str
    split: str
    template: str = ""
    options: tuple[str, ...] | None = None
    answer_index: int | None = None
    source: tuple[str, int] = ("", -1)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def type_key(self) -> str:
        """``'Audio/Counting'``-style key of the question type."""
        return f"{self.modality}/{self.qtype}" if self.modality else self.qtype
