"""``avmaster compare A B``: is A better than B on the same questions, or is it noise?

A and B are predictions files (scored against ``--annotations``) or run folders (their
``predictions_<data>.jsonl``, scored against the test split their ``results_<data>.json``
was evaluated on). Per column of the table: both accuracies, A - B with its 95 % paired
bootstrap interval, McNemar's exact p-value and the questions only A / only B answered
correctly (methods in :mod:`avmaster.stats`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from avmaster.atomic import atomic_write_json, atomic_write_text
from avmaster.data.annotations import concat, ensure_head_tail, load_annotations
from avmaster.data.records import QARecord
from avmaster.data.tables import TableSpec, get_table
from avmaster.data.vocab import AnswerVocab
from avmaster.paths import resolve
from avmaster.stats import BOOTSTRAP_SEED, LEVEL, RESAMPLES, PairedColumn, paired_comparison

PREDICTIONS_GLOB = "predictions_*.jsonl"
SHOWN_IDS = 5  # question ids an error message lists


class CompareError(ValueError):
    """Two inputs that cannot be compared; says which and how to fix it."""


@dataclass
class Side:
    """One input: its name, its predictions (one set per seed of a folder of seed runs), and
    the records and table it is scored on."""

    name: str
    predictions: list[dict[str, str | int]]
    records: list[QARecord] | None  # None: from --annotations
    table: str | None


def _run_predictions(folder: Path, data: str | None) -> Path:
    found = sorted(folder.glob(PREDICTIONS_GLOB))
    if data:
        found = [p for p in found if p.stem == f"predictions_{data}"]
    if len(found) == 1:
        return found[0]
    names = ", ".join(p.name for p in sorted(folder.glob(PREDICTIONS_GLOB))) or "none"
    if not found:
        raise CompareError(f"{folder}: no {PREDICTIONS_GLOB}{' for ' + data if data else ''} "
                           f"(found: {names}); run `avmaster eval` with save_predictions=true")
    raise CompareError(f"{folder}: several predictions files ({names}); choose one with --data")


def _run_records(folder: Path, predictions: Path) -> tuple[list[QARecord], str]:
    """The test records and table a run folder's predictions were made on."""
    from avmaster.data.config import DataConfig
    from avmaster.data.datamodule import AVQADataModule  # imports Lightning: only when needed

    data = predictions.stem[len("predictions_"):]
    results = folder / f"results_{data}.json"
    meta = json.loads(results.read_text()).get("meta", {}) if results.exists() else {}
    cfg = meta.get("data_config")
    if cfg is None and (folder / "config.json").exists():
        cfg = json.loads((folder / "config.json").read_text()).get("data")
        cfg = cfg if cfg and cfg.get("name") == data else None
    if cfg is None:
        raise CompareError(f"{predictions}: cannot tell which annotations it was made on "
                           f"({results.name} has no meta.data_config); pass the predictions "
                           "file itself with --annotations")
    dc = DataConfig(**cfg)
    split = AVQADataModule(dc).load_split("test")
    if split is None:
        raise CompareError(f"{folder}: its data config {data!r} lists no test annotations")
    return split.records, dc.table


def load_side(path: str, data: str | None) -> Side:
    """A predictions file, a run folder, or a folder of seed runs (every seed's predictions)."""
    from avmaster.scoring import read_predictions
    from avmaster.seeds import seed_folders

    p = Path(path)
    if p.is_dir():
        files = [_run_predictions(run, data) for run in seed_folders(p) or [p]]
        records, table = _run_records(files[0].parent, files[0])
        return Side(str(p), [read_predictions(f) for f in files], records, table)
    return Side(p.stem, [read_predictions(p)], None, None)


def _differ(a: set[str], b: set[str], what: str, name_a: str, name_b: str) -> None:
    if a == b:
        return
    only_a, only_b = sorted(a - b), sorted(b - a)
    shown = ", ".join((only_a + only_b)[:SHOWN_IDS])
    raise CompareError(f"{what} differ: {len(only_a)} question ids only in {name_a}, "
                       f"{len(only_b)} only in {name_b} (e.g. {shown}); compare predictions "
                       "made on the same annotations")


def compare(a: Side, b: Side, records: Sequence[QARecord], spec: TableSpec,
            vocab: AnswerVocab | None, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
            ) -> dict[str, PairedColumn]:
    """Score both sides on ``records`` and compare them column by column; a side with several
    seeds counts each question as its fraction of seeds answering it correctly."""
    from avmaster.scoring import score  # torch: imported on use, so that --help stays light

    first = a.predictions[0]
    for side in (a, b):
        for k, preds in enumerate(side.predictions):
            name = side.name + (f" (seed {k})" if len(side.predictions) > 1 else "")
            _differ(set(first), set(preds), "the predictions' question sets",
                    a.name + (" (seed 0)" if len(a.predictions) > 1 else ""), name)
    hits = []
    for side in (a, b):
        reports = [score(preds, records, spec, vocab) for preds in side.predictions]
        hits.append(np.mean([r.hits for r in reports], axis=0))
    return paired_comparison(hits[0], hits[1], np.array(reports[0].groups), spec.columns,
                             resamples, seed)


