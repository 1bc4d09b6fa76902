"""Loaders for every annotation format: MUSIC-AVQA (original, json_update), MUSIC-AVQA-R,
MUSIC-AVQA-v2.0 (bias, balanced) and AVQA (Yang et al., multiple choice or answer text).

Each returns an :class:`AnnotationSet` of :class:`~avmaster.data.records.QARecord`. Bad input
raises :class:`AnnotationError` naming the file, the entry index and the field.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from avmaster.data.records import AVQA_TYPES, MUSIC_AVQA_TYPES, QARecord

log = logging.getLogger(__name__)

PLACEHOLDER = re.compile(r"<[A-Za-z]+>")
KNOWN_MUSIC_TYPES = {(m, q) for m, q, _ in MUSIC_AVQA_TYPES}
FORMATS = ("auto", "music_avqa", "avqa")
HeadTailGroup = Literal["template", "type"]  # the groups of the head/tail rule (assign_head_tail)


class AnnotationError(ValueError):
    """Bad annotation input: names the file, the entry and the field, and says how to fix it."""

    def __init__(self, path: Path | str, message: str, index: int | None = None,
                 field: str | None = None):
        self.path, self.index, self.field = str(path), index, field
        where = self.path
        if index is not None:
            where += f", entry {index}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


def strip_question(text: str) -> str:
    """Drop surrounding space and the trailing question mark (ASCII or full-width)."""
    text = text.strip()
    while text and text[-1] in "?？":
        text = text[:-1].rstrip()
    return text


def fill_template(template: str, values: Sequence[str]) -> str:
    """Replace the placeholders (``<Object>``, ``<LR>``, ...) in order with ``values``."""
    it = iter(values)
    return PLACEHOLDER.sub(lambda _: str(next(it)), template)


@dataclass
class AnnotationSet:
    """The records of one split, plus what loading found worth reporting."""

    records: list[QARecord]
    paths: tuple[str, ...]
    split: str
    duplicates: dict[str, int] = field(default_factory=dict)
    conflicting: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # answer text naming none of the options

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ceiling(self) -> float:
        """The highest achievable accuracy (%): entries that share a question id, video and
        question but disagree on the answer cannot all be scored correct by one prediction."""
        by_input: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
        conflicting = set(self.conflicting)
        for r in self.records:
            if r.question_id in conflicting:
                by_input[(r.question_id, r.video_id, r.question)][r.answer] += 1
        lost = sum(sum(c.values()) - max(c.values()) for c in by_input.values())
        return 100.0 * (len(self.records) - lost) / max(len(self.records), 1)

    @property
    def noteworthy(self) -> bool:
        """True when the summary reports something a user must know (a warning, not info)."""
        return bool(self.duplicates or self.unmatched)

    def summary(self) -> str:
        out = f"{self.split}: {len(self.records)} questions from {', '.join(self.paths)}"
        if self.duplicates:
            shown = ", ".join(list(self.duplicates)[:5])
            out += (f"; {len(self.duplicates)} question ids occur more than once ({shown}"
                    f"{', ...' if len(self.duplicates) > 5 else ''}), {len(self.conflicting)} of "
                    "them with conflicting answers; every entry is kept and scored")
            if self.conflicting:
                out += f" (achievable ceiling {self.ceiling:.2f} %)"
        if self.unmatched:
            shown = ", ".join(self.unmatched[:5])
            out += (f"; {len(self.unmatched)} answers name none of their options ({shown}"
                    f"{', ...' if len(self.unmatched) > 5 else ''}): scored wrong, not trained on")
        return out

    def report(self, logger: logging.Logger = log) -> None:
        """Log :meth:`summary` once: a warning when it reports duplicates or unmatched answers."""
        (logger.warning if self.noteworthy else logger.info)(self.summary())


def read_json_list(path: Path | str) -> list[dict[str, Any]]:
    """Read a JSON file holding a list of objects, with errors that say where it is wrong."""
    path = Path(path)
    if not path.exists():
        raise AnnotationError(path, "file not found; check the data config's annotation paths")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AnnotationError(path, f"malformed JSON at line {e.lineno}, column {e.colno}: "
                                    f"{e.msg}. Fix the file or download it again") from e
    except UnicodeDecodeError as e:
        raise AnnotationError(path, f"not UTF-8 text ({e}); is this really a JSON file?") from e
    if isinstance(data, dict):  # some releases wrap the list: {"data": [...]} or id -> entry
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            data = lists[0]
        elif all(isinstance(v, dict) for v in data.values()):
            data = list(data.values())
    if not isinstance(data, list):
        raise AnnotationError(path, f"expected a JSON list of question entries, got "
                                    f"{type(data).__name__}")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise AnnotationError(path, f"expected an object, got {type(entry).__name__}", i)
    return data


def detect_format(entries: Sequence[dict[str, Any]], path: Path | str) -> str:
    if not entries:
        raise AnnotationError(path, "the file holds no question entries")
    keys = set(entries[0])
    if "question_content" in keys:
        return "music_avqa"
    if "question_text" in keys:
        return "avqa"
    raise AnnotationError(path, f"unknown annotation format (keys: {sorted(keys)}); expected "
                                "MUSIC-AVQA ('question_content', 'anser', ...) or AVQA "
                                "('question_text', 'multi_choice', ...)", 0)


def _require(entry: dict[str, Any], key: str, path: Path, i: int) -> Any:
    if key not in entry:
        raise AnnotationError(path, "missing; every entry needs it", i, key)
    if entry[key] is None:
        raise AnnotationError(path, "is null; every entry needs a value here", i, key)
    return entry[key]


def _question_id(raw: Any, path: Path, i: int) -> str:
    """Normalise ids: ints as is, floats like 35045.0 as '35045', missing as '<file>#<index>'."""
    if raw is None:
        return f"{path.stem}#{i}"
    if isinstance(raw, float):
        if not raw.is_integer():
            raise AnnotationError(path, f"{raw!r} is not a whole number", i, "question_id")
        return str(int(raw))
    return str(raw)


def _json_list_field(value: Any, path: Path, i: int, key: str) -> list[Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise AnnotationError(path, f"{value!r} is not a JSON list ({e.msg})", i, key) from e
    if not isinstance(value, list):
        raise AnnotationError(path, f"expected a list, got {value!r}", i, key)
    return value


def _music_record(entry: dict[str, Any], path: Path, i: int, split: str) -> QARecord:
    video_id = str(_require(entry, "video_id", path, i))
    template = str(_require(entry, "question_content", path, i))
    key = "anser" if "anser" in entry else "answer" if "answer" in entry else None
    if key is None:
        raise AnnotationError(path, "missing; MUSIC-AVQA spells the answer key 'anser'", i, "anser")
    answer = _require(entry, key, path, i)
    qtype = _json_list_field(_require(entry, "type", path, i), path, i, "type")
    if len(qtype) != 2 or (qtype[0], qtype[1]) not in KNOWN_MUSIC_TYPES:
        known = ", ".join(f"{m}/{q}" for m, q, _ in MUSIC_AVQA_TYPES)
        raise AnnotationError(path, f"unknown question type {qtype!r}; known: {known}", i, "type")
    values = _json_list_field(entry.get("templ_values", "[]"), path, i, "templ_values")
    slots = PLACEHOLDER.findall(template)
    if len(slots) != len(values):
        raise AnnotationError(
            path, f"{len(values)} values {values!r} for {len(slots)} placeholders in "
                  f"{template!r}; the values fill the placeholders in order, one each", i,
            "templ_values")
    core = {"video_id", "question_id", "type", "question_content", "anser", "answer"}
    extra = {k: v for k, v in entry.items() if k not in core}
    extra["templ_values"] = [str(v) for v in values]
    return QARecord(
        question_id=_question_id(entry.get("question_id"), path, i),
        video_id=video_id,
        question=strip_question(fill_template(template, values)),
        answer=str(answer).strip(),
        modality=qtype[0],
        qtype=qtype[1],
        split=split,
        template=template,
        source=(str(path), i),
        extra=extra,
    )


def _avqa_record(entry: dict[str, Any], path: Path, i: int, split: str) -> QARecord:
    text = str(_require(entry, "question_text", path, i))
    qtype = str(_require(entry, "question_type", path, i))
    if qtype not in AVQA_TYPES:
        raise AnnotationError(path, f"unknown question type {qtype!r}; known: "
                                    f"{', '.join(AVQA_TYPES)}", i, "question_type")
    name = entry.get("video_name")
    video_id = Path(str(name)).stem if name else str(_require(entry, "video_id", path, i))
    answer = _require(entry, "answer", path, i)
    options, answer_index = None, None
    if "multi_choice" in entry:
        options = tuple(str(o) for o in _json_list_field(entry["multi_choice"], path, i,
                                                          "multi_choice"))
        answer_index = _option_index(answer, options, path, i)
        if answer_index is not None:
            answer = options[answer_index]
    core = {"question_text", "question_type", "answer", "multi_choice", "id"}
    extra = {k: v for k, v in entry.items() if k not in core}
    return QARecord(
        question_id=_question_id(entry.get("id"), path, i),
        video_id=video_id,
        question=strip_question(text),
        answer=str(answer).strip(),
        modality="",
        qtype=qtype,
        split=split,
        template=text,
        options=options,
        answer_index=answer_index,
        source=(str(path), i),
        extra=extra,
    )


def answer_key(text: str) -> str:
    """The form answers are compared in: surrounding and repeated space dropped, case folded
    (released vocabularies carry ``"yes "`` next to ``"yes"``, or ``"Yes"``)."""
    return " ".join(str(text).split()).casefold()


def _option_index(answer: Any, options: Sequence[str], path: Path, i: int) -> int | None:
    """The option ``answer`` picks: an index (AVQA), or an option's text (derived splits such
    as AVQACL's, compared by :func:`answer_key`); ``None`` for text naming no option."""
    if isinstance(answer, bool):
        raise AnnotationError(path, f"{answer!r} is neither an option index nor option text", i,
                              "answer")
    if isinstance(answer, int) or (isinstance(answer, str) and answer.strip().isdigit()):
        index = int(answer)
        if not 0 <= index < len(options):
            raise AnnotationError(path, f"index {index} outside the {len(options)} options", i,
                                  "answer")
        return index
    keys = [answer_key(o) for o in options]
    return keys.index(answer_key(answer)) if answer_key(answer) in keys else None


