"""Probes: does a checkpoint use temporal order, audio and vision?

Each probe changes the test inputs in one controlled way and the checkpoint answers again; the
per-type accuracy of every probe is printed next to the unchanged input's, with the share of
answers that changed. A type whose accuracy and answers do not move when time is reversed is
answered without temporal order; one that does not move when the audio is swapped is answered
without the audio, and so on.

==================  =====================================================================
probe               what the model sees instead of each question's own video
==================  =====================================================================
``original``        the unchanged input (the reference row)
``reversed``        the seconds in reverse order (audio and visual alike)
``shuffled``        the seconds in a fixed random order per video (not the identity)
``audio_swapped``   the audio of another video (a fixed derangement of the test videos)
``visual_swapped``  the visual features of another video (another derangement)
``audio_silenced``  every second the audio encoder's silence vector (zeros if the file
                    records none)
``visual_blanked``  every second the visual encoder's blank-frame vector (zeros if none)
``question_only``   audio silenced and visual blanked together
==================  =====================================================================

The question, its options (multiple choice) and every other input of a question stay as they
were. Transformations depend only on the seed and the video, so every question about a video
sees the same changed input and a rerun gives the same table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from avmaster.atomic import atomic_write_json, atomic_write_text
from avmaster.data.dataset import Batch, QADataset
from avmaster.data.records import QARecord
from avmaster.data.store import EMPTY_INPUT_ATTRS, VideoFeatures
from avmaster.data.tables import TableSpec
from avmaster.metrics import GroupedAccuracy

log = logging.getLogger(__name__)

ORIGINAL = "original"
SILENCE_ATTR, BLANK_ATTR = EMPTY_INPUT_ATTRS["audio"], EMPTY_INPUT_ATTRS["visual"]


@dataclass(frozen=True)
class ProbeInputs:
    """What the transformations need about the test set, fixed by the seed.

    Per question ``i``: ``order[i]`` the shuffled seconds of its video, ``audio_rows[i]`` /
    ``visual_rows[i]`` the store rows of the video whose audio / visual replaces its own.
    ``silence [Da]`` and ``blank [Dv]`` replace every second of a silenced / blanked input.
    """

    order: np.ndarray
    audio_rows: np.ndarray
    visual_rows: np.ndarray
    silence: np.ndarray
    blank: np.ndarray
    audio: VideoFeatures
    visual: VideoFeatures
    empty_source: dict[str, str] = field(default_factory=dict)


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``range(n)`` with no fixed point (n >= 2): one random cycle."""
    if n < 2:
        raise ValueError("swapping inputs between videos needs at least two test videos")
    cycle = rng.permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[cycle] = np.roll(cycle, -1)
    return out


def shuffled_order(seconds: int, rng: np.random.Generator) -> np.ndarray:
    """A random order of ``seconds`` seconds that is not the identity (when seconds >= 2)."""
    order = rng.permutation(seconds)
    while seconds > 1 and np.array_equal(order, np.arange(seconds)):
        order = rng.permutation(seconds)
    return order


def empty_vector(store: VideoFeatures, attr: str) -> tuple[np.ndarray, str]:
    """The store's recorded empty-input vector ``attr``, or zeros; and which one it is."""
    value = store.attrs.get(attr)
    if value is not None:
        vec = np.asarray(value, dtype=np.float32).reshape(-1)
        if vec.shape == (store.dim,):
            return vec, f"{store.path.name}:{attr}"
        log.warning("%s: attribute %r has %d values, the features %d; using zeros",
                    store.path, attr, vec.size, store.dim)
    return np.zeros(store.dim, dtype=np.float32), "zeros (the file records no vector)"


