"""End to end through the CLI: train a tiny model on the real annotation samples, resume,
evaluate, and check that scoring the written predictions reproduces the evaluation table."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avmaster.cli import main
from avmaster.config import load_config


def _logged_epochs(metrics: Path, column: str) -> set[str]:
    with open(metrics, newline="") as f:
        return {row["epoch"] for row in csv.DictReader(f) if row.get(column)}


def test_train_resume_eval_score(tiny_run, fixtures, capsys, caplog):
    """Continues the session's shared run (the only test that changes it: a copy would not do,
    Lightning's checkpoint callback keeps absolute paths and would write last-v1.ckpt)."""
    overrides, run, last = tiny_run.overrides, tiny_run.run_dir, tiny_run.ckpt
    assert last.exists() and (run / "config.json").exists()  # trained for one epoch
    steps = torch.load(last, weights_only=False)["global_step"]
    assert steps == 7  # 108 questions, batch 16
    assert "avmaster_features" in torch.load(last, weights_only=False)
    # a second call with more epochs continues from last.ckpt instead of starting over
    caplog.clear()
    assert main(["train", *overrides, "trainer.max_epochs=2"]) == 0
    assert f"resuming from {last}" in caplog.text
    assert torch.load(last, weights_only=False)["global_step"] == 2 * steps
    metrics = run / "logs" / "metrics.csv"
    assert {"0", "1"} <= _logged_epochs(metrics, "val/avg")  # the resumed log keeps epoch 0
    assert "train/loss" in metrics.read_text()
    # starting over in a folder that holds a run is refused instead of overwriting it
    assert main(["train", *overrides, "trainer.max_epochs=1", "resume=false"]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert torch.load(last, weights_only=False)["global_step"] == 2 * steps

    assert main(["eval", *overrides, f"ckpt={last}"]) == 0
    out = capsys.readouterr().out
    assert "| method | a_count | a_comp | a_avg |" in out
    assert {"0", "1"} <= _logged_epochs(metrics, "val/avg")  # evaluation keeps the training log
    result = json.loads((run / "results_music_avqa.json").read_text())
    assert result["counts"]["avg"] == 108 and result["counts"]["a_count"] == 12
    preds = run / "predictions_music_avqa.jsonl"
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(lines) == 108 and len(lines[0]["top5"]) == 5

    scored = tiny_run.root / "scored"
    assert main(["score", "--predictions", str(preds), "--annotations",
                 str(fixtures / "music_avqa_test_sample.json"), "--out", str(scored)]) == 0
    rescored = json.loads(scored.with_suffix(".json").read_text())["accuracy"]
    for col, acc in result["accuracy"].items():
        assert rescored[col] == pytest.approx(acc, abs=1e-6), col


def test_command_line_prints_each_log_line_once(tiny_run, tmp_path):
    """A fresh process, as users run it: Lightning attaches its own log handler only when the
    root logger has none at import, which is never the case inside pytest."""
    done = subprocess.run([sys.executable, "-m", "avmaster.cli", "eval", *tiny_run.overrides,
                           f"ckpt={tiny_run.ckpt}", f"output_dir={tmp_path}",
                           "save_predictions=false"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    log = done.stdout + done.stderr
    # Lightning's lines come once, from its own handler, not again through the root logger
    assert "INFO: GPU available:" in log and "INFO lightning." not in log, log
    assert log.count("INFO avmaster.data.datamodule: test: 108 questions") == 1, log


def test_eval_needs_a_checkpoint(tiny_run, capsys):
    assert main(["eval", *tiny_run.overrides, "ckpt=/nonexistent.ckpt"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_ablation_presets_build_and_train_one_step(tiny_run, tmp_path):
    from avmaster.training import build_datamodule, build_module, build_trainer

    for name in ("wo_tdpp", "wo_all", "question_only", "share_none", "wo_ape"):
        cfg = load_config(overrides=[*tiny_run.overrides, f"output_dir={tmp_path}",
                                     f"ablation={name}", "trainer.max_epochs=1",
                                     "trainer.limit_train_batches=1",
                                     "trainer.limit_val_batches=1"])
        dm = build_datamodule(cfg)
        module = build_module(cfg, dm)
        trainer = build_trainer(cfg, logs=False)
        trainer.fit(module, datamodule=dm)
        assert trainer.global_step == 1, name
        assert torch.isfinite(trainer.callback_metrics["train/loss"]), name