def _vocab(records: Sequence[QARecord], answers: str | None) -> AnswerVocab | None:
    """Open-ended scoring's vocabulary: the ``answers`` file, else the labels' own texts
    (a run's predictions are answer texts; a label it cannot predict stays wrong)."""
    if records[0].options:
        return None
    if answers:
        return AnswerVocab.from_file(resolve(answers))
    return AnswerVocab(sorted({r.answer for r in records}))


def compare_runs(a: Path | str, b: Path | str, data: str | None = None,
                 resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, PairedColumn]:
    """:func:`compare` of two run folders on the test split they were evaluated on."""
    return _compare_runs(load_side(str(a), data), load_side(str(b), data), resamples, seed)


def _compare_runs(sa: Side, sb: Side, resamples: int, seed: int) -> dict[str, PairedColumn]:
    assert sa.records is not None and sb.records is not None and sa.table
    _differ({r.question_id for r in sa.records}, {r.question_id for r in sb.records},
            "the runs' test annotations", sa.name, sb.name)
    if not sa.records:
        raise CompareError(f"{sa.name}: no test questions to compare on")
    return compare(sa, sb, sa.records, get_table(sa.table), _vocab(sa.records, None),
                   resamples, seed)


def markdown(result: dict[str, PairedColumn], name_a: str, name_b: str) -> str:
    """One row per column: n, A, B, A - B, its interval, McNemar p, only A, only B."""
    head = (f"| column | n | A | B | A - B | {LEVEL:.0%} CI (paired bootstrap) | "
            "p (McNemar exact) | only A | only B |")
    lines = [f"A: {name_a}  \nB: {name_b}\n", head, "|---" * 9 + "|"]
    for col, r in result.items():
        lines.append(f"| {col} | {r.n} | {r.a:.2f} | {r.b:.2f} | {r.diff:+.2f} | "
                     f"{r.diff_low:+.2f} to {r.diff_high:+.2f} | {_p(r.p_value)} | "
                     f"{_count(r.only_a)} | {_count(r.only_b)} |")
    if any(r.only_a is None for r in result.values()):
        lines.append("\nWith several seeds a question counts as the fraction of seeds right; "
                     "McNemar's test and the only-A/only-B counts need single runs (-).")
    return "\n".join(lines)


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


def _p(p: float) -> str:
    return "-" if math.isnan(p) else f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="avmaster compare", description=(
        "Paired comparison of two predictions files or run folders on the same questions: per "
        "column both accuracies, the difference with its 95 % paired-bootstrap interval, "
        "McNemar's exact p-value, and how many questions only A / only B got right."))
    ap.add_argument("a", help="predictions file (JSONL), run folder or folder of seed runs")
    ap.add_argument("b", help="predictions file (JSONL), run folder or folder of seed runs")
    ap.add_argument("--annotations", nargs="+", default=None,
                    help="test annotations (needed for predictions files; default for run "
                         "folders: the split their results were evaluated on)")
    ap.add_argument("--data", default=None,
                    help="in run folders, use predictions_<DATA>.jsonl (when several)")
    ap.add_argument("--table", default=None, help="music_avqa | music_avqa_v2 | music_avqa_r "
                    "| avqa (default: the run's, else music_avqa)")
    ap.add_argument("--answers", default="answers/music_avqa.json",
                    help="answer vocabulary for predictions files (JSON list)")
    ap.add_argument("--head-tail-ratio", type=float, default=1.2)
    ap.add_argument("--resamples", type=int, default=RESAMPLES)
    ap.add_argument("--seed", type=int, default=BOOTSTRAP_SEED, help="bootstrap seed")
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = ap.parse_args(argv)
    from avmaster.scoring import PredictionError

    try:
        a, b = load_side(args.a, args.data), load_side(args.b, args.data)
    except PredictionError as e:
        raise CompareError(str(e)) from None
    table = args.table or a.table or b.table or "music_avqa"
    if args.annotations:
        records = concat([load_annotations(f, "test") for f in args.annotations], "test").records
        if get_table(table).head_tail:
            records = ensure_head_tail(records, args.head_tail_ratio)
        if not records:
            raise CompareError("no test questions to compare on")
        result = compare(a, b, records, get_table(table), _vocab(records, args.answers),
                         args.resamples, args.seed)
    elif a.records is not None and b.records is not None:
        result = _compare_runs(a, b, args.resamples, args.seed)
    else:
        raise CompareError("a predictions file needs --annotations (the test annotations it "
                           "was made on)")
    text = markdown(result, a.name, b.name)
    print(text)
    if args.out:
        out = Path(args.out)
        payload = {"a": a.name, "b": b.name, "table": table, "resamples": args.resamples,
                   "seed": args.seed, "level": LEVEL,
                   "columns": {c: asdict(r) for c, r in result.items()}}
        atomic_write_json(out.with_suffix(".json"), payload)
        atomic_write_text(out.with_suffix(".md"), text + "\n")
        print(f"written to {out.with_suffix('.json')} and {out.with_suffix('.md')}",
              file=sys.stderr)
    return 0
