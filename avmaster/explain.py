"""``avmaster explain VIDEO "question" --ckpt FILE --out FILE.png``: which seconds the focus
templates attend to (audio and visual), and how much each path prefers the predicted answer."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from avmaster.predict import add_arguments, build

if TYPE_CHECKING:  # torch and Lightning load only once the arguments parse (fast --help)
    from avmaster.inference import Prediction, Predictor


def plot(pred: Prediction, question: str, out: Path) -> Path:
    """Write the picture: focus maps over time per modality, per-path answer probabilities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = {k: v[0].float().cpu().numpy() for k, v in (pred.output.focus_maps or {}).items()}
    fig, axes = plt.subplots(len(maps) + 1, 1, figsize=(9, 2.2 * (len(maps) + 1)),
                             squeeze=False)
    for ax, (name, m) in zip(axes[:, 0], maps.items(), strict=False):
        im = ax.imshow(m, aspect="auto", cmap="magma", interpolation="nearest")
        ax.set_title(f"{name} focus: share of each second in each template's updates")
        ax.set_ylabel("template")
        ax.set_xlabel("second")
        fig.colorbar(im, ax=ax, fraction=0.02)
    ax = axes[-1, 0]
    names = [n for n, _ in pred.top]
    idx = [pred.names.index(n) for n in names]
    width = 0.8 / max(len(pred.paths), 1)
    for j, (path, probs) in enumerate(pred.paths.items()):
        ax.bar([i + j * width for i in range(len(names))], [probs[k] for k in idx], width,
               label=path)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
    ax.set_ylabel("probability")
    ax.set_title("modality preference: each path's distribution over the top answers")
    ax.legend()
    fig.suptitle(f"{question}  ->  {pred.answer}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="avmaster explain", description=__doc__)
    add_arguments(p)
    p.add_argument("--out", default="explain.png", help="picture to write (PNG)")
    args = p.parse_args(argv)
    predictor: Predictor = build(args)
    pred = predictor(args.video, args.question, args.options)
    out = plot(pred, args.question, Path(args.out))
    print(f"answer: {pred.answer}; picture written to {out}")
    return 0
