"""The demo pipeline: synthetic videos -> ``avmaster extract`` -> train AV-Master and the
question-only reference -> per-type table, JSON, Markdown and a bar chart.

Everything is written under one folder (``DemoSettings.out``)::

    data/       videos/*.mp4, avqa-{train,val,test}.json, answers.json, scenes.json
    features/   the extraction tool's HDF5 files and report
    runs/       avmaster/ and question_only/: checkpoints, logs, results_demo.json/.md
    results/    demo.json, demo.md, demo.png
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avmaster.atomic import atomic_write_json, atomic_write_text
from avmaster.data.records import QARecord
from avmaster.demo.questions import ORDER_ONLY
from avmaster.demo.scene import SynthConfig
from avmaster.demo.synth import SynthDataset, write_dataset

if TYPE_CHECKING:
    from avmaster.probe import ProbeReport

log = logging.getLogger(__name__)

CLIP_WEIGHTS_ENV = "AVMASTER_CLIP_WEIGHTS"
VGGISH_WEIGHTS_ENV = "AVMASTER_VGGISH_WEIGHTS"
DATA_PRESET = "demo"
TABLE = "music_avqa"
FULL, QUESTION_ONLY = "AV-Master", "question only"
RUNS = {FULL: ("avmaster", None), QUESTION_ONLY: ("question_only", "question_only")}
RESULTS_NAME = "demo"
ORDER_ONLY_ROW = "order-only (first/last; order-blind ceiling 50 %)"
ACCELERATORS = {"auto": "auto", "cpu": "cpu", "cuda": "gpu"}


@dataclass
class DemoSettings:
    """Every setting of a demo run; the defaults are the full demo (:meth:`quick` the small
    one used by the tests)."""

    out: str = "outputs/demo"
    seed: int = 0
    # synthetic data
    videos: int = 300
    seconds: int = 10
    fps: int = 4
    questions_per_video: float = 1.0  # per template
    order_share: float = SynthConfig.p_order  # share of order scenes
    # encoders: random initialisation unless both weight files are given (or in the env vars)
    clip_weights: str | None = None
    vggish_weights: str | None = None
    clip_model: str = "ViT-B-32"  # the model --clip-weights holds
    clip_pretrained: str = "openai"  # whose preprocessing settings apply to it
    random_clip_model: str = "avmaster-tiny"
    # training (sized for a 2-core CPU: about 4 minutes for AV-Master)
    epochs: int = 14
    dim: int = 64
    heads: int = 4
    template_len: int = 8
    lr: float = 2e-3
    lr_step_size: int = 11
    lr_gamma: float = 0.1
    batch_size: int = 64
    device: str = "auto"  # auto | cpu | cuda
    workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))

    def quick(self) -> DemoSettings:
        """The small variant (about a minute or two on 2 CPU cores)."""
        return replace(self, videos=80, epochs=8, questions_per_video=0.8, lr_step_size=8)

    @property
    def pretrained(self) -> bool:
        return bool(self.clip_weights and self.vggish_weights)

    def synth_config(self) -> SynthConfig:
        return SynthConfig(videos=self.videos, seconds=self.seconds, fps=self.fps,
                           questions_per_video=self.questions_per_video, seed=self.seed,
                           p_order=self.order_share, workers=self.workers)


@dataclass
class DemoResult:
    """What a demo run measured and wrote."""

    accuracy: dict[str, dict[str, float]]  # method -> table column -> %
    counts: dict[str, int]
    margin: float  # overall accuracy, AV-Master minus question only (points)
    encoders: str
    files: dict[str, Path]
    timings: dict[str, float]
    paired: dict[str, Any] | None = None  # avmaster compare of the two runs, column avg
    order_only: dict[str, float] = field(default_factory=dict)  # method -> % on those questions
    probe: ProbeReport | None = None  # the probes of the AV-Master checkpoint

    @property
    def passed(self) -> bool:
        return self.margin > 0


def weights_from_env(settings: DemoSettings) -> DemoSettings:
    """Fill in weight files from ``$AVMASTER_CLIP_WEIGHTS`` / ``$AVMASTER_VGGISH_WEIGHTS``."""
    return replace(settings,
                   clip_weights=settings.clip_weights or os.environ.get(CLIP_WEIGHTS_ENV) or None,
                   vggish_weights=settings.vggish_weights or os.environ.get(VGGISH_WEIGHTS_ENV)
                   or None)


def encoder_note(settings: DemoSettings) -> str:
    """One line saying which encoder weights the features come from."""
    if settings.pretrained:
        return (f"pretrained encoders: CLIP {settings.clip_model} from {settings.clip_weights}, "
                f"VGGish from {settings.vggish_weights}")
    have = [n for n, v in (("CLIP", settings.clip_weights), ("VGGish", settings.vggish_weights))
            if v]
    why = (f"only {have[0]} weights were given; both are needed" if have else
           f"no local weights (--clip-weights/--vggish-weights or ${CLIP_WEIGHTS_ENV}/"
           f"${VGGISH_WEIGHTS_ENV})")
    return (f"RANDOMLY INITIALISED encoders ({settings.random_clip_model} CLIP + VGGish): {why}; "
            "the features carry the synthetic signal only")


def extract_args(settings: DemoSettings, data: SynthDataset, features: Path) -> list[str]:
    """The ``avmaster extract`` command line of the demo."""
    args = ["--videos", str(data.videos_dir), "--annotations",
            *(str(p) for p in data.annotations.values()), "--out", str(features),
            "--seconds", str(settings.seconds), "--device", settings.device, "--no-progress",
            "--seed", str(settings.seed), "--workers", str(max(1, settings.workers - 1))]
    if settings.pretrained:
        args += ["--model", settings.clip_model, "--pretrained", settings.clip_pretrained,
                 "--clip-weights", str(settings.clip_weights),
                 "--vggish-weights", str(settings.vggish_weights)]
    else:
        args += ["--model", settings.random_clip_model, "--random-init"]
    return args


def feature_files(settings: DemoSettings, features: Path) -> dict[str, Path]:
    from avmaster.extract import feature_paths

    if settings.pretrained:
        paths = feature_paths(out=features, model=settings.clip_model,
                              pretrained=settings.clip_pretrained, random_init=False)
    else:
        paths = feature_paths(out=features, model=settings.random_clip_model, random_init=True)
    return {"visual": paths.visual, "audio": paths.audio, "text": paths.text}


def train_overrides(settings: DemoSettings, out: Path, files: dict[str, Path], name: str,
                    ablation: str | None) -> list[str]:
    """``load_config`` overrides of one demo training run."""
    overrides = [
        f"data={DATA_PRESET}",
        f"data.annotations_dir={out / 'data'}",
        f"data.features_dir={out / 'features'}",
        f"data.visual_features={files['visual'].name}",
        f"data.audio_features={files['audio'].name}",
        f"data.text_features={files['text'].name}",
        f"data.seconds={settings.seconds}",
        f"data.batch_size={settings.batch_size}",
        f"output_dir={out / 'runs'}",
        f"name={name}",
        f"seed={settings.seed}",
        "resume=false",
        f"model.dim={settings.dim}",
        f"model.heads={settings.heads}",
        f"model.template_len={settings.template_len}",
        f"optim.lr={settings.lr}",
        f"optim.lr_step_size={settings.lr_step_size}",
        f"optim.lr_gamma={settings.lr_gamma}",
        f"trainer.max_epochs={settings.epochs}",
        f"trainer.accelerator={ACCELERATORS[settings.device]}",
        "trainer.devices=1",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=10",
    ]
    if ablation:
        overrides.insert(1, f"ablation={ablation}")
    return overrides


def _train(overrides: list[str]) -> tuple[dict[str, float], dict[str, int], Path, str]:
    from avmaster.config import load_config
    from avmaster.training import train

    cfg = load_config(overrides=overrides)
    shutil.rmtree(cfg.run_dir, ignore_errors=True)  # a fresh run, never a resumed one
    result = train(cfg)
    if result.test is None:
        raise RuntimeError(f"{cfg.run_dir}: training evaluated no test set")
    results = cfg.run_dir / f"results_{cfg.data.name}.json"
    counts = json.loads(results.read_text()).get("counts", {}) if results.exists() else {}
    return result.test, counts, results, result.best_ckpt


def order_only_accuracy(predictions: Path, annotations: Path) -> tuple[float, int]:
    """Accuracy (%) and count of the order-only questions (:data:`ORDER_ONLY`) of a test
    annotation file, from an ``avmaster eval`` predictions file."""
    answers = {str(e["question_id"]): e["anser"] for e in json.loads(annotations.read_text())
               if e["question_content"] == ORDER_ONLY.text}
    predicted = {}
    with open(predictions) as f:
        for line in f:
            row = json.loads(line)
            predicted[str(row["question_id"])] = row["answer"]
    missing = [q for q in answers if q not in predicted]
    if missing:
        raise RuntimeError(f"{predictions}: no prediction for {len(missing)} order-only "
                           f"questions (first: {missing[0]})")
    hits = sum(predicted[q] == a for q, a in answers.items())
    return (100.0 * hits / len(answers) if answers else float("nan")), len(answers)


def is_order_only(record: QARecord) -> bool:
    return record.template == ORDER_ONLY.text


def probe_demo(overrides: list[str], ckpt: str, out: Path, seed: int
               ) -> tuple[ProbeReport, dict[str, Path]]:
    """Every probe on the AV-Master checkpoint, with the order-only questions as their own row:
    ``results/demo_probe.{json,md,png}``."""
    from avmaster.config import load_config
    from avmaster.probe import probe_checkpoint

    cfg = load_config(overrides=[*overrides, f"ckpt={ckpt}"])
    return probe_checkpoint(cfg, seed=seed, out=out / "results" / f"{RESULTS_NAME}_probe",
                            subsets={ORDER_ONLY_ROW: is_order_only, "all": lambda r: True})


def write_report(out: Path, settings: DemoSettings, accuracy: dict[str, dict[str, float]],
                 counts: dict[str, int], margin: float, meta: dict[str, Any],
                 order_only: dict[str, float] | None = None,
                 probe: ProbeReport | None = None) -> dict[str, Path]:
    """``results/demo.json`` (both rows), ``demo.md`` (table + margin) and ``demo.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from avmaster import reports
    from avmaster.data.tables import get_table
    from avmaster.metrics import intervals_of
    from avmaster.stats import INTERVAL_METHOD, LEVEL

    spec = get_table(TABLE)
    folder = out / "results"
    folder.mkdir(parents=True, exist_ok=True)
    cols = [c for c, _ in spec.columns]
    js, md, png = (folder / f"{RESULTS_NAME}{s}" for s in (".json", ".md", ".png"))
    intervals = intervals_of(accuracy, counts)
    payload = {"table": spec.name, "columns": cols, "rows": accuracy, "counts": counts,
               "intervals": intervals, "interval_method": f"{INTERVAL_METHOD}, {LEVEL:.0%}",
               "order_only": order_only or {},
               "meta": {"data": DATA_PRESET, "margin": margin, **meta}}
    if probe is not None:
        payload["probe"] = {"accuracy": probe.accuracy, "changed": probe.changed,
                            "subsets": probe.subsets, "subset_counts": probe.subset_counts}
    atomic_write_json(js, payload)
    table = spec.markdown(accuracy, intervals, counts)
    text = (f"# AV-Master demo (synthetic data)\n\n{table}\n\n"
            f"Margin (avg): {margin:+.2f} points; {paired_note(meta['paired_avg'])}."
            f" {meta['encoders']}.\n")
    if order_only:
        text += (f"\n{ORDER_ONLY_ROW}, {meta.get('order_only_count', '?')} questions: "
                 + ", ".join(f"{m} {v:.2f}%" for m, v in order_only.items()) + "\n")
    if probe is not None:
        text += f"\n## Probes of the AV-Master checkpoint\n\n{probe.markdown()}"
    atomic_write_text(md, text)
    frame = pd.DataFrame({m: [acc.get(c, float("nan")) for c in cols]
                          for m, acc in accuracy.items()}, index=cols)
    fig = reports.plot(frame, f"Synthetic demo: AV-Master vs question only "
                              f"(margin {margin:+.1f} points)")
    fig.savefig(png, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return {"json": js, "md": md, "png": png}


def run_demo(settings: DemoSettings | None = None,
             say: Callable[[str], None] = print) -> DemoResult:
    """Run the whole demo; see the module docstring for what lands where."""
    settings = weights_from_env(settings or DemoSettings())
    out = Path(settings.out)
    timings: dict[str, float] = {}
    start = time.monotonic()
    say(f"[demo] output folder: {out}")
    note = encoder_note(settings)
    say(f"[demo] {note}")

    t = time.monotonic()
    data = write_dataset(out / "data", settings.synth_config(), progress=lambda m: say(
        f"[demo] {m}"))
    features = out / "features"
    if not data.reused:
        shutil.rmtree(features, ignore_errors=True)  # features of other videos are stale
    timings["data_s"] = time.monotonic() - t
    say(f"[demo] data: {len(data.scenes)} videos, questions {data.questions}"
        f"{' (reused)' if data.reused else ''} in {timings['data_s']:.0f} s")

    from avmaster.extract.runner import main as extract_main

    t = time.monotonic()
    args = extract_args(settings, data, features)
    say(f"[demo] avmaster extract {' '.join(args)}")
    code = extract_main(args)
    if code != 0:
        raise RuntimeError(f"feature extraction failed (exit code {code}); see the log above")
    files = feature_files(settings, features)
    timings["extract_s"] = time.monotonic() - t
    say(f"[demo] features in {timings['extract_s']:.0f} s: "
        f"{', '.join(p.name for p in files.values())}")

    accuracy: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    sources: list[str] = []
    run_dirs: list[Path] = []
    order_only: dict[str, float] = {}
    n_order = 0
    probe = None
    for method, (name, ablation) in RUNS.items():
        t = time.monotonic()
        say(f"[demo] training {method} ({settings.epochs} epochs, dim {settings.dim})")
        overrides = train_overrides(settings, out, files, name, ablation)
        acc, cnt, results, best = _train(overrides)
        accuracy[method], counts = acc, cnt or counts
        sources.append(os.path.relpath(results, out / "results"))
        run_dirs.append(results.parent)
        timings[f"train_{name}_s"] = time.monotonic() - t
        order_acc, n_order = order_only_accuracy(
            results.with_name(f"predictions_{DATA_PRESET}.jsonl"), data.annotations["test"])
        if n_order:
            order_only[method] = order_acc
        order_note = (f"order-only {order_acc:.2f}% ({n_order} questions)" if n_order
                      else "no order-only question in the test split")
        say(f"[demo] {method}: avg {acc['avg']:.2f}%, {order_note} in "
            f"{timings[f'train_{name}_s']:.0f} s")
        if method == FULL:
            t = time.monotonic()
            probe, _ = probe_demo(overrides, best, out, settings.seed)
            timings["probe_s"] = time.monotonic() - t
            say(f"[demo] probes of {method} in {timings['probe_s']:.0f} s")

    margin = accuracy[FULL]["avg"] - accuracy[QUESTION_ONLY]["avg"]
    from avmaster.compare import compare_runs

    paired = asdict(compare_runs(*run_dirs, data=DATA_PRESET)["avg"])
    say(f"[demo] {paired_note(paired)}")
    timings["total_s"] = time.monotonic() - start
    meta = {"encoders": note, "pretrained": settings.pretrained,
            "ablations": {FULL: "full", QUESTION_ONLY: "question_only"},
            "sources": sources, "settings": asdict(settings), "paired_avg": paired,
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
            "order_only_count": n_order}
    report = write_report(out, settings, accuracy, counts, margin, meta, order_only, probe)
    return DemoResult(accuracy, counts, margin, note, report, timings, paired, order_only, probe)


def paired_note(paired: dict[str, Any]) -> str:
    """One line on the paired comparison of the two runs (``avmaster compare``, column avg)."""
    return (f"paired, {FULL} - {QUESTION_ONLY} (avg, {paired['n']} questions): "
            f"{paired['diff']:+.2f} points, 95% paired-bootstrap interval "
            f"{paired['diff_low']:+.2f} to {paired['diff_high']:+.2f}, McNemar exact p = "
            f"{paired['p_value']:.2g}; only {FULL} right: {paired['only_a']}, only "
            f"{QUESTION_ONLY} right: {paired['only_b']}")
