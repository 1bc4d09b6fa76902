"""AVQA multiple choice end to end through the CLI: annotation files in AVQA's own format
(``multi_choice`` + answer index), features whose video content decides which option is right,
``avmaster train`` then ``avmaster eval`` scored by option accuracy on the AVQA table."""

import json

import numpy as np
import pytest

from avmaster.cli import main
from avmaster.data.annotations import load_annotations
from avmaster.data.dataset import required_texts
from avmaster.data.records import AVQA_TYPES
from avmaster.data.store import write_text_features, write_video_features

SECONDS, CLASSES, OPTIONS = 4, 8, 4
DIMS = {"visual": 16, "audio": 8, "text": 12}
NAMES = [f"sound source {c}" for c in range(CLASSES)]


def _write_split(path, videos, classes, rng, first_id):
    """One question per video: which of four class names (one of them the video's) it shows."""
    entries = []
    for i, (video, c) in enumerate(zip(videos, classes, strict=True)):
        wrong = rng.choice([k for k in range(CLASSES) if k != c], OPTIONS - 1, replace=False)
        choice = [int(c), *map(int, wrong)]
        rng.shuffle(choice)
        entries.append({
            "id": first_id + i, "video_name": f"{video}.mp4", "video_id": first_id + i,
            "question_text": "What is making the sound in the video?",
            "multi_choice": [NAMES[k] for k in choice], "answer": choice.index(int(c)),
            "question_relation": "Both", "question_type": AVQA_TYPES[i % len(AVQA_TYPES)],
        })
    path.write_text(json.dumps(entries), encoding="utf-8")


@pytest.fixture
def avqa(tmp_path):
    rng = np.random.default_rng(0)
    ann, feats = tmp_path / "annotations", tmp_path / "features"
    ann.mkdir()
    videos = [f"clip{i:04d}" for i in range(320)]
    classes = rng.integers(0, CLASSES, len(videos))
    _write_split(ann / "train_qa.json", videos[:240], classes[:240], rng, 0)
    _write_split(ann / "val_qa.json", videos[240:], classes[240:], rng, 10_000)

    # the video's class shows in its visual features (noisy, every second); audio is noise
    prototypes = rng.standard_normal((CLASSES, DIMS["visual"])).astype(np.float32)
    visual = {v: (prototypes[c] + 0.5 * rng.standard_normal((SECONDS, DIMS["visual"])))
              .astype(np.float32) for v, c in zip(videos, classes, strict=True)}
    audio = {v: rng.standard_normal((SECONDS, DIMS["audio"])).astype(np.float32)
             for v in videos}
    write_video_features(feats / "visual.h5", visual, modality="visual", encoder="synthetic",
                         seconds=SECONDS)
    write_video_features(feats / "audio.h5", audio, modality="audio", encoder="synthetic",
                         seconds=SECONDS)
    records = [r for f in ("train_qa.json", "val_qa.json")
               for r in load_annotations(ann / f).records]
    texts = required_texts(records)
    sentence = rng.standard_normal((len(texts), DIMS["text"])).astype(np.float32)
    tokens = [rng.standard_normal((5, DIMS["text"])).astype(np.float32) for _ in texts]
    write_text_features(feats / "text.h5", texts, sentence, tokens, encoder="synthetic")
    return ["data=avqa", f"data.annotations_dir={ann}", f"data.features_dir={feats}",
            "data.visual_features=visual.h5", "data.audio_features=audio.h5",
            "data.text_features=text.h5", f"data.seconds={SECONDS}",
            "data.batch_size=16", "data.eval_batch_size=64", "data.num_workers=0",
            "data.pin_memory=false", "model.dim=32", "model.heads=2", "model.template_len=2",
            "model.decoder_depth=1", "optim.lr=3e-3", "trainer.accelerator=cpu",
            "trainer.devices=1", "trainer.enable_progress_bar=false",
            f"output_dir={tmp_path / 'runs'}", "name=avqa_tiny", "seed=0"]


@pytest.mark.slow
def test_avqa_multiple_choice_train_eval(tmp_path, avqa, capsys):
    assert main(["train", *avqa, "trainer.max_epochs=12"]) == 0
    run = tmp_path / "runs" / "avqa_tiny"
    capsys.readouterr()
    assert main(["eval", *avqa, f"ckpt={run / 'checkpoints' / 'last.ckpt'}"]) == 0
    out = capsys.readouterr().out
    assert "| which |" in out and "| avg |" in out

    result = json.loads((run / "results_avqa.json").read_text())
    assert result["table"] == "avqa"
    assert result["counts"]["avg"] == 80
    assert set(result["counts"]) == {t.lower().replace(" ", "_") for t in AVQA_TYPES} | {"avg"}
    # four options: chance is 25 %; the right option is only knowable from the video
    assert result["accuracy"]["avg"] > 60, result["accuracy"]

    preds = [json.loads(x) for x in (run / "predictions_avqa.jsonl").read_text().splitlines()]
    assert len(preds) == 80
    truth = {r.question_id: r.answer for r in
             load_annotations(tmp_path / "annotations" / "val_qa.json").records}
    hits = sum(p["answer"] == truth[p["question_id"]] for p in preds)
    assert 100 * hits / len(preds) == pytest.approx(result["accuracy"]["avg"], abs=1e-6)

    # the probe works on multiple choice: the options stay, the video is what the answer needs
    assert main(["probe", *avqa, f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
                 "--probes", "reversed,audio_silenced,visual_blanked"]) == 0
    probe = json.loads((run / "probe_avqa.json").read_text())["accuracy"]
    original = probe["original"]["avg"]
    assert original == pytest.approx(result["accuracy"]["avg"], abs=1e-6)
    assert probe["visual_blanked"]["avg"] < original - 20, probe
    assert probe["audio_silenced"]["avg"] > original - 10, probe  # audio is noise here


def test_a_checkpoint_is_evaluated_on_data_of_its_own_kind(tmp_path, avqa, tiny_run, capsys):
    """A vocabulary model on AVQA's options scored meaningless numbers, and an options model on
    MUSIC-AVQA failed on the first batch: both are one error line."""
    on_avqa = [*avqa, "data.test=[val_qa.json]"]
    assert main(["eval", *on_avqa, f"ckpt={tiny_run.ckpt}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "its model answers from a vocabulary" in err and "data=avqa" in err, err
    assert main(["probe", *on_avqa, f"ckpt={tiny_run.ckpt}", "--probes", "reversed"]) == 2
    assert "evaluate it on data of its own kind" in capsys.readouterr().err

    assert main(["train", *avqa, "trainer.max_epochs=1", "data.val=[]"]) == 0
    ckpt = tmp_path / "runs" / "avqa_tiny" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert main(["eval", *tiny_run.overrides, f"ckpt={ckpt}", "variants=table13"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "its model chooses among each question's options" in err and "music_avqa" in err
