"""``avmaster predict VIDEO "question" --ckpt FILE``: answer a question about a raw video."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and Lightning load only once the arguments parse (fast --help)
    from avmaster.inference import Predictor


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="a video file (any container/codec FFmpeg reads)")
    p.add_argument("question", help='e.g. "How many instruments are sounding in the video?"')
    p.add_argument("--ckpt", required=True, help="a checkpoint written by `avmaster train`")
    p.add_argument("--options", nargs="+", default=None,
                   help="answer options, for multiple-choice checkpoints (AVQA)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--clip-weights", default=None, help="local open_clip weights (offline)")
    p.add_argument("--vggish-weights", default=None, help="local VGGish weights (offline)")


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
    print(f"answer: {pred.answer}")
    print("top-5:")
    for name, prob in pred.top:
        print(f"  {prob:6.1%}  {name}")
    times = {"load checkpoint + encoders": predictor.load_s, **pred.timings}
    print("timing: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))
    return 0
