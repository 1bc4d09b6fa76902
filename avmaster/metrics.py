"""Per-question-type accuracy tables, in the papers' column order, correct under DDP.

A :class:`TableSpec` assigns every record a *group* (a question type, or type x head/tail) and
defines the table's columns as unions of groups. :class:`GroupedAccuracy` is a torchmetrics
metric holding per-group correct/total counts (summed across processes); the table is computed
from those counts, so averages are over questions, as in the papers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torchmetrics import Metric

from avmaster.data.records import AVQA_TYPES, MODALITY_PREFIX, MUSIC_AVQA_TYPES, QARecord
from avmaster.io import atomic_write_text
from avmaster.stats import INTERVAL_METHOD, LEVEL, accuracy_intervals, correct_counts


@dataclass(frozen=True)
class TableSpec:
    """Groups (the finest cells) and columns (named unions of groups, in paper order)."""

    name: str
    groups: tuple[str, ...]
    columns: tuple[tuple[str, tuple[int, ...]], ...]

    def group_of(self, record: QARecord) -> int:
        key = record.type_key
        if self.name == "music_avqa_r":
            key += "/" + record.extra.get("head_tail", "tail")
        try:
            return self.groups.index(key)
        except ValueError:
            raise ValueError(f"{record.source[0]}, entry {record.source[1]}: question type "
                             f"{key!r} has no column in the {self.name} table") from None

    def table(self, correct: Sequence[float], total: Sequence[float]) -> dict[str, float]:
        """Accuracy in percent per column; NaN where a column has no question."""
        out = {}
        for col, members in self.columns:
            n = sum(total[g] for g in members)
            out[col] = 100.0 * sum(correct[g] for g in members) / n if n else float("nan")
        return out

    def counts(self, total: Sequence[float]) -> dict[str, int]:
        return {col: int(sum(total[g] for g in members)) for col, members in self.columns}

    def markdown(self, rows: Mapping[str, Mapping[str, float]],
                 intervals: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
                 counts: Mapping[str, int] | None = None,
                 std: Mapping[str, Mapping[str, float]] | None = None) -> str:
        """A Markdown table, one row per method, in this spec's column order. A method with
        ``std`` (over seeds) shows ``mean ±std``; one with ``intervals`` gets a ``95 % CI`` row
        under it; ``counts`` adds an ``n`` row (questions per column)."""
        cols = [c for c, _ in self.columns]
        lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for method, vals in rows.items():
            spread = (std or {}).get(method, {})
            cells = [_fmt(vals.get(c)) + (f" ±{spread[c]:.2f}" if c in spread else "")
                     for c in cols]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
            ci = (intervals or {}).get(method)
            if ci:
                cells = [f"{_fmt(ci[c][0])}-{_fmt(ci[c][1])}" if c in ci else "-" for c in cols]
                lines.append(f"| {CI_LABEL} | " + " | ".join(cells) + " |")
        if counts:
            lines.append("| n | " + " | ".join(str(counts.get(c, "-")) for c in cols) + " |")
        return "\n".join(lines)


CI_LABEL = f"{LEVEL:.0%} CI"  # Markdown row label of the intervals


def _fmt(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.2f}"


def _music_spec(name: str, head_tail: bool) -> TableSpec:
    suffixes = ("head", "tail") if head_tail else ("",)
    groups: list[str] = []
    for modality, qtype, _ in MUSIC_AVQA_TYPES:
        groups += [f"{modality}/{qtype}" + (f"/{s}" if s else "") for s in suffixes]
    columns: list[tuple[str, tuple[int, ...]]] = []
    if head_tail:  # MUSIC-AVQA-R: head and tail per type, then the overall average
        for t, (_, _, short) in enumerate(MUSIC_AVQA_TYPES):
            columns += [(f"{short}_h", (2 * t,)), (f"{short}_t", (2 * t + 1,))]
    else:  # MUSIC-AVQA / v2.0: types, each modality's average after its types, then overall
        for modality, prefix in MODALITY_PREFIX.items():
            members = [t for t, (m, _, _) in enumerate(MUSIC_AVQA_TYPES) if m == modality]
            columns += [(MUSIC_AVQA_TYPES[t][2], (t,)) for t in members]
            columns.append((f"{prefix}_avg", tuple(members)))
    columns.append(("avg", tuple(range(len(groups)))))
    return TableSpec(name, tuple(groups), tuple(columns))


def _avqa_spec() -> TableSpec:
    slug = {t: t.lower().replace(" ", "_") for t in AVQA_TYPES}
    columns = [(slug[t], (i,)) for i, t in enumerate(AVQA_TYPES)]
    columns.append(("avg", tuple(range(len(AVQA_TYPES)))))
    return TableSpec("avqa", AVQA_TYPES, tuple(columns))


TABLES: dict[str, TableSpec] = {
    "music_avqa": _music_spec("music_avqa", head_tail=False),
    "music_avqa_v2": _music_spec("music_avqa_v2", head_tail=False),
    "music_avqa_r": _music_spec("music_avqa_r", head_tail=True),
    "avqa": _avqa_spec(),
}


def get_table(name: str) -> TableSpec:
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; choose one of {sorted(TABLES)}")
    return TABLES[name]


class GroupedAccuracy(Metric):
    """Correct and total counts per group; ``compute()`` returns the spec's table (percent)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, spec: TableSpec, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        n = len(spec.groups)
        self.add_state("correct", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, label: torch.Tensor, group: torch.Tensor) -> None:
        """``label`` -1 (answer outside the vocabulary) never equals a prediction: scored wrong."""
        hit = (pred == label) & (label >= 0)
        n = len(self.spec.groups)
        self.correct += torch.bincount(group[hit], minlength=n)
        self.total += torch.bincount(group, minlength=n)

    def compute(self) -> dict[str, float]:
        return self.spec.table(self.correct.tolist(), self.total.tolist())

    def counts(self) -> dict[str, int]:
        return self.spec.counts(self.total.tolist())


