"""`avmaster predict` and `avmaster explain` on a raw video, with a checkpoint trained on
features the real extraction tool wrote (random-init tiny encoders: no download here)."""

import json
import re

import pytest

from avmaster.cli import main
from avmaster.extract.synth_media import ClipSpec, synthetic_clip

SECONDS = 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    videos = root / "videos"
    ids = [f"{i:08d}" for i in range(4)]
    for i, vid in enumerate(ids):
        synthetic_clip(videos / f"{vid}.mp4", ClipSpec(seconds=SECONDS, base_tone_hz=200 + 80 * i))
    entries = [{"video_id": vid, "question_id": n, "type": '["Audio", "Counting"]',
                "question_content": q, "templ_values": "[]", "question_deleted": 0,
                "anser": a}
               for n, (vid, (q, a)) in enumerate(
                   (v, qa) for v in ids for qa in (
                       ("How many instruments are sounding in the video?", "one"),
                       ("Is there a voiceover?", "no")))]
    ann = root / "avqa.json"
    ann.write_text(json.dumps(entries))
    feats = root / "features"
    assert main(["extract", "--videos", str(videos), "--annotations", str(ann), "--out",
                 str(feats), "--model", "avmaster-tiny", "--random-init", "--seconds",
                 str(SECONDS), "--workers", "1", "--device", "cpu", "--no-progress"]) == 0
    from avmaster.extract import feature_paths

    paths = feature_paths(out=feats, model="avmaster-tiny", random_init=True)
    overrides = ["data=music_avqa", f"data.annotations_dir={root}", "data.train=[avqa.json]",
                 "data.val=[avqa.json]", "data.test=[]", f"data.features_dir={feats}",
                 f"data.visual_features={paths.visual.name}",
                 f"data.audio_features={paths.audio.name}",
                 f"data.text_features={paths.text.name}", f"data.seconds={SECONDS}",
                 "data.num_workers=0", "data.pin_memory=false", "data.batch_size=4",
                 "model.dim=32", "model.heads=2", "model.template_len=2",
                 "model.decoder_depth=1", "trainer.max_epochs=1", "trainer.accelerator=cpu",
                 "trainer.devices=1", "trainer.enable_progress_bar=false",
                 f"output_dir={root / 'runs'}", "name=tiny"]
    assert main(["train", *overrides]) == 0
    return videos / f"{ids[0]}.mp4", root / "runs" / "tiny" / "checkpoints" / "last.ckpt"


def test_predict_prints_answer_top5_and_timing(trained, capsys):
    video, ckpt = trained
    capsys.readouterr()
    assert main(["predict", str(video), "How many instruments are sounding in the video?",
                 "--ckpt", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("answer: ") and "top-5:" in out and "timing: " in out
    assert len(re.findall(r"^\s+\d+\.\d%\s+\S+$", out, re.MULTILINE)) == 5
    # the run folder answers as its selected checkpoint (here last.ckpt: no validation pick)
    question = "How many instruments are sounding in the video?"
    assert main(["predict", str(video), question, "--ckpt", str(ckpt.parents[1])]) == 0
    assert capsys.readouterr().out.split("timing")[0] == out.split("timing")[0]
    # --options belongs to multiple-choice checkpoints: one line, before any decoding
    assert main(["predict", str(video), question, "--ckpt", str(ckpt), "--options", "one",
                 "two"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "answers from its vocabulary of" in err
    from avmaster.config import ConfigError
    from avmaster.inference import Predictor

    predictor = Predictor(ckpt)
    predictor.module.hparams["multiple_choice"] = True  # as an AVQA checkpoint
    with pytest.raises(ConfigError, match="multiple-choice checkpoint"):
        predictor(video, question)


def test_explain_writes_a_picture(trained, tmp_path, capsys):
    video, ckpt = trained
    out = tmp_path / "why.png"
    capsys.readouterr()
    assert main(["explain", str(video), "Is there a voiceover?", "--ckpt", str(ckpt),
                 "--out", str(out), "--json"]) == 0
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads(capsys.readouterr().out)
    assert set(result["attribution"]) == {"audio", "visual"}
    assert all(len(v) == SECONDS for v in result["attribution"].values())


def test_predict_missing_checkpoint(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "v.mp4"), "q", "--ckpt",
                 str(tmp_path / "none.ckpt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_predict_warns_about_degraded_video(trained, tmp_path, capsys):
    from avmaster.inference import Predictor
    from avmaster.predict import as_json

    _, ckpt = trained
    question = "How many instruments are sounding in the video?"
    predictor = Predictor(ckpt)
    for name, spec, kind in (("short", ClipSpec(seconds=2), "short_video"),
                             ("mute", ClipSpec(seconds=SECONDS, audio=False), "no_audio_stream"),
                             ("silent", ClipSpec(seconds=SECONDS, silent=True), "silent_audio")):
        synthetic_clip(tmp_path / f"{name}.mp4", spec)
        result = json.loads(as_json(predictor(tmp_path / f"{name}.mp4", question)))
        assert [p["kind"] for p in result["problems"]] == [kind], name
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "short.mp4"), question, "--ckpt", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("warning: short video: ") and "\nanswer: " in out


def test_predict_on_unreadable_video_is_one_line(trained, tmp_path, capsys):
    _, ckpt = trained
    for command, content in (("predict", b"\x00garbage" * 500), ("explain", b"")):
        video = tmp_path / f"{command}.mp4"
        video.write_bytes(content)
        capsys.readouterr()
        assert main([command, str(video), "q", "--ckpt", str(ckpt)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and str(video) in err and "cannot be decoded" in err


def test_predict_with_truncated_checkpoint_is_one_line(trained, tmp_path, capsys):
    video, ckpt = trained
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(ckpt.read_bytes()[:3000])
    assert main(["predict", str(video), "q", "--ckpt", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a readable checkpoint" in err


def test_cuda_asked_for_without_a_gpu_is_one_line(trained, tmp_path, capsys):
    """`--device cuda` on a machine without a GPU: one line saying to use the CPU (predict raised
    torch's driver error with a traceback)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    video, ckpt = trained
    assert main(["predict", str(video), "How many?", "--ckpt", str(ckpt), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "torch sees no CUDA GPU; use --device cpu" in err, err
    assert main(["extract", "--videos", str(video.parent), "--out", str(tmp_path / "f"),
                 "--random-init", "--device", "cuda"]) == 2
    assert "torch sees no CUDA GPU; use --device cpu" in capsys.readouterr().err
