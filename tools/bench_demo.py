"""Run the demo (``avmaster demo``) with fixed seeds; print one line: AV-Master's and the
question-only model's overall test accuracy, the margin between them, the wall time and the
process's memory allocator (``malloc=``; see :mod:`avmaster.malloc`).

    python tools/bench_demo.py [--quick] [--out DIR] [--seed 0] [--min-margin 15]

The exit status is 1 when the margin is not above ``--min-margin`` (points).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import time

from avmaster.demo import DemoSettings, run_demo
from avmaster.demo.pipeline import FULL, QUESTION_ONLY
from avmaster.malloc import loaded_allocator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = DemoSettings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the small demo (tests' size)")
    p.add_argument("--out", default="outputs/bench_demo", help="the demo's output folder")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--min-margin", type=float, default=0.0,
                   help="fail unless AV-Master wins by more than this many points")
    p.add_argument("--verbose", action="store_true", help="show the demo's own output")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.verbose:
        logging.disable(logging.WARNING)
    settings = DemoSettings(out=args.out, seed=args.seed, device=args.device)
    if args.quick:
        settings = settings.quick()
    quiet = contextlib.nullcontext() if args.verbose else contextlib.redirect_stdout(io.StringIO())
    start = time.monotonic()
    with quiet:
        result = run_demo(settings)
    wall = time.monotonic() - start
    full, qo = result.accuracy[FULL]["avg"], result.accuracy[QUESTION_ONLY]["avg"]
    stages = " ".join(f"{k}={v:.0f}" for k, v in result.timings.items() if k != "total_s")
    print(f"demo{' --quick' if args.quick else ''} seed={settings.seed} videos={settings.videos} "
          f"epochs={settings.epochs} avmaster_avg={full:.2f} question_only_avg={qo:.2f} "
          f"margin={result.margin:.2f} wall_s={wall:.0f} ({stages}) "
          f"encoders={'pretrained' if settings.pretrained else 'random'} "
          f"malloc={loaded_allocator()}", flush=True)
    return 0 if result.margin > args.min_margin else 1


if __name__ == "__main__":
    sys.exit(main())
