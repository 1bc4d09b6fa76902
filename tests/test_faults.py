"""Faults a long run meets: training past its best epoch, a truncated checkpoint, a kill -9
in the middle of an epoch. Tiny model, two training batches per epoch."""

import csv
import json
import os
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import tiny_overrides

import avmaster.training as run_module
from avmaster.cli import main
from avmaster.random_states import KEY

# lr=0: validation accuracy never changes, so the best epoch stays epoch 0 (ties do not count)
FROZEN = ["optim.lr=0", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
          "data.test=[]"]
STEPS = 2  # training batches per epoch
CHILD_TIMEOUT_S = 300


def _epoch_step(path: Path) -> tuple[int, int]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return int(ckpt["epoch"]), int(ckpt["global_step"])


def _train_rows(run: Path) -> list[int]:
    with open(run / "logs" / "metrics.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]



@pytest.fixture
def overrides(tmp_path):
    """A tiny model on the annotation samples, its features and runs under ``tmp_path``."""
    return tiny_overrides(tmp_path)


def test_last_ckpt_is_the_last_epoch_not_the_best(tmp_path, overrides):
    assert main(["train", *overrides, *FROZEN, "trainer.max_epochs=3"]) == 0
    ckpts = tmp_path / "runs" / "tiny" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == ["epoch00.ckpt", "last.ckpt"]
    assert _epoch_step(ckpts / "epoch00.ckpt") == (0, STEPS)  # the best, kept on its own
    assert _epoch_step(ckpts / "last.ckpt") == (2, 3 * STEPS)  # the last epoch, not the best


def test_truncated_checkpoint_is_one_line_and_resume_falls_back(
        tmp_path, overrides, capsys, caplog):
    assert main(["train", *overrides, *FROZEN, "trainer.max_epochs=2"]) == 0
    ckpts = tmp_path / "runs" / "tiny" / "checkpoints"
    last = ckpts / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])  # a copy killed half-way
    capsys.readouterr()
    assert main(["eval", *overrides, f"ckpt={last}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(last) in err and "not a readable checkpoint" in err
    assert main(["eval", *overrides, f"ckpt={last}", "variants=table13"]) == 2  # same error
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a readable checkpoint" in err
    assert main(["train", *overrides, *FROZEN, f"ckpt={last}", "trainer.max_epochs=3"]) == 2
    assert str(last) in capsys.readouterr().err
    # the default resume continues from the newest checkpoint that reads, and says so
    caplog.clear()
    assert main(["train", *overrides, *FROZEN, "trainer.max_epochs=3"]) == 0
    assert f"resuming from {ckpts / 'epoch00.ckpt'}" in caplog.text
    assert "not a readable checkpoint" in caplog.text
    assert _epoch_step(last) == (2, 3 * STEPS)
    # refusing to start over says how to continue instead
    assert main(["train", *overrides, *FROZEN, "trainer.max_epochs=1", "resume=false"]) == 2
    assert "Drop resume=false to continue it" in capsys.readouterr().err


class KillMidEpoch(L.Callback):
    """kill -9 of the training process once ``step`` optimizer steps are done."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def test_kill_mid_epoch_then_resume_logs_each_step_once(
        tmp_path, overrides, monkeypatch):
    frozen = [*FROZEN, "trainer.limit_train_batches=4"]
    pid = os.fork()  # the child trains and is killed two batches into epoch 1
    if pid == 0:
        torch.set_num_threads(1)  # OpenMP's thread pool does not survive a fork
        build = run_module.build_trainer
        monkeypatch.setattr(run_module, "build_trainer", lambda cfg, **kw: build(
            cfg, **{**kw, "callbacks": [*(kw.get("callbacks") or []), KillMidEpoch(4 + 2)]}))
        try:
            main(["train", *overrides, *frozen, "trainer.max_epochs=3"])
        finally:
            os._exit(0)
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not (done := os.waitpid(pid, os.WNOHANG))[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    if not done[0]:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"the training child did not finish in {CHILD_TIMEOUT_S} s")
    status = done[1]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    run = tmp_path / "runs" / "tiny"
    assert _train_rows(run) == list(range(5))  # epoch 0 and the partial epoch 1 were logged
    assert _epoch_step(run / "checkpoints" / "last.ckpt") == (0, 4)
    assert main(["train", *overrides, *frozen, "trainer.max_epochs=3"]) == 0
    assert _train_rows(run) == list(range(12))  # one row per step: the partial epoch is gone


def test_videos_without_features_are_left_out_only_when_asked(
        tmp_path, fixtures, overrides, capsys, caplog):
    from helpers import make_features

    from avmaster.data.annotations import load_annotations

    val = load_annotations(fixtures / "music_avqa_val_sample.json").records
    test = load_annotations(fixtures / "music_avqa_test_sample.json").records
    failed = {val[0].video_id, test[0].video_id}  # one video per file failed extraction
    kept = [r for r in val + test if r.video_id not in failed]
    make_features(tmp_path / "partial", kept, seconds=4)
    partial = [*overrides, f"data.features_dir={tmp_path / 'partial'}", *FROZEN[1:3],
               f"data.test=[{fixtures / 'music_avqa_test_sample.json'}]", "trainer.max_epochs=1"]
    assert main(["train", *partial]) == 2
    err = capsys.readouterr().err
    assert "have no features" in err and "data.skip_videos_without_features=true" in err
    caplog.clear()
    assert main(["train", *partial, "data.skip_videos_without_features=true"]) == 0
    test_left = sum(r.video_id in failed for r in test)
    val_left = sum(r.video_id in failed for r in val)
    assert f"train: {val_left} of {len(val)} questions left out" in caplog.text
    assert f"test: {test_left} of {len(test)} questions left out" in caplog.text
    out = capsys.readouterr().out
    assert f"evaluated on {len(test) - test_left} of {len(test)} questions" in out
    result = json.loads((tmp_path / "runs" / "tiny" / "results_music_avqa.json").read_text())
    assert result["meta"]["questions"] == {
        "annotated": len(test), "evaluated": len(test) - test_left, "left_out": test_left,
        "videos_without_features": [test[0].video_id]}
    assert result["counts"]["avg"] == len(test) - test_left


def test_repeated_ids_reported_once_per_run(tmp_path, fixtures, overrides, caplog):
    from helpers import make_features

    from avmaster.data.annotations import load_annotations

    files = ("music_avqa_val_sample.json", "music_avqa_original_test_quirks.json")
    make_features(tmp_path / "quirks", [r for f in files
                                        for r in load_annotations(fixtures / f).records],
                  seconds=4)
    caplog.clear()
    assert main(["train", *overrides, f"data.features_dir={tmp_path / 'quirks'}", *FROZEN[1:3],
                 f"data.test=[{fixtures / files[1]}]", "trainer.max_epochs=1"]) == 0
    assert caplog.text.count("occur more than once") == 1, caplog.text


def test_a_resumed_run_trains_the_weights_of_an_uninterrupted_one(tmp_path, overrides, caplog):
    """Stopped after an epoch and resumed, a run draws the same batches and dropout masks as one
    that never stopped: the random states travel in the checkpoint."""
    steady = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "data.test=[]",
              "model.dropout=0.3"]
    assert main(["train", *overrides, *steady, "trainer.max_epochs=3", "name=whole"]) == 0
    assert main(["train", *overrides, *steady, "trainer.max_epochs=1", "name=split"]) == 0
    assert main(["train", *overrides, *steady, "trainer.max_epochs=3", "name=split"]) == 0
    runs = tmp_path / "runs"
    whole, split = (torch.load(runs / n / "checkpoints" / "last.ckpt", map_location="cpu",
                               weights_only=False) for n in ("whole", "split"))
    assert _epoch_step(runs / "whole" / "checkpoints" / "last.ckpt") == (2, 9)
    assert _epoch_step(runs / "split" / "checkpoints" / "last.ckpt") == (2, 9)
    different = [k for k, v in whole["state_dict"].items()
                 if not torch.equal(v, split["state_dict"][k])]
    assert not different, different[:5]

    # a checkpoint of an earlier version, without the states: resumed with fresh draws, said so
    last = runs / "split" / "checkpoints" / "last.ckpt"
    del split[KEY]
    torch.save(split, last)
    assert main(["train", *overrides, *steady, "trainer.max_epochs=4", "name=split"]) == 0
    assert "holds no random states" in caplog.text
