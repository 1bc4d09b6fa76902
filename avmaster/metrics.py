"""Per-question-type accuracy, correct under DDP, and the results files.

:class:`GroupedAccuracy` is a torchmetrics metric holding per-group correct/total counts of a
:class:`~avmaster.data.tables.TableSpec` (summed across processes); the table is computed from
those counts, so averages are over questions, as in the papers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torchmetrics import Metric

from avmaster.atomic import atomic_write_json, atomic_write_text
from avmaster.data.tables import TABLES, TableSpec, get_table
from avmaster.data.vocab import NO_LABEL
from avmaster.stats import INTERVAL_METHOD, LEVEL, accuracy_intervals, correct_counts

__all__ = ["TABLES", "GroupedAccuracy", "TableSpec", "get_table", "intervals_of", "write_results"]


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
        """``label`` :data:`NO_LABEL` (answer outside the vocabulary) is scored wrong."""
        hit = (pred == label) & (label != NO_LABEL)
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
    atomic_write_json(js, payload)
    std = {method: extra["std"]} if "std" in extra else None
    atomic_write_text(md, spec.markdown({method: accuracy}, {method: interval}, counts, std)
                      + "\n")
    return js, md
