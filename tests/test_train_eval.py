"""End to end through the CLI: train a tiny model on the real annotation samples, resume,
evaluate, and check that scoring the written predictions reproduces the evaluation table."""

import csv
import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_overrides

from avmaster.cli import main
from avmaster.config import load_config
from avmaster.malloc import cpu_hint
from avmaster.training import results_name


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
    hint = cpu_hint()  # a CPU run with glibc's malloc says how to preload tcmalloc, once
    assert caplog.text.count(hint) == 1 if hint else "LD_PRELOAD" not in caplog.text
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


def test_command_line_prints_each_log_line_once(tiny_run, tmp_path, capsys):
    """As users run it. In the ``avmaster`` process the root logger gets its handler before
    Lightning is imported, so Lightning's sub-loggers propagate and only its top logger's own
    handler prints. Pytest imports Lightning first (its sub-loggers then get handlers of their
    own) and holds the root's handlers: both are set to the command's state here, and
    Lightning's real handler writes to the captured stream."""
    import lightning  # noqa: F401  (attaches its handler on import)

    root, light = logging.getLogger(), logging.getLogger("lightning")
    subs = [logging.getLogger(f"lightning.{n}") for n in ("pytorch", "fabric")]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in (root, light, *subs)]
    streams = [h.setStream(sys.stderr) for h in light.handlers]  # capsys's stream
    for lg in (root, *subs):
        lg.handlers.clear()
        lg.propagate = True
    try:
        assert main(["eval", *tiny_run.overrides, f"ckpt={tiny_run.ckpt}",
                     f"output_dir={tmp_path}", "save_predictions=false"]) == 0
    finally:
        for h in root.handlers:
            h.close()
        for lg, handlers, propagate in saved:
            lg.handlers[:], lg.propagate = handlers, propagate
        for h, stream in zip(light.handlers, streams, strict=True):
            h.setStream(stream)
    captured = capsys.readouterr()
    log = captured.out + captured.err
    # Lightning's lines come once, from its own handler, not again through the root logger
    assert "INFO: GPU available:" in log and "INFO lightning." not in log, log
    assert log.count("INFO avmaster.data.datamodule: test: 108 questions") == 1, log
    assert "Tip:" not in log  # Lightning's advertising for optional packages


