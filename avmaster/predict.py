"""``avmaster predict VIDEO "question" --ckpt FILE``: answer a question about a raw video."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and Lightning load only once the arguments parse (fast --help)
    from avmaster.inference import Prediction, Predictor


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="a video file (any container/codec FFmpeg reads)")
    p.add_argument("question", help='e.g. "How many instruments are sounding in the video?"')
    p.add_argument("--ckpt", required=True,
                   help="a checkpoint written by `avmaster train`, or its run folder")
    p.add_argument("--options", nargs="+", default=None,
                   help="answer options, for multiple-choice checkpoints (AVQA)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--clip-weights", default=None, help="local open_clip weights (offline)")
    p.add_argument("--vggish-weights", default=None, help="local VGGish weights (offline)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (answer, top-5, problems, timings) instead")


def warnings_of(pred: Prediction) -> list[str]:
    """One line per problem extraction met with the video (the answer rests on padded,
    silent or missing features there)."""
    return [f"warning: {p.kind.replace('_', ' ')}: {p.detail}" for p in pred.problems]


def as_json(pred: Prediction, **extra: object) -> str:
    """The machine-readable form of a prediction."""
    return json.dumps({"answer": pred.answer,
                       "top": [[n, round(p, 6)] for n, p in pred.top],
                       "problems": [p.to_dict() for p in pred.problems],
                       "timings": {k: round(v, 4) for k, v in pred.timings.items()}, **extra})


def build(args: argparse.Namespace) -> Predictor:
    from avmaster.inference import Predictor

    return Predictor(args.ckpt, device=args.device, clip_weights=args.clip_weights,
                     vggish_weights=args.vggish_weights)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="avmaster predict", description=__doc__)
    add_arguments(p)
    args = p.parse_args(argv)
    predictor = build(args)
    pred = predictor(args.video, args.question, args.options)
    if args.json:
        print(as_json(pred))
        return 0
    for line in warnings_of(pred):
        print(line)
    print(f"answer: {pred.answer}")
    print("top-5:")
    for name, prob in pred.top:
        print(f"  {prob:6.1%}  {name}")
    times = {"load checkpoint + encoders": predictor.load_s, **pred.timings}
    print("timing: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))
    return 0
