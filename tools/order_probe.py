"""Does a demo checkpoint answer the order-only questions from temporal order? Probes one
checkpoint on the demo's test and training split with the seconds as they are, reversed and
shuffled, and prints, for all questions and for the order-only ones ("Which sounds first/last,
the X or the Y?"), the accuracy and the share of answers each change flipped.

``inference.*`` overrides apply (e.g. ``inference.drop=[tdpp]``: only the preference paths
vote), so it can tell which path reads order. ``avmaster probe --per-template`` shows the same
questions as the order-only template's row, one split at a time. Example::

    python tools/order_probe.py --json probe.json ckpt=runs/avmaster/checkpoints/last.ckpt \\
        data=demo data.annotations_dir=outputs/demo/data data.features_dir=outputs/demo/features
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from avmaster.config import load_config
from avmaster.demo.pipeline import is_order_only
from avmaster.probe import run_probes
from avmaster.training import build_trainer, load_checkpoint

PROBES = ("original", "reversed", "shuffled")
SPLITS = {"test": [], "train": ["data.test=[avqa-train.json]"]}


def probe_split(overrides: list[str], seed: int = 0) -> dict[str, float]:
    """Accuracy (%) and changed answers (%) on ``data.test`` of ``overrides``' checkpoint."""
    cfg = load_config(overrides=overrides)
    module, dm = load_checkpoint(cfg, cfg.ckpt, "probing")
    ds = dm.dataset("test")
    report = run_probes(module, ds, dm.spec, build_trainer(cfg, logs=False), PROBES, seed,
                        cfg.data.eval_batch_size, 0)
    order = np.array([is_order_only(r) for r in ds.records])
    pred, labels = report.predictions, report.labels
    out: dict[str, float] = {"n": len(labels), "n_order": int(order.sum())}
    for name, p in pred.items():
        for tag, sel in (("all", slice(None)), ("order", order)):
            out[f"{tag}_{name}"] = 100.0 * float((p[sel] == labels[sel]).mean())
            if name != "original":
                out[f"{tag}_changed_{name}"] = 100.0 * float(
                    (p[sel] != pred["original"][sel]).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    p.add_argument("--seed", type=int, default=0, help="the shuffled probe's seed")
    p.add_argument("overrides", nargs="+", help="ckpt=FILE data=demo key=value ...")
    a = p.parse_args(argv)
    found = {split: probe_split([*a.overrides, *extra], a.seed) for split, extra in SPLITS.items()}
    for split, r in found.items():
        print(f"{split}: {r['n']} questions, {r['n_order']} order-only")
        for tag in ("all", "order"):
            cells = [f"{n} {r[f'{tag}_{n}']:.2f}%" for n in PROBES]
            cells += [f"changed by {n} {r[f'{tag}_changed_{n}']:.2f}%" for n in PROBES[1:]]
            print(f"  {tag:<5} " + ", ".join(cells))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(found, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
