"""What several test modules share: fixture files, feature caches, model batches, results
folders, notebook runs, and the tiny-model settings of end-to-end runs."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from avmaster.config import load_config, load_variant
from avmaster.data.annotations import load_annotations
from avmaster.data.dataset import required_texts
from avmaster.data.records import QARecord
from avmaster.data.store import write_text_features, write_video_features
from avmaster.data.tables import get_table
from avmaster.losses import AVMasterLoss
from avmaster.metrics import write_results
from avmaster.models import AVMaster, FeatureDims, LossConfig, ModelConfig
from avmaster.training import result_label, results_meta, run_record

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
NOTEBOOKS = REPO / "notebooks"
KERNEL = "python3"
TIMEOUT_S = 300

# a model small enough for CPU tests, and the batches it reads
B, T, C, K = 3, 5, 7, 4  # batch, seconds, answers, options
DIMS = FeatureDims(visual=12, audio=10, text=16)
SMALL = ModelConfig(dim=32, heads=4, template_len=3, decoder_depth=2, dropout=0.0)

# overrides that make `avmaster train` / `eval` tiny and quiet on the CPU
TINY = ["model.dim=32", "model.heads=2", "model.template_len=2", "model.decoder_depth=1",
        "data.batch_size=16", "data.eval_batch_size=32", "data.num_workers=0",
        "data.pin_memory=false", "trainer.accelerator=cpu", "trainer.devices=1",
        "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]


def tiny_overrides(root: Path, features: bool = True) -> list[str]:
    """``avmaster train``/``eval`` overrides of a tiny model on the MUSIC-AVQA annotation
    samples (train and val on the val sample, test on the test sample) with random features
    under ``root/features`` (written unless ``features=False``) and runs under ``root/runs``;
    the run is named ``tiny``."""
    files = ["music_avqa_val_sample.json", "music_avqa_test_sample.json"]
    if features:
        records = [r for f in files for r in load_annotations(FIXTURES / f).records]
        make_features(root / "features", records, seconds=4)
    return [*TINY, "data=music_avqa", f"data.annotations_dir={FIXTURES}",
            "data.train=[music_avqa_val_sample.json]", "data.val=[music_avqa_val_sample.json]",
            "data.test=[music_avqa_test_sample.json]", "data.seconds=4",
            f"data.features_dir={root / 'features'}", "data.visual_features=visual.h5",
            "data.audio_features=audio.h5", "data.text_features=text.h5",
            f"output_dir={root / 'runs'}", "name=tiny"]


def make_features(root: Path, records: Sequence[QARecord], seconds: int = 6,
                  dims: tuple[int, int, int] = (16, 8, 12), seed: int = 0,
                  lengths: dict[str, int] | None = None) -> dict[str, Path]:
    """Write visual/audio/text feature files covering ``records``; returns their paths.

    ``lengths`` gives some videos another number of stored seconds (to test pad/trim).
    """
    rng = np.random.default_rng(seed)
    videos = sorted({r.video_id for r in records})
    lengths = lengths or {}
    paths = {"visual": root / "visual.h5", "audio": root / "audio.h5", "text": root / "text.h5"}
    for name, dim in (("visual", dims[0]), ("audio", dims[1])):
        feats = {v: rng.standard_normal((lengths.get(v, seconds), dim)).astype(np.float32)
                 for v in videos}
        write_video_features(paths[name], feats, modality=name, encoder="random", seconds=seconds)
    texts = required_texts(records)
    tokens = [rng.standard_normal((3 + len(t) % 5, dims[2])).astype(np.float32) for t in texts]
    sentence = rng.standard_normal((len(texts), dims[2])).astype(np.float32)
    write_text_features(paths["text"], texts, sentence, tokens, encoder="random")
    return paths


def make_batch(
    b: int = B,
    t: int = T,
    lengths: tuple[int, ...] = (6, 2, 4),
    options: bool = False,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    batch = {
        "visual": torch.randn(b, t, DIMS.visual, generator=g),
        "audio": torch.randn(b, t, DIMS.audio, generator=g),
        "question_tokens": torch.randn(b, n, DIMS.text, generator=g) * mask[..., None],
        "question_mask": mask,
        "question": torch.randn(b, DIMS.text, generator=g),
        "label": torch.randint(0, K if options else C, (b,), generator=g),
        "group": torch.zeros(b, dtype=torch.long),
        "index": torch.arange(b),
    }
    if options:
        batch["options"] = torch.randn(b, K, DIMS.text, generator=g)
    return batch


class ListData(L.LightningDataModule):
    """In-memory batches; without a table ``spec`` the module scores plain accuracy."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]):
        super().__init__()
        self.batches = batches

    def _loader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None)

    train_dataloader = val_dataloader = test_dataloader = predict_dataloader = _loader