def probe_inputs(ds: QADataset, seed: int = 0) -> ProbeInputs:
    """Fix the shuffles and swaps of ``ds``'s videos for ``seed`` (see :class:`ProbeInputs`)."""
    videos = sorted({r.video_id for r in ds.records})
    number = {v: i for i, v in enumerate(videos)}
    of_question = np.array([number[r.video_id] for r in ds.records], dtype=np.int64)
    rng = np.random.default_rng(seed)
    seconds = ds.audio.seconds
    if seconds is None:
        raise ValueError("probes need a fixed number of seconds per video (data.seconds)")
    orders = np.stack([shuffled_order(seconds, rng) for _ in videos])
    audio_partner, visual_partner = derangement(len(videos), rng), derangement(len(videos), rng)
    audio_rows = ds.audio.rows([videos[j] for j in audio_partner])
    visual_rows = ds.visual.rows([videos[j] for j in visual_partner])
    silence, silence_src = empty_vector(ds.audio, SILENCE_ATTR)
    blank, blank_src = empty_vector(ds.visual, BLANK_ATTR)
    return ProbeInputs(orders[of_question], audio_rows[of_question], visual_rows[of_question],
                       silence, blank, ds.audio, ds.visual,
                       {"audio": silence_src, "visual": blank_src})


def _reorder(x: torch.Tensor, order: np.ndarray) -> torch.Tensor:
    idx = torch.from_numpy(order).to(x.device)
    return x.gather(1, idx[..., None].expand_as(x))


def _filled(x: torch.Tensor, vec: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(vec).to(x.device, x.dtype).expand_as(x).clone()


def _swapped(store: VideoFeatures, rows: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(store.take(rows)).to(like.device, like.dtype)


Transform = Callable[[Batch, ProbeInputs, np.ndarray], Batch]

PROBES: dict[str, tuple[str, Transform]] = {
    ORIGINAL: ("unchanged input", lambda b, p, i: b),
    "reversed": ("seconds in reverse order", lambda b, p, i: {
        **b, "audio": b["audio"].flip(1), "visual": b["visual"].flip(1)}),
    "shuffled": ("seconds in a random order", lambda b, p, i: {
        **b, "audio": _reorder(b["audio"], p.order[i]),
        "visual": _reorder(b["visual"], p.order[i])}),
    "audio_swapped": ("another video's audio", lambda b, p, i: {
        **b, "audio": _swapped(p.audio, p.audio_rows[i], b["audio"])}),
    "visual_swapped": ("another video's visual features", lambda b, p, i: {
        **b, "visual": _swapped(p.visual, p.visual_rows[i], b["visual"])}),
    "audio_silenced": ("audio silenced", lambda b, p, i: {
        **b, "audio": _filled(b["audio"], p.silence)}),
    "visual_blanked": ("visual blanked", lambda b, p, i: {
        **b, "visual": _filled(b["visual"], p.blank)}),
    "question_only": ("audio silenced and visual blanked", lambda b, p, i: {
        **b, "audio": _filled(b["audio"], p.silence),
        "visual": _filled(b["visual"], p.blank)}),
}


def check_probes(names: Sequence[str]) -> list[str]:
    """``names`` with ``original`` first; unknown names are an error that lists the choices."""
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(PROBES)}")
    return [ORIGINAL, *(n for n in dict.fromkeys(names) if n != ORIGINAL)]


def apply_probe(name: str, batch: Batch, inputs: ProbeInputs) -> Batch:
    """``batch`` (from :meth:`QADataset.__getitems__`, with ``index``) as probe ``name`` sees it."""
    return PROBES[name][1](batch, inputs, batch["index"].cpu().numpy())


class ProbedDataset(Dataset):
    """``ds`` with probe ``name`` applied to every batch it returns."""

    def __init__(self, ds: QADataset, name: str, inputs: ProbeInputs):
        self.ds, self.name, self.inputs = ds, name, inputs

    def __len__(self) -> int:
        return len(self.ds)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        return apply_probe(self.name, self.ds.__getitems__(indices), self.inputs)


@dataclass
class ProbeReport:
    """Per probe: accuracy per table column (%), answers changed vs ``original`` (%)."""

    spec: TableSpec
    accuracy: dict[str, dict[str, float]]
    changed: dict[str, dict[str, float]]
    counts: dict[str, int]
    meta: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # probe -> answer index
    labels: np.ndarray | None = None
    subsets: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> probe -> %
    subset_counts: dict[str, int] = field(default_factory=dict)

    def subset_accuracy(self, mask: np.ndarray) -> dict[str, float]:
        """Accuracy (%) per probe on the questions selected by the boolean ``mask``."""
        if self.labels is None or not mask.any():
            return {n: float("nan") for n in self.accuracy}
        return {n: 100.0 * float((p[mask] == self.labels[mask]).mean())
                for n, p in self.predictions.items()}

    def delta(self, probe: str, column: str = "avg") -> float:
        """Accuracy of ``probe`` minus the unchanged input's, in points."""
        return self.accuracy[probe][column] - self.accuracy[ORIGINAL][column]

    def markdown(self) -> str:
        changed = {n: v for n, v in self.changed.items() if n != ORIGINAL}
        text = (f"Accuracy (%) per question type under each probe:\n\n"
                f"{self.spec.markdown(self.accuracy)}\n\n"
                f"Answers changed vs the unchanged input (%):\n\n"
                f"{self.spec.markdown(changed)}\n")
        if self.subsets:
            names = list(self.accuracy)
            lines = ["| questions | n | " + " | ".join(names) + " |",
                     "|---" * (len(names) + 2) + "|"]
            for sub, acc in self.subsets.items():
                empty = self.subset_counts[sub] == 0
                cells = " | ".join("-" if empty else f"{acc[n]:.2f}" for n in names)
                lines.append(f"| {sub} | {self.subset_counts[sub]} | {cells} |")
            text += "\nAccuracy (%) on selected questions:\n\n" + "\n".join(lines) + "\n"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"table": self.spec.name, "columns": [c for c, _ in self.spec.columns],
                "probes": {n: PROBES[n][0] for n in self.accuracy},
                "accuracy": self.accuracy, "changed": self.changed, "counts": self.counts,
                "subsets": self.subsets, "subset_counts": self.subset_counts, "meta": self.meta}


