"""The question and option texts of annotation files, and the videos they refer to."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from avmaster.data.annotations import load_annotations
from avmaster.data.records import QARecord


@dataclass(frozen=True)
class AnnotationTexts:
    """Unique texts to encode (sorted) and the video ids the annotations ask for (sorted)."""

    texts: tuple[str, ...]
    video_ids: tuple[str, ...]
    n_records: int


def record_texts(records: Iterable[QARecord]) -> list[str]:
    """Every record's question plus every option text, in order, duplicates kept."""
    out: list[str] = []
    for r in records:
        out.append(r.question)
        out.extend(r.options or ())
    return out


def collect_texts(paths: Sequence[Path | str], fmt: str = "auto") -> AnnotationTexts:
    """Load every annotation file and gather its texts and video ids (each once)."""
    texts: set[str] = set()
    videos: set[str] = set()
    n = 0
    for p in paths:
        records = load_annotations(p, split=Path(p).stem, fmt=fmt).records
        n += len(records)
        texts.update(record_texts(records))
        videos.update(r.video_id for r in records)
    return AnnotationTexts(tuple(sorted(texts)), tuple(sorted(videos)), n)
