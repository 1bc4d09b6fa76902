"""Per-question-type accuracy, correct under DDP, and the results files.

:class:`GroupedAccuracy` is a torchmetrics metric holding per-group correct/total counts of a
:class:`~avmaster.data.tables.TableSpec` (summed across processes); the table is computed from
those counts, so averages are over questions, as in the papers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torchmetrics import Metric

from avmaster.atomic import atomic_write_text
from avmaster.data.tables import TABLES, TableSpec, get_table
from avmaster.data.vocab import NO_LABEL

__all__ = ["TABLES", "GroupedAccuracy", "TableSpec", "get_table", "write_results"]


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


def write_results(path: Path | str, spec: TableSpec, accuracy: Mapping[str, float],
                  counts: Mapping[str, int], method: str = "AV-Master (ours)",
                  meta: Mapping[str, object] | None = None) -> tuple[Path, Path]:
    """Write ``<path>.json`` (accuracy, counts, table, meta) and ``<path>.md``; return both."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    js, md = path.with_suffix(".json"), path.with_suffix(".md")
    payload = {"table": spec.name, "method": method, "columns": [c for c, _ in spec.columns],
               "accuracy": dict(accuracy), "counts": dict(counts), "meta": dict(meta or {})}
    atomic_write_text(js, json.dumps(payload, indent=2) + "\n")
    atomic_write_text(md, spec.markdown({method: accuracy}) + "\n")
    return js, md
