"""How far back does the focus recurrence (AVFC, Eq. 2) remember? For each second k, replace
second k of every test video (audio and visual) by second k of another video and measure how much
the final focus templates move: ``||~F(perturbed) - ~F|| / ||~F||``, averaged over videos.

A recurrence that keeps the whole video gives every k a similar sensitivity; one that forgets
gives the early seconds almost none. Prints one row per second for the checkpoint and, with
``--reinit``, for the same architecture freshly initialised (what training changed). Example::

    python tools/focus_memory.py ckpt=runs/avmaster/checkpoints/last.ckpt data=demo \\
        data.annotations_dir=outputs/demo/data data.features_dir=outputs/demo/features --reinit
"""

from __future__ import annotations

import argparse
import sys

import lightning as L
import numpy as np
import torch

from avmaster.config import load_config
from avmaster.lightning_module import AVMasterModule
from avmaster.models import AVMaster
from avmaster.probe import derangement
from avmaster.training import load_checkpoint


@torch.no_grad()
def sensitivity(model: AVMaster, batch: dict[str, torch.Tensor], seed: int = 0
                ) -> dict[str, np.ndarray]:
    """Per modality, ``[T]``: mean relative change of the final templates when second k is
    replaced by the same second of another video of the batch."""
    if model.focus is None:
        raise SystemExit("this model has no focus capture (w/o AVFC / TDPP): nothing to measure")
    model.eval()
    audio, visual = model.project(batch)
    base = model.capture(audio, visual)
    other = torch.from_numpy(derangement(audio.shape[0], np.random.default_rng(seed)))
    out = {"audio": [], "visual": []}
    for k in range(audio.shape[1]):
        a, v = audio.clone(), visual.clone()
        a[:, k], v[:, k] = audio[other, k], visual[other, k]
        moved = model.capture(a, v)
        for name, new, old in (("audio", moved.audio, base.audio),
                               ("visual", moved.visual, base.visual)):
            rel = (new - old).flatten(1).norm(dim=1) / old.flatten(1).norm(dim=1)
            out[name].append(rel.mean().item())
    return {k: np.array(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=64, help="test videos to average over")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reinit", action="store_true",
                   help="also measure the same architecture with fresh random weights")
    p.add_argument("overrides", nargs="+", help="ckpt=FILE data=NAME key=value ...")
    a = p.parse_args(argv)
    cfg = load_config(overrides=a.overrides)
    module, dm = load_checkpoint(cfg, cfg.ckpt, "measuring memory")
    ds = dm.dataset("test")
    first: dict[str, int] = {}
    for i, r in enumerate(ds.records):
        first.setdefault(r.video_id, i)
    rows = list(first.values())[: a.videos]
    batch = module.on_after_batch_transfer(ds.__getitems__(rows), 0)
    models = {"checkpoint": module.model}
    if a.reinit:
        L.seed_everything(a.seed, verbose=False)
        models["fresh init"] = AVMasterModule(**{k: v for k, v in module.hparams.items()}).model
    found = {name: sensitivity(m, batch, a.seed) for name, m in models.items()}
    heads = [f"{n} {mod}" for n in found for mod in ("audio", "visual")]
    print(f"relative change of the final templates when second k is replaced "
          f"({len(rows)} videos, {cfg.ckpt}):")
    print("| k | " + " | ".join(heads) + " |")
    print("|---" * (len(heads) + 1) + "|")
    for k in range(batch["audio"].shape[1]):
        cells = [f"{found[n][mod][k]:.2e}" for n in found for mod in ("audio", "visual")]
        print(f"| {k} | " + " | ".join(cells) + " |")
    for n, res in found.items():
        for mod, v in res.items():
            print(f"{n} {mod}: first second / last second = {v[0] / max(v[-1], 1e-12):.3g}")
    with torch.no_grad():  # each step adds F^k at full scale to a layer-normed state
        for n, m in models.items():
            m.eval()
            audio, visual = m.project(batch)
            focus = m.capture(audio, visual)
            for mod, x, f in (("audio", audio, focus.audio), ("visual", visual, focus.visual)):
                print(f"{n} {mod}: mean norm of a projected second {x.norm(dim=-1).mean():.2f}, "
                      f"of a focus template {f.norm(dim=-1).mean():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