def assert_every_parameter_learns(model: AVMaster, loss_cfg: LossConfig, batch: dict,
                                  frozen: frozenset[str] = frozenset()) -> None:
    """Every trainable parameter gets a non-zero gradient; the top modules in ``frozen`` (and
    only they) are built yet frozen, so they get none."""
    model.train()
    assert {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad
            } == set(frozen)
    losses = AVMasterLoss(loss_cfg)(model(batch), batch["label"])
    losses["loss"].backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    zero = [n for n, p in trainable if p.grad is not None and not p.grad.any()]
    assert not missing, f"no gradient: {missing}"
    assert not zero, f"zero gradient: {zero}"
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


def table_values(table: str, base: float) -> dict[str, float]:
    return {c: base + k for k, (c, _) in enumerate(get_table(table).columns)}


def write_run(folder: Path, data: str, table: str, base: float, *, meta: dict | None = None,
              method: str = "AV-Master (ours)", name: str = "") -> Path:
    """A results file as ``avmaster train``/``eval`` writes it."""
    spec = get_table(table)
    js, _ = write_results(folder / f"results_{data}{name}", spec, table_values(table, base),
                          {c: 10 for c, _ in spec.columns}, method,
                          meta={"data": data, "test": ["test.json"], **(meta or {})})
    return js


def write_eval(folder: Path, base: float, overrides: list[str], variant: tuple = ()) -> Path:
    """What ``avmaster eval`` writes for a model trained with ``overrides`` (and, given
    ``variant`` = (group, row), for one inference-time row of it)."""
    cfg = load_config(overrides=["data=music_avqa", *overrides])
    record = run_record(cfg)
    inference, tag, extra = cfg.inference, "", {}
    if variant:
        group, row = variant
        spec = next(r for r in load_variant(group).expand(4, cfg.inference) if r.name == row)
        inference, tag = spec.inference, f"{group}: {row}"
        extra = {"variant": group, "row": row, "setting": spec.setting,
                 "paper": load_variant(group).paper}
    meta = {**results_meta(cfg, "x.ckpt", record, inference), **extra}
    return write_run(folder, "music_avqa", "music_avqa", base, meta=meta,
                     method=result_label(record, tag),
                     name=f"__{'-'.join(variant)}" if variant else "")


def make_results(root: Path) -> Path:
    """A results folder: MUSIC-AVQA runs (full, two ablations, inference-time rows), a v2.0 run
    and a demo."""
    write_eval(root / "full", 70.0, [])
    write_eval(root / "full", 65.0, [], ("table12", "wo_ape"))
    for k, base in enumerate((50.0, 52.0, 51.0, 58.0)):  # a Fig. 6 curve over T = 4 steps
        write_eval(root / "full", base, [], ("fig6", f"k{k:02d}"))
    write_eval(root / "wo_avfc", 60.0, ["ablation=wo_avfc"])
    write_eval(root / "wo_avfc", 55.0, ["ablation=wo_avfc"], ("table13", "mul"))
    write_run(root / "named", "music_avqa", "music_avqa", 50.0, meta={"ablation": "template_4"})
    write_run(root / "v2", "music_avqa_v2_balance", "music_avqa_v2", 40.0,
              meta={"test": ["bias_set/test_bias.json"]})
    run = write_run(root / "demo" / "runs" / "avmaster", "demo", "music_avqa", 90.0)
    demo = root / "demo" / "results"
    demo.mkdir(parents=True)
    (demo / "demo.json").write_text(json.dumps({
        "table": "music_avqa", "rows": {"AV-Master": table_values("music_avqa", 90.0),
                                        "question only": table_values("music_avqa", 30.0)},
        "meta": {"data": "demo", "sources": [str(Path("..") / run.relative_to(root / "demo"))],
                 "ablations": {"AV-Master": "full", "question only": "question_only"}}}))
    return root


