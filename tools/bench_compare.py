"""Speed of ``avmaster compare``: two predictions files on one annotation file.

    python tools/bench_compare.py --questions 10819 --resamples 2000 --repeats 3

Writes MUSIC-AVQA-style annotations of ``--questions`` questions (the nine types in turn, answers
from the 42-answer vocabulary) and two predictions files (A right on ~78 % of them, B on ~77 %,
correlated as two models of one family are), then times, per repeat: the whole command
in-process (reading, scoring both, statistics, printing), and the statistics alone
(:func:`avmaster.stats.paired_comparison`). Prints one line per repeat and the median.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from avmaster.compare import main as compare_main
from avmaster.data.records import MUSIC_AVQA_TYPES
from avmaster.data.tables import get_table
from avmaster.paths import resolve
from avmaster.stats import paired_comparison


def make_files(root: Path, questions: int, seed: int = 0) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(seed)
    answers = json.loads(resolve("answers/music_avqa.json").read_text())
    truth = rng.integers(0, len(answers), questions)
    entries = [{"video_id": f"{i % 1500:08d}", "question_id": i,
                "question_content": f"question number {i}",
                "type": json.dumps(list(MUSIC_AVQA_TYPES[i % len(MUSIC_AVQA_TYPES)][:2])),
                "templ_values": "[]", "anser": answers[truth[i]]} for i in range(questions)]
    ann = root / "test.json"
    ann.write_text(json.dumps(entries))
    shared = rng.random(questions)  # one difficulty per question: A and B err together
    paths = []
    for name, rate in (("a", 0.78), ("b", 0.77)):
        right = shared + 0.1 * rng.standard_normal(questions) < rate
        pred = np.where(right, truth, (truth + 1) % len(answers))
        path = root / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"question_id": i, "answer": answers[p]}) + "\n"
                                for i, p in enumerate(pred)))
        paths.append(path)
    return ann, paths[0], paths[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=10819)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    spec = get_table("music_avqa")
    with tempfile.TemporaryDirectory() as tmp:
        ann, a, b = make_files(Path(tmp), args.questions)
        argv = [str(a), str(b), "--annotations", str(ann), "--resamples", str(args.resamples)]
        rng = np.random.default_rng(1)
        hits_a, hits_b = rng.random(args.questions) < 0.78, rng.random(args.questions) < 0.77
        groups = np.arange(args.questions) % len(spec.groups)
        whole, stats_only = [], []
        for k in range(args.repeats):
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()) as out:
                compare_main(argv)
            whole.append(time.perf_counter() - t)
            t = time.perf_counter()
            paired_comparison(hits_a, hits_b, groups, spec.columns, args.resamples)
            stats_only.append(time.perf_counter() - t)
            print(f"repeat {k}: compare command {whole[-1]:.3f} s, statistics alone "
                  f"{stats_only[-1]:.3f} s")
        print(out.getvalue().splitlines()[-1])
        print(f"{args.questions} questions, {args.resamples} resamples: compare command median "
              f"{statistics.median(whole):.3f} s (statistics alone "
              f"{statistics.median(stats_only):.3f} s)")


if __name__ == "__main__":
    main()