def intervals_of(rows: Mapping[str, Mapping[str, float]], counts: Mapping[str, int]
                 ) -> dict[str, dict[str, list[float]]]:
    """Per method and column the 95 % exact binomial interval (%) of its accuracy."""
    return {m: accuracy_intervals(correct_counts(dict(acc), dict(counts)), dict(counts))
            for m, acc in rows.items()}


def write_results(path: Path | str, spec: TableSpec, accuracy: Mapping[str, float],
                  counts: Mapping[str, int], method: str = "AV-Master (ours)",
                  meta: Mapping[str, object] | None = None,
                  extra: Mapping[str, object] | None = None) -> tuple[Path, Path]:
    """Write ``<path>.json`` and ``<path>.md``; return both. The JSON holds per column the
    accuracy (%), ``counts`` (questions), ``correct`` and ``interval`` (95 % exact binomial,
    ``[low, high]`` in %, see :mod:`avmaster.stats`), plus ``extra`` keys (``std`` and
    ``seeds`` of an aggregate over seeds: its ``accuracy`` is the mean, ``correct`` the mean
    count) and ``meta``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    js, md = path.with_suffix(".json"), path.with_suffix(".md")
    extra = dict(extra or {})
    correct = extra.pop("correct", None) or correct_counts(dict(accuracy), dict(counts))
    interval = accuracy_intervals(dict(correct), dict(counts))  # type: ignore[arg-type]
    payload = {"table": spec.name, "method": method, "columns": [c for c, _ in spec.columns],
               "accuracy": dict(accuracy), "counts": dict(counts), "correct": correct,
               "interval": interval, "interval_method": f"{INTERVAL_METHOD}, {LEVEL:.0%}",
               **extra, "meta": dict(meta or {})}
    atomic_write_text(js, json.dumps(payload, indent=2) + "\n")
    std = {method: extra["std"]} if "std" in extra else None
    atomic_write_text(md, spec.markdown({method: accuracy}, {method: interval}, counts, std)
                      + "\n")
    return js, md