def _find_duplicates(records: Iterable[QARecord]) -> tuple[dict[str, int], list[str]]:
    answers: dict[str, set[str]] = defaultdict(set)
    counts = Counter()
    for r in records:
        counts[r.question_id] += 1
        answers[r.question_id].add(r.answer)
    dup = {q: n for q, n in counts.items() if n > 1}
    return dup, [q for q in dup if len(answers[q]) > 1]


def load_annotations(path: Path | str, split: str = "test", fmt: str = "auto") -> AnnotationSet:
    """Load one annotation file of any supported format into typed records."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown annotation format {fmt!r}; choose one of {FORMATS}")
    path = Path(path)
    entries = read_json_list(path)
    fmt = detect_format(entries, path) if fmt == "auto" else fmt
    build = _music_record if fmt == "music_avqa" else _avqa_record
    records = [build(e, path, i, split) for i, e in enumerate(entries)]
    dup, conflicting = _find_duplicates(records)
    return AnnotationSet(records, (str(path),), split, dup, conflicting, _unmatched(records))


def _unmatched(records: Iterable[QARecord]) -> list[str]:
    return [r.question_id for r in records if r.options is not None and r.answer_index is None]


def concat(sets: Sequence[AnnotationSet], split: str) -> AnnotationSet:
    """One split from several files (loading logs nothing: call :meth:`AnnotationSet.report`
    once on the result, so each finding is printed once)."""
    records = [r for s in sets for r in s.records]
    dup, conflicting = _find_duplicates(records)
    return AnnotationSet(records, tuple(p for s in sets for p in s.paths), split, dup,
                         conflicting, _unmatched(records))


HEAD_TAIL_GROUPS: tuple[str, ...] = get_args(HeadTailGroup)


def head_tail_group(r: QARecord, group: str) -> str:
    """The group whose answer counts decide head/tail: the question template (default) or
    the question type."""
    return f"{r.type_key}|{r.template}" if group == "template" else r.type_key


def assign_head_tail(records: Sequence[QARecord], ratio: float = 1.2,
                     group: str = "template") -> list[QARecord]:
    """MUSIC-AVQA-R's head/tail rule: within a group, an answer is *head* when its count
    exceeds ``ratio`` times the mean count of the group's answers, else *tail*.

    The authors (github.com/reml-group/MUSIC-AVQA-R, README.md "Dataset"; arXiv 2404.12020)
    state the rule and cite GQA-OOD but publish no splitting code. Groups are question templates
    by default: per-type groups leave yes/no types without head questions (2 answers: head
    needs > 60 %), while the released files have head and tail in all nine types.
    """
    if group not in HEAD_TAIL_GROUPS:
        raise ValueError(f"head/tail group {group!r}: choose one of {HEAD_TAIL_GROUPS}")
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        counts[head_tail_group(r, group)][r.answer] += 1
    head = {g: {a for a, n in c.items() if n > ratio * (sum(c.values()) / len(c))}
            for g, c in counts.items()}
    return [_with_extra(r, head_tail="head" if r.answer in head[head_tail_group(r, group)]
                        else "tail") for r in records]


def ensure_head_tail(records: Sequence[QARecord], ratio: float = 1.2,
                     group: str = "template") -> list[QARecord]:
    """Records with a head/tail label each: kept when every record has one (MUSIC-AVQA-R's
    head and tail files, or a ``head_tail`` field), else :func:`assign_head_tail` for all."""
    if records and all("head_tail" in r.extra for r in records):
        return list(records)
    return assign_head_tail(records, ratio, group)


def load_head_tail(head: Path | str, tail: Path | str, split: str = "test") -> AnnotationSet:
    """MUSIC-AVQA-R as released: one file of head questions, one of tail questions."""
    parts = []
    for name, p in (("head", head), ("tail", tail)):
        s = load_annotations(p, split)
        s.records = [_with_extra(r, head_tail=name) for r in s.records]
        parts.append(s)
    return concat(parts, split)


def _with_extra(r: QARecord, **kv: Any) -> QARecord:
    return replace(r, extra={**r.extra, **kv})
