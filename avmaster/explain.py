"""``avmaster explain VIDEO "question" --ckpt FILE --out FILE.png``: which seconds of the audio
and of the video the answer depends on (per-second occlusion), and how much each path prefers
the predicted answer."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from avmaster.predict import add_arguments, as_json, build, warnings_of

if TYPE_CHECKING:  # torch and Lightning load only once the arguments parse (fast --help)
    from avmaster.inference import Prediction

TOP_SECONDS = 3  # seconds named in the printed summary, per modality
CAPTION = ("Each bar: how much P(answer) drops when that second's {name} features are replaced "
           "by the clip's mean {name} feature (the rest unchanged).\nTall bars: the answer "
           "depends on those seconds; bars near 0: it does not; below 0: the second argued "
           "against the answer.")


def plot(pred: Prediction, attribution: Mapping[str, Sequence[float]], question: str,
         out: Path) -> Path:
    """Write the picture: per-second attribution per modality, per-path answer probabilities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(attribution) + 1, 1, squeeze=False,
                             figsize=(9, 2.6 * (len(attribution) + 1)))
    from matplotlib.ticker import MaxNLocator

    # one scale for both modalities, so that bar heights compare across them
    largest = max((abs(d) for v in attribution.values() for d in v), default=0.0) or 1e-6
    for ax, (name, drop) in zip(axes[:, 0], attribution.items(), strict=False):
        drop = list(drop)
        ax.set_ylim(-1.1 * largest, 1.1 * largest)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.bar(range(len(drop)), drop, color=["tab:red" if d > 0 else "tab:gray" for d in drop])
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(f"{name}: drop in P({pred.answer}) without each second", fontsize=10)
        ax.set_xlabel("second")
        ax.set_ylabel("probability drop")
        ax.text(0, -0.42, CAPTION.format(name=name), transform=ax.transAxes, fontsize=7,
                va="top")
    ax = axes[-1, 0]
    names = [n for n, _ in pred.top]
    idx = [pred.names.index(n) for n in names]
    width = 0.8 / max(len(pred.paths), 1)
    for j, (path, probs) in enumerate(pred.paths.items()):
        ax.bar([i + j * width for i in range(len(names))], [probs[k] for k in idx], width,
               label=path)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
    ax.set_ylabel("probability")
    ax.set_title("modality preference: each path's distribution over the top answers",
                 fontsize=10)
    ax.legend()
    title = f"{question}  ->  {pred.answer}"
    if pred.problems:
        title += "\nwarning: " + ", ".join(p.kind.replace("_", " ") for p in pred.problems)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def top_seconds(drop: Sequence[float], k: int = TOP_SECONDS) -> list[int]:
    """The ``k`` seconds whose removal lowers the answer's probability most (drop > 0 only)."""
    ranked = sorted(range(len(drop)), key=lambda t: -drop[t])
    return [t for t in ranked[:k] if drop[t] > 0]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="avmaster explain", description=__doc__)
    add_arguments(p)
    p.add_argument("--out", default="explain.png", help="picture to write (PNG)")
    args = p.parse_args(argv)
    from avmaster.attribution import occlusion

    predictor = build(args)
    pred = predictor(args.video, args.question, args.options)
    drops = occlusion(predictor.module.model, pred.batch, pred.names.index(pred.answer))
    attribution = {name: [round(float(d), 6) for d in v] for name, v in drops.items()}
    out = plot(pred, attribution, args.question, Path(args.out))
    if args.json:
        print(as_json(pred, attribution=attribution, picture=str(out)))
        return 0
    for line in warnings_of(pred):
        print(line)
    print(f"answer: {pred.answer}; picture written to {out}")
    for name, drop in attribution.items():
        seconds = top_seconds(drop)
        print(f"{name}: " + (", ".join(f"second {t} (-{drop[t]:.1%})" for t in seconds)
                             if seconds else "no second lowers the answer's probability"))
    return 0