def _predict(trainer: Any, module: Any, loader: DataLoader, n: int) -> np.ndarray:
    pred = np.full(n, -1, dtype=np.int64)
    for out in trainer.predict(module, dataloaders=loader) or []:
        pred[out["index"].cpu().numpy()] = out["pred"].cpu().numpy()
    return pred


def _table(spec: TableSpec, pred: np.ndarray, target: np.ndarray, groups: np.ndarray
           ) -> dict[str, float]:
    metric = GroupedAccuracy(spec)
    metric.update(torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(groups))
    return metric.compute()


def run_probes(module: Any, ds: QADataset, spec: TableSpec, trainer: Any,
               probes: Sequence[str] = tuple(PROBES), seed: int = 0, batch_size: int = 128,
               num_workers: int = 0, subsets: Mapping[str, Callable[[QARecord], bool]] | None
               = None, per_template: bool = False) -> ProbeReport:
    """Predict ``ds`` under every probe with ``trainer.predict`` (Lightning's loop) and tabulate
    accuracy and changed answers per type; ``subsets`` names extra rows: the questions whose
    record a predicate selects; ``per_template`` adds one row per question template."""
    names = check_probes(probes)
    if getattr(trainer, "world_size", 1) > 1:
        raise ValueError("probes run in one process: pass trainer.devices=1")
    inputs = probe_inputs(ds, seed)
    accuracy: dict[str, dict[str, float]] = {}
    changed: dict[str, dict[str, float]] = {}
    reference = None
    predictions: dict[str, np.ndarray] = {}
    for name in names:
        loader = DataLoader(ProbedDataset(ds, name, inputs), batch_size=batch_size,
                            shuffle=False, num_workers=num_workers, collate_fn=_identity)
        pred = predictions[name] = _predict(trainer, module, loader, len(ds))
        accuracy[name] = _table(spec, pred, ds.labels, ds.groups)
        if reference is None:
            reference = pred
        same = _table(spec, pred, reference, ds.groups)
        changed[name] = {c: 100.0 - v for c, v in same.items()}
        log.info("probe %-15s avg %.2f%% (%.1f%% of answers changed)", name,
                 accuracy[name]["avg"], changed[name]["avg"])
    counts = spec.counts(np.bincount(ds.groups, minlength=len(spec.groups)).tolist())
    meta = {"seed": seed, "empty_inputs": inputs.empty_source}
    report = ProbeReport(spec, accuracy, changed, counts, meta, predictions, ds.labels)
    subsets = dict(subsets or {})
    if per_template:
        for t in sorted({r.template for r in ds.records if r.template}):
            subsets[t] = lambda r, t=t: r.template == t
    for sub, keep in subsets.items():
        mask = np.array([bool(keep(r)) for r in ds.records], dtype=bool)
        report.subsets[sub] = report.subset_accuracy(mask)
        report.subset_counts[sub] = int(mask.sum())
    return report