def run_notebook(name: str, results: Path, monkeypatch: pytest.MonkeyPatch,
                 cwd: Path) -> Any:
    """Execute ``notebooks/<name>`` headless on the results under ``results``."""
    import nbformat
    from nbclient import NotebookClient

    from avmaster.reports import RESULTS_ENV

    monkeypatch.setenv(RESULTS_ENV, str(results))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=TIMEOUT_S, kernel_name=KERNEL,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def outputs(nb: Any, mime: str) -> list[str]:
    return [o["data"][mime] for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if mime in o.get("data", {})]


def assert_clean(nb: Any) -> None:
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors


def ddp_metric_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predictions, labels (some -1) and question types of 137 questions."""
    g = torch.Generator().manual_seed(0)
    n = 137
    return (torch.randint(0, 4, (n,), generator=g), torch.randint(-1, 4, (n,), generator=g),
            torch.randint(0, 9, (n,), generator=g))


# Two CPU ranks (Lightning's DDP launcher): fit a small model one epoch, then fill the per-type
# metric with uneven shards of ddp_metric_data() and write each rank's synced table.
DDP_SCRIPT = """
import dataclasses, json, sys, torch, lightning as L
sys.path.insert(0, {tests!r})
from helpers import ListData, make_batch, SMALL, DIMS, C, ddp_metric_data
from avmaster.data.tables import get_table
from avmaster.cli import close_process_group
from avmaster.lightning_module import AVMasterModule
from avmaster.metrics import GroupedAccuracy

if __name__ == "__main__":
    torch.manual_seed(0)
    model = AVMasterModule(dataclasses.replace(SMALL, dim=16, heads=2), None, None,
                           dataclasses.asdict(DIMS), num_answers=C)
    data = ListData([make_batch(seed=s) for s in range(4)])
    trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_epochs=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir={root!r})
    trainer.fit(model, datamodule=data)
    acc = float(trainer.callback_metrics["val/acc"])
    rank, world = trainer.global_rank, trainer.world_size
    with open(f"{root}/rank{{rank}}.txt", "w") as f:
        f.write(f"RANK{{rank}} WORLD{{world}} ACC{{acc:.3f}}")
    pred, label, group = ddp_metric_data()
    metric = GroupedAccuracy(get_table("music_avqa"))
    for start in range(rank * 10, len(pred), world * 10):  # uneven shards across ranks
        metric.update(pred[start:start + 10], label[start:start + 10], group[start:start + 10])
    with open(f"{root}/metrics{{rank}}.json", "w") as f:
        json.dump(metric.compute(), f)
    trainer.strategy.barrier()  # both ranks have written before either exits
    close_process_group()  # as `avmaster` does on exit
"""


def run_ddp_script(root: Path) -> Path:
    """Run :data:`DDP_SCRIPT` in ``root`` (two processes); returns ``root``."""
    import os
    import subprocess
    import sys
    import textwrap

    script = root / "ddp_smoke.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(tests=str(REPO / "tests"),
                                                        root=str(root))))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("MASTER_PORT", None)
    run = subprocess.run([sys.executable, str(script)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    return root


def child_env(preload: str | None = None, **extra: str) -> dict[str, str]:
    """The environment for a child process: this one's, with ``LD_PRELOAD`` set to ``preload``
    (removed when ``None``: the child uses the C library's allocator, where glibc's
    ``MALLOC_PERTURB_`` applies) and ``extra`` added."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | extra
    if preload:
        env["LD_PRELOAD"] = preload
    return env
