"""``avmaster demo``: synthetic videos -> feature extraction -> AV-Master and the question-only
reference -> per-type accuracy table, with AV-Master required to win.

    avmaster demo [--out outputs/demo] [--quick] [--seed 0] [--device auto]

The dataset is made by :mod:`avmaster.demo.synth`, the features by ``avmaster extract``
(randomly initialised encoders unless ``--clip-weights`` and ``--vggish-weights`` or
``$AVMASTER_CLIP_WEIGHTS`` and ``$AVMASTER_VGGISH_WEIGHTS`` name local weights), the models by
:func:`avmaster.training.train` with ``data=demo``. Results: ``<out>/results/demo.{json,md,png}``.
The exit status is 1 when AV-Master does not beat the question-only model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from avmaster.demo.pipeline import (
    FULL,
    ORDER_ONLY_ROW,
    QUESTION_ONLY,
    DemoResult,
    DemoSettings,
    paired_note,
    run_demo,
)

__all__ = ["DemoResult", "DemoSettings", "build_parser", "main", "run_demo", "settings_from_args"]


def build_parser() -> argparse.ArgumentParser:
    d = DemoSettings()
    p = argparse.ArgumentParser(
        prog="avmaster demo",
        description="Synthetic MUSIC-AVQA-style videos -> avmaster extract -> train AV-Master "
                    "and a question-only model -> per-type table (AV-Master must win).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=d.out, help="folder for everything the demo writes")
    p.add_argument("--quick", action="store_true",
                   help="fewer videos and epochs (about two minutes on 2 CPU cores)")
    p.add_argument("--seed", type=int, default=d.seed, help="data, encoder and training seed")
    p.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    p.add_argument("--videos", type=int, default=None, help="number of synthetic videos")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per model")
    p.add_argument("--order-share", type=float, default=d.order_share, metavar="P",
                   help="share of the videos that are order scenes (two sounds whose order "
                        "alone answers 'Which sounds first/last?'), 0 to 1")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="processes writing and decoding videos")
    p.add_argument("--clip-weights", default=None, metavar="FILE",
                   help="local open_clip checkpoint of --clip-model (with --vggish-weights: "
                        "pretrained features instead of random ones)")
    p.add_argument("--clip-model", default=d.clip_model)
    p.add_argument("--clip-pretrained", default=d.clip_pretrained,
                   help="open_clip tag whose preprocessing the weights use")
    p.add_argument("--vggish-weights", default=None, metavar="FILE",
                   help="local VGGish .pth checkpoint")
    return p


def settings_from_args(argv: Sequence[str]) -> DemoSettings:
    parser = build_parser()
    a = parser.parse_args(list(argv))
    if not 0.0 <= a.order_share <= 1.0:
        parser.error(f"--order-share {a.order_share}: a share from 0 to 1")
    s = DemoSettings(out=a.out, seed=a.seed, device=a.device, workers=a.workers,
                     order_share=a.order_share,
                     clip_weights=a.clip_weights, vggish_weights=a.vggish_weights,
                     clip_model=a.clip_model, clip_pretrained=a.clip_pretrained)
    if a.quick:
        s = s.quick()
    if a.videos is not None:
        s.videos = a.videos
    if a.epochs is not None:
        s.epochs = a.epochs
    return s


def summary(result: DemoResult) -> str:
    """The demo's closing lines: the table, the margin and where the files are."""
    from avmaster.data.tables import get_table
    from avmaster.metrics import intervals_of

    table = get_table("music_avqa").markdown(
        result.accuracy, intervals_of(result.accuracy, result.counts), result.counts)
    full, qo = result.accuracy[FULL]["avg"], result.accuracy[QUESTION_ONLY]["avg"]
    verdict = ("PASS: AV-Master beats the question-only model" if result.passed else
               "FAIL: AV-Master does not beat the question-only model")
    files = ", ".join(str(p) for p in result.files.values())
    text = (f"\n{table}\n\n{verdict}: avg {full:.2f}% vs {qo:.2f}% "
            f"(margin {result.margin:+.2f} points) in {result.timings['total_s']:.0f} s.\n")
    if result.paired:
        text += f"{paired_note(result.paired)}.\n"
    if result.order_only:
        text += (f"{ORDER_ONLY_ROW}: " + ", ".join(f"{m} {v:.2f}%" for m, v in
                                                   result.order_only.items()) + "\n")
    if result.probe is not None:
        from avmaster.probe import summary as probe_summary

        text += f"probes of {FULL} (avg over all questions):\n{probe_summary(result.probe)}\n"
        order = result.probe.subsets.get(ORDER_ONLY_ROW)
        if order and result.probe.subset_counts[ORDER_ONLY_ROW] == 0:
            text += "order-only questions under the probes: none in the test split\n"
        elif order:
            text += ("order-only questions under the probes: "
                     + ", ".join(f"{n} {v:.1f}%" for n, v in order.items()) + "\n")
    return text + f"{result.encoders}.\nwritten: {files}"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0 when AV-Master beats the question-only model, else 1."""
    settings = settings_from_args(sys.argv[1:] if argv is None else argv)
    result = run_demo(settings)
    print(summary(result), flush=True)
    return 0 if result.passed else 1
