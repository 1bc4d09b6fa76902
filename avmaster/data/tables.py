"""The per-question-type tables of each dataset, in the papers' column order.

A :class:`TableSpec` assigns every record a *group* (a question type, or type x head/tail) and
defines the table's columns as unions of groups; averages are over questions, as in the papers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from avmaster.data.records import AVQA_TYPES, MODALITY_PREFIX, MUSIC_AVQA_TYPES, QARecord
from avmaster.errors import ConfigError
from avmaster.stats import LEVEL


@dataclass(frozen=True)
class TableSpec:
    """Groups (the finest cells) and columns (named unions of groups, in paper order)."""

    name: str
    groups: tuple[str, ...]
    columns: tuple[tuple[str, tuple[int, ...]], ...]
    head_tail: bool = False  # groups split by MUSIC-AVQA-R's head/tail label

    def group_of(self, record: QARecord) -> int:
        key = record.type_key
        if self.head_tail:
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
                cells = [f"{_fmt(ci[c][0])}-{_fmt(ci[c][1])}" if c in ci and ci[c][0] == ci[c][0]
                         else "-" for c in cols]  # NaN: a column without questions
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
    return TableSpec(name, tuple(groups), tuple(columns), head_tail)


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
        raise ConfigError(f"data.table={name}: unknown table; choose one of {sorted(TABLES)}")
    return TABLES[name]