def _identity(batch: Batch) -> Batch:
    return batch


def write_probe_report(path: Path | str, report: ProbeReport, title: str = ""
                       ) -> dict[str, Path]:
    """``<path>.json``, ``<path>.md`` and ``<path>.png`` (accuracy per type, one bar per probe)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from avmaster import reports

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    js, md, png = (path.with_name(path.name + s) for s in (".json", ".md", ".png"))
    atomic_write_json(js, report.to_json())
    head = f"# Probes{': ' + title if title else ''}\n\n"
    atomic_write_text(md, head + report.markdown())
    cols = [c for c, _ in report.spec.columns]
    frame = pd.DataFrame({n: [acc.get(c, float("nan")) for c in cols]
                          for n, acc in report.accuracy.items()}, index=cols)
    fig = reports.plot(frame, f"Probes{': ' + title if title else ''}")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return {"json": js, "md": md, "png": png}


def probe_checkpoint(cfg: Any, probes: Sequence[str] = tuple(PROBES), seed: int = 0,
                     out: Path | str | None = None,
                     subsets: Mapping[str, Callable[[QARecord], bool]] | None = None,
                     per_template: bool = False) -> tuple[ProbeReport, dict[str, Path]]:
    """Load ``cfg.ckpt``, run the probes on ``cfg.data``'s test split and write the report
    (default ``<run folder>/probe_<data>.{json,md,png}``, the run folder as
    :func:`~avmaster.training.checkpoint_run` chooses it)."""
    from avmaster.checkpoints import resolve_checkpoint
    from avmaster.config import to_dict
    from avmaster.training import build_trainer, checkpoint_run, load_checkpoint

    ckpt = cfg.ckpt and str(resolve_checkpoint(cfg.ckpt))  # a run folder: its selected one
    module, dm = load_checkpoint(cfg, ckpt, "probing")
    cfg = checkpoint_run(cfg, ckpt)
    ds = dm.dataset("test")
    trainer = build_trainer(cfg, logs=False)
    report = run_probes(module, ds, dm.spec, trainer, probes, seed, cfg.data.eval_batch_size,
                        cfg.data.num_workers, subsets, per_template)
    report.meta.update({"checkpoint": str(ckpt), "data": cfg.data.name,
                        "inference": to_dict(cfg.inference)})
    files = write_probe_report(out or cfg.run_dir / f"probe_{cfg.data.name}", report,
                               f"{Path(ckpt).name} on {cfg.data.name}")
    return report, files


def summary(report: ProbeReport) -> str:
    """One line per probe: avg accuracy, its change and the share of changed answers."""
    lines = []
    for name, acc in report.accuracy.items():
        line = f"{name:<15} avg {acc['avg']:6.2f}%"
        if name != ORIGINAL:
            line += (f"  ({report.delta(name):+6.2f} points, "
                     f"{report.changed[name]['avg']:5.1f}% of answers changed)")
        lines.append(line)
    return "\n".join(lines)


__all__ = ["ORIGINAL", "PROBES", "ProbeInputs", "ProbeReport", "apply_probe", "check_probes",
           "derangement", "probe_checkpoint", "probe_inputs", "run_probes", "summary",
           "write_probe_report"]