def test_eval_needs_a_checkpoint(tiny_run, capsys):
    assert main(["eval", *tiny_run.overrides, "ckpt=/nonexistent.ckpt"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_eval_writes_into_the_checkpoints_own_run(tiny_run, tmp_path, monkeypatch, capsys):
    """Without name= / output_dir=, evaluating another run's checkpoint writes into that run,
    a checkpoint outside a run folder into runs/<file stem>: never over the results of the
    default run runs/avmaster."""
    import shutil

    monkeypatch.chdir(tmp_path)
    base = [o for o in tiny_run.overrides if not o.startswith(("name=", "output_dir="))]
    base.append("save_predictions=false")
    other = tmp_path / "elsewhere" / "res18" / "checkpoints" / "last.ckpt"
    other.parent.mkdir(parents=True)
    shutil.copy(tiny_run.ckpt, other)
    shutil.copy(tiny_run.ckpt, tmp_path / "downloaded.ckpt")

    assert main(["eval", *base, f"ckpt={other}"]) == 0
    assert (other.parents[1] / "results_music_avqa.json").exists()
    assert main(["eval", *base, "ckpt=downloaded.ckpt"]) == 0
    assert Path("runs/downloaded/results_music_avqa.json").exists()
    assert main(["eval", *base, f"ckpt={other}", "variants=table13"]) == 0
    assert (other.parents[1] / "variants_music_avqa.json").exists()
    assert main(["probe", *base, f"ckpt={other.parents[1]}", "--probes", "reversed"]) == 0
    probe = json.loads((other.parents[1] / "probe_music_avqa.json").read_text())
    assert probe["meta"]["checkpoint"] == str(other)  # a run folder: its selected checkpoint
    assert not Path("runs/avmaster").exists()
    # a name or output folder that is given is used
    assert main(["eval", *base, f"ckpt={other}", "name=chosen"]) == 0
    assert Path("runs/chosen/results_music_avqa.json").exists()
    assert main(["eval", *base, f"ckpt={other}", "output_dir=out"]) == 0
    assert Path("out/avmaster/results_music_avqa.json").exists()
    capsys.readouterr()


def test_resuming_with_other_settings_is_refused(tiny_run, tmp_path, capsys):
    """Rerunning `train` in a run folder continues its run; with other model, loss, optimiser
    or data settings (another ablation without a new name=) that is one error line, and the
    run's checkpoint and config.json stay as they were."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run.run_dir, runs / "tiny")
    ckpt, config = runs / "tiny" / "checkpoints" / "last.ckpt", runs / "tiny" / "config.json"
    before = ckpt.read_bytes(), config.read_text()
    overrides = [*tiny_run.overrides, f"output_dir={runs}"]
    for change, named in (("ablation=loss_qa", "loss.contrastive: 1.0 -> 0.0"),
                          ("ablation=wo_tdpp", "model.use_tdpp: True -> False"),
                          ("optim.lr=0.01", "optim.lr: 0.0001 -> 0.01"),
                          ("data.seconds=3", "data.seconds: 4 -> 3"),
                          ("data=music_avqa_v2_bias",
                           "data: data=music_avqa -> data=music_avqa_v2_bias")):
        assert main(["train", *overrides, change, "trainer.max_epochs=9"]) == 2, change
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{ckpt}: this command would continue" in err
        assert named in err and "name=NEW_NAME" in err, err
        assert (ckpt.read_bytes(), config.read_text()) == before
    # the same settings with more epochs, other loader settings or another folder for the
    # features are the same run
    cfg = load_config(overrides=[*overrides, "trainer.max_epochs=9", "data.batch_size=4"])
    from avmaster.training import build_datamodule, build_module, resume_differences

    contents = torch.load(ckpt, weights_only=False)
    assert resume_differences(contents, build_module(cfg, build_datamodule(cfg)), cfg) == []


def test_ablation_presets_build_and_train_one_step(tiny_run, tmp_path):
    from avmaster.training import build_datamodule, build_module, build_trainer

    for name in ("ablation=wo_tdpp", "ablation=wo_all", "ablation=question_only",
                 "ablation=share_none", "ablation=loss_qa", "ablation=inputs_v_q",
                 "data.segments=2"):
        cfg = load_config(overrides=[*tiny_run.overrides, f"output_dir={tmp_path}",
                                     name, "trainer.max_epochs=1",
                                     "trainer.limit_train_batches=1",
                                     "trainer.limit_val_batches=1"])
        dm = build_datamodule(cfg)
        module = build_module(cfg, dm)
        trainer = build_trainer(cfg, logs=False)
        trainer.fit(module, datamodule=dm)
        assert trainer.global_step == 1, name
        assert torch.isfinite(trainer.callback_metrics["train/loss"]), name


def test_compile_mode_reaches_torch_compile(tiny_run, tmp_path, monkeypatch):
    from avmaster.models import AVMaster
    from avmaster.training import build_datamodule, build_module

    calls = []
    monkeypatch.setattr(AVMaster, "compile_blocks", lambda self, **kw: calls.append(kw))
    for extra, wanted in (([], None), (["compile=true"], {}),
                          (["compile=true", "compile_mode=max-autotune"],
                           {"mode": "max-autotune"})):
        cfg = load_config(overrides=[*tiny_run.overrides, f"output_dir={tmp_path}", *extra])
        calls.clear()
        build_module(cfg, build_datamodule(cfg))
        assert calls == ([] if wanted is None else [wanted]), extra


def test_inference_time_variants_of_one_checkpoint(tiny_run, tmp_path, capsys):
    """Train once, then Tables XII and XIII and the Fig. 6 curve from that one checkpoint."""
    overrides = [*tiny_run.overrides, f"output_dir={tmp_path}"]
    assert main(["train", *overrides, "trainer.max_epochs=1", "ablation=wo_dpcl",
                 "model.share=attention"]) == 0  # the default value: no ablation
    run = tmp_path / "tiny"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert main(["eval", *overrides, f"ckpt={ckpt}", "variants=table12,table13,fig6"]) == 0
    rows = {p.name[len("results_music_avqa__"):-len(".json")]: json.loads(p.read_text())
            for p in run.glob("results_music_avqa__*.json")}
    steps = [f"fig6-k{k:02d}" for k in range(4)]  # data.seconds=4: k = 0..3
    assert set(rows) == {"table12-full", "table12-wo_ape", "table12-wo_vpe", "table12-wo_avpe",
                         "table13-add", "table13-mul", "table13-w_add", *steps}
    avg = {k: r["accuracy"]["avg"] for k, r in rows.items()}
    for r in rows.values():
        assert r["counts"]["avg"] == 108 and r["meta"]["presets"][-1] == "ablation=wo_dpcl"
        assert r["meta"]["ablation"] == []  # TINY's model.template_len=2: no paper row
    # labelled by the record; sizes (model.dim=32, ...) are not ablations, template length is
    assert rows["table12-wo_ape"]["method"] == (
        "AV-Master [wo_dpcl, model.template_len=2] {table12: wo_ape}")
    assert rows["table12-wo_avpe"]["meta"]["inference"]["drop"] == ["audio", "visual"]
    w_add = rows["table13-w_add"]["meta"]
    assert w_add["weights_from"] == "val" and set(w_add["inference"]["weights"]) == {
        "tdpp", "audio", "visual"}
    # the default row, ADD and the readout after the last second are the same model
    assert avg["table12-full"] == avg["table13-add"] == avg["fig6-k03"]
    summary = json.loads((run / "variants_music_avqa.json").read_text())
    assert summary["avg"] == avg
    # a single row through the ordinary test loop agrees with the variant pass
    for row, setting in (("table12-wo_avpe", "inference.drop=[audio,visual]"),
                         ("table13-mul", "inference.combine=mul"),
                         ("fig6-k01", "inference.readout_step=1")):
        assert main(["eval", *overrides, f"ckpt={ckpt}", setting,
                     "save_predictions=false"]) == 0
        name = results_name("music_avqa", setting)
        assert name.startswith("results_music_avqa__inference")
        single = json.loads((run / f"{name}.json").read_text())
        assert single["accuracy"] == pytest.approx(rows[row]["accuracy"]), row
    # settings the model cannot honour are refused, naming the row
    capsys.readouterr()
    assert main(["train", *overrides, "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                 "ablation=wo_avfc", "name=flat"]) == 0
    flat = tmp_path / "flat" / "checkpoints" / "last.ckpt"
    assert main(["eval", *overrides, "name=flat", f"ckpt={flat}", "variants=fig6"]) == 2
    assert "variants=fig6, row k00: readout_step=0, but" in capsys.readouterr().err
    assert main(["eval", *overrides, f"ckpt={ckpt}", "inference.readout_step=4"]) == 2
    assert "readout_step=4 must be between 0 and 3" in capsys.readouterr().err
    assert main(["eval", *overrides, f"ckpt={ckpt}",
                 "inference.drop=[tdpp,audio,visual]"]) == 2
    assert "leaves none of the paths" in capsys.readouterr().err


def test_bf16_mixed_precision_trains_on_cpu(tmp_path):
    """``trainer.precision=bf16-mixed`` on CPU: the model runs under bf16 autocast, weights
    and their gradients stay float32, and a training step updates every weight."""
    from avmaster.training import build_datamodule, build_module, build_trainer

    cfg = load_config(overrides=[*tiny_overrides(tmp_path), "trainer.precision=bf16-mixed",
                                 "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                                 "trainer.limit_val_batches=1"])
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    seen = []
    module.model.proj_audio.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    build_trainer(cfg, logs=False).fit(module, datamodule=dm)
    assert torch.bfloat16 in seen
    for name, p in module.named_parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all(), name
        assert not torch.equal(p, before[name]), f"{name} was not updated"


def test_lightning_advice_to_add_loader_workers_is_not_printed(monkeypatch) -> None:
    """Preloaded features load fastest without workers (data.num_workers defaults to 0), so
    Lightning's advice to add some, given on machines with more than 2 cores, is filtered."""
    import warnings

    import lightning as L
    from lightning.pytorch.trainer.connectors import data_connector
    from torch.utils.data import DataLoader

    from avmaster.data.config import DataConfig
    from avmaster.training import ignore_known_warnings

    assert DataConfig().num_workers == 0
    monkeypatch.setattr(data_connector, "suggested_max_num_workers", lambda devices: 8)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    loader = DataLoader(list(range(4)), num_workers=0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ignore_known_warnings()
        data_connector._worker_check(trainer, loader, "train_dataloader")
    assert not [w for w in seen if "workers" in str(w.message)]
    with warnings.catch_warnings(record=True) as seen:  # the same check, filters reset, warns
        warnings.resetwarnings()
        warnings.simplefilter("always")
        data_connector._worker_check(trainer, loader, "train_dataloader")
    assert [w for w in seen if "does not have many workers" in str(w.message)]
