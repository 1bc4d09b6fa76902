"""Probes: each transformation is exact, and the reversal probe tells an order-sensitive model
from an order-blind one."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from helpers import assert_clean, make_features, outputs, run_notebook

from avmaster.cli import main
from avmaster.config import preset_configs
from avmaster.data.annotations import load_annotations
from avmaster.data.dataset import QADataset
from avmaster.data.records import QARecord
from avmaster.data.store import (
    TextFeatures,
    VideoFeatures,
    write_text_features,
    write_video_features,
)
from avmaster.data.tables import get_table
from avmaster.data.vocab import AnswerVocab
from avmaster.lightning_module import AVMasterModule, build_optimizer
from avmaster.models import ModelConfig, OptimConfig
from avmaster.probe import (
    ORIGINAL,
    PROBES,
    apply_probe,
    derangement,
    probe_inputs,
    run_probes,
    write_probe_report,
)
from avmaster.training import results_name

SECONDS = 4
SPEC = get_table("music_avqa")


def dataset(root: Path, records: list[QARecord], silence: np.ndarray | None = None
            ) -> QADataset:
    paths = make_features(root, records, seconds=SECONDS)
    if silence is not None:  # rewrite the audio file with a recorded silence vector
        audio = VideoFeatures(paths["audio"])
        feats = {v: audio[v] for v in audio.ids}
        write_video_features(paths["audio"], feats, modality="audio", encoder="random",
                             seconds=SECONDS, extra_attrs={"silence": silence})
    return QADataset(records, AnswerVocab.from_records(records),
                     VideoFeatures(paths["visual"], SECONDS, preload=True),
                     VideoFeatures(paths["audio"], SECONDS, preload=True),
                     TextFeatures(paths["text"]), SPEC)


@pytest.fixture
def sample(tmp_path, fixtures) -> QADataset:
    records = load_annotations(fixtures / "music_avqa_test_sample.json").records
    return dataset(tmp_path, records, silence=np.linspace(-1, 1, 8, dtype=np.float32))


def test_derangement_moves_every_item() -> None:
    for n in (2, 3, 10):
        d = derangement(n, np.random.default_rng(n))
        assert sorted(d.tolist()) == list(range(n)) and (d != np.arange(n)).all()


def test_transformations_are_exact(sample: QADataset) -> None:
    ds = sample
    idx = list(range(len(ds)))
    base = ds.__getitems__(idx)
    inputs = probe_inputs(ds, seed=3)
    videos = [r.video_id for r in ds.records]
    out = {name: apply_probe(name, ds.__getitems__(idx), inputs) for name in PROBES}
    text_keys = ("question", "question_tokens", "question_mask", "label", "group", "index")
    for name, batch in out.items():  # the question side of every question is untouched
        for k in text_keys:
            assert torch.equal(batch[k], base[k]), (name, k)
    assert torch.equal(out[ORIGINAL]["audio"], base["audio"])
    # reversal reverses, audio and visual alike
    assert torch.equal(out["reversed"]["audio"], base["audio"].flip(1))
    assert torch.equal(out["reversed"]["visual"], base["visual"].flip(1))
    # shuffling: one non-identity order per video, shared by audio and visual
    for i, v in enumerate(videos):
        order = inputs.order[i]
        assert sorted(order.tolist()) == list(range(SECONDS))
        assert order.tolist() != list(range(SECONDS))
        assert torch.equal(out["shuffled"]["audio"][i], base["audio"][i][order])
        assert torch.equal(out["shuffled"]["visual"][i], base["visual"][i][order])
        for j in range(i):
            if videos[j] == v:
                assert (inputs.order[j] == order).all()
    # swaps: another video's features in one modality, the own features in the other
    ids = sorted(set(videos))
    for modality, other in (("audio", "visual"), ("visual", "audio")):
        swapped = out[f"{modality}_swapped"]
        assert torch.equal(swapped[other], base[other])
        store = getattr(ds, modality)
        partner = {}
        for i, v in enumerate(videos):
            match = [u for u in ids
                     if np.array_equal(store.take(store.rows([u]))[0], swapped[modality][i])]
            assert match and v not in match, (modality, v)
            assert partner.setdefault(v, match[0]) == match[0]  # one partner per video
    # silence is the recorded vector, blanking uses zeros (none recorded), both for question-only
    silence = torch.from_numpy(inputs.silence).to(base["audio"].dtype)
    assert inputs.empty_source["audio"].endswith(":silence")
    assert inputs.empty_source["visual"].startswith("zeros")
    assert (out["audio_silenced"]["audio"] == silence).all()
    assert torch.equal(out["audio_silenced"]["visual"], base["visual"])
    assert (out["visual_blanked"]["visual"] == 0).all()
    assert torch.equal(out["visual_blanked"]["audio"], base["audio"])
    assert (out["question_only"]["audio"] == silence).all()
    assert (out["question_only"]["visual"] == 0).all()


# -- an order-sensitive and an order-blind model -------------------------------------------
# One question, "is the sound in the first half?": the audio has one event (a fixed direction
# over noise) at a random second. Only the order of the seconds carries the answer; reversing
# time flips it. The full model sees order through its focus recurrence; w/o TDPP (preference
# paths only, no positional encodings) is blind to it by construction.
T, DA, DV, DQ = 4, 8, 8, 8
QUESTION = "Is the sound in the first half"
N_TRAIN, N_TEST, STEPS, BATCH, LR = 512, 192, 40, 32, 3e-3


def order_task(n: int, seed: int, offset: int = 0) -> tuple[list[QARecord], dict, dict]:
    rng = np.random.default_rng(seed)
    event = np.random.default_rng(99).standard_normal(DA).astype(np.float32)
    event *= 2.0 * DA**0.5 / np.linalg.norm(event)
    when = rng.integers(0, T, n)
    audio, visual, records = {}, {}, []
    for i in range(n):
        vid = f"v{offset + i}"
        a = rng.standard_normal((T, DA)).astype(np.float32)
        a[when[i]] += event
        audio[vid], visual[vid] = a, rng.standard_normal((T, DV)).astype(np.float32)
        answer = "yes" if when[i] < T // 2 else "no"
        records.append(QARecord(str(offset + i), vid, QUESTION, answer, "Audio-Visual",
                                "Temporal", "test"))
    return records, audio, visual


def write_task(root: Path, records, audio, visual) -> QADataset:
    root.mkdir(parents=True, exist_ok=True)
    write_video_features(root / "a.h5", audio, modality="audio", encoder="r", seconds=T)
    write_video_features(root / "v.h5", visual, modality="visual", encoder="r", seconds=T)
    rng = np.random.default_rng(5)
    write_text_features(root / "t.h5", [QUESTION], rng.standard_normal((1, DQ)),
                        [rng.standard_normal((3, DQ))], encoder="r")
    return QADataset(records, AnswerVocab(["yes", "no"]),
                     VideoFeatures(root / "v.h5", T, preload=True),
                     VideoFeatures(root / "a.h5", T, preload=True),
                     TextFeatures(root / "t.h5", preload=True), SPEC)


def trained(preset: str, train: QADataset) -> AVMasterModule:
    base = ModelConfig(dim=32, heads=4, template_len=4, decoder_depth=1, dropout=0.0)
    cfg, loss = preset_configs(preset, base)
    torch.manual_seed(0)
    module = AVMasterModule(cfg, loss, OptimConfig(lr=LR), {"visual": DV, "audio": DA,
                                                            "text": DQ}, answers=["yes", "no"])
    opt, _ = build_optimizer(module.parameters(), OptimConfig(lr=LR))
    g = np.random.default_rng(0)
    for _ in range(STEPS):
        batch = train.__getitems__(g.integers(0, len(train), BATCH).tolist())
        batch = module.on_after_batch_transfer(batch, 0)
        loss_value = module.criterion(module.model(batch), batch["label"])["loss"]
        opt.zero_grad(set_to_none=True)
        loss_value.backward()
        opt.step()
    return module.eval()


@pytest.mark.usefixtures("single_thread")
def test_reversal_probe_catches_an_order_sensitive_model(tmp_path) -> None:
    train = write_task(tmp_path / "train", *order_task(N_TRAIN, seed=1))
    test = write_task(tmp_path / "test", *order_task(N_TEST, seed=2, offset=N_TRAIN))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    probes = ("reversed", "audio_swapped", "visual_swapped")
    reports = {p: run_probes(trained(p, train), test, SPEC, trainer, probes)
               for p in ("full", "wo_tdpp")}
    full, blind = reports["full"], reports["wo_tdpp"]
    shown = {p: (r.accuracy, r.changed) for p, r in reports.items()}
    # the order-sensitive model answers from order: reversing time flips its answers
    assert full.accuracy[ORIGINAL]["av_temp"] >= 75, shown
    assert full.delta("reversed", "av_temp") <= -50, shown
    assert full.delta("audio_swapped", "av_temp") <= -25, shown  # and from the audio
    # the order-blind one stays at chance and reversing time changes none of its answers
    assert abs(blind.accuracy[ORIGINAL]["av_temp"] - 50) <= 15, shown
    assert blind.changed["reversed"]["av_temp"] == 0, shown
    files = write_probe_report(tmp_path / "probe", full, "full")
    assert all(f.stat().st_size > 0 for f in files.values())
    assert "reversed" in files["md"].read_text()
    # only temporal questions here: the other columns hold null (JSON has no NaN)
    written = json.loads(files["json"].read_text(), parse_constant=pytest.fail)
    assert written["accuracy"][ORIGINAL]["a_count"] is None


def test_probe_command_and_notebook(tiny_run, tmp_path, capsys, monkeypatch) -> None:
    overrides = [*tiny_run.overrides, f"output_dir={tmp_path / 'runs'}"]  # writes stay here
    ckpt = tiny_run.ckpt
    capsys.readouterr()
    assert main(["probe", "--probes", "reversed,question_only", "--per-template", *overrides,
                 f"ckpt={ckpt}"]) == 0
    out = capsys.readouterr().out
    assert "question_only" in out and "answers changed" in out
    assert "| Is the <Object> in the video always playing? | " in out  # a template's row
    assert (tmp_path / "runs" / "tiny" / "probe_music_avqa.png").exists()
    # inference settings apply: the unchanged input is answered as `eval` answers it
    for setting in ("inference.drop=[tdpp]", "inference.combine=mul"):
        assert main(["eval", *overrides, f"ckpt={ckpt}", setting]) == 0
        name = results_name("music_avqa", setting)
        expected = json.loads((tmp_path / "runs" / "tiny" / f"{name}.json").read_text())
        expected = expected["accuracy"]
        assert main(["probe", "--probes", "reversed", *overrides, f"ckpt={ckpt}", setting]) == 0
        probed = json.loads((tmp_path / "runs" / "tiny" / "probe_music_avqa.json").read_text())
        assert probed["accuracy"]["original"] == pytest.approx(expected), setting
    capsys.readouterr()
    assert main(["probe", *overrides, f"ckpt={ckpt}", "--probes", "backwards"]) == 2
    assert "unknown probe 'backwards'" in capsys.readouterr().err
    # the notebook probes the same checkpoint live and shows every report it finds
    monkeypatch.setenv("AVMASTER_PROBE_CKPT", str(ckpt))
    monkeypatch.setenv("AVMASTER_PROBE_OVERRIDES", " ".join(overrides))
    nb = run_notebook("probes.ipynb", tmp_path / "runs", monkeypatch, tmp_path)
    assert_clean(nb)
    assert any("audio_swapped" in m for m in outputs(nb, "text/markdown"))
    assert len(outputs(nb, "image/png")) == 1 and outputs(nb, "text/html")
