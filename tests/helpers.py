"""What several test modules share: fixture files, feature caches, model batches, results
folders, notebook runs, and the tiny-model settings of end-to-end runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from avmaster.config import load_config, to_dict
from avmaster.data.annotations import load_annotations
from avmaster.data.dataset import required_texts
from avmaster.data.records import QARecord
from avmaster.data.store import write_text_features, write_video_features
from avmaster.data.tables import get_table
from avmaster.metrics import write_results
from avmaster.models import FeatureDims, ModelConfig

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


def table_values(table: str, base: float) -> dict[str, float]:
    return {c: base + k for k, (c, _) in enumerate(get_table(table).columns)}


def write_run(folder: Path, data: str, table: str, base: float, *, meta: dict | None = None,
              config: dict | None = None) -> Path:
    """A results file as ``avmaster train``/``eval`` writes it (plus the run's config.json)."""
    spec = get_table(table)
    js, _ = write_results(folder / f"results_{data}", spec, table_values(table, base),
                          {c: 10 for c, _ in spec.columns},
                          meta={"data": data, "test": ["test.json"], **(meta or {})})
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return js


def make_results(root: Path) -> Path:
    """A results folder: MUSIC-AVQA runs (full, two ablations), a v2.0 run and a demo."""
    write_run(root / "full", "music_avqa", "music_avqa", 70.0,
              config=to_dict(load_config(overrides=["data=music_avqa"])))
    write_run(root / "wo_avfc", "music_avqa", "music_avqa", 60.0,
              config=to_dict(load_config(overrides=["data=music_avqa", "ablation=wo_avfc"])))
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
