"""Feature extraction on small real video files written with PyAV (H.264/AAC and friends).

Every encoder here is RANDOMLY INITIALISED (the shipped ``avmaster-tiny`` CLIP config and
VGGish with random weights): nothing is downloaded, and the features are meaningless except as
arrays whose shapes, padding, determinism and bookkeeping the tests check.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
import torch
from helpers import child_env
from media import CASES, FAILED, GOOD, SECONDS, make_media, write_annotations

from avmaster.data.store import TextFeatures, VideoFeatures, atomic_h5, write_video_features
from avmaster.extract import ExtractConfig, FeatureExtractor, UndecodableVideoError, feature_paths
from avmaster.extract.audio import log_mel_examples
from avmaster.extract.config import clip_slug
from avmaster.extract.decode import decode_video
from avmaster.extract.decoded import DecodeSpec
from avmaster.extract.encoders import (
    ClapEncoder,
    ResNetEncoder,
    VGGishEncoder,
    VGGishPCA,
    WeightsUnavailableError,
    build_clip,
)
from avmaster.extract.listing import find_videos
from avmaster.extract.parts import VIDEO_PART, list_parts, video_parts_dir
from avmaster.extract.runner import main
from avmaster.extract.synth_media import (
    X264_DEFAULTS,
    ClipSpec,
    second_colour,
    synthetic_clip,
    synthetic_clips,
    write_video,
)
from avmaster.extract.text import collect_texts
from avmaster.probe import BLANK_ATTR, SILENCE_ATTR, empty_vector

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "avmaster-tiny", "--random-init", "--seconds", str(SECONDS),
        "--no-progress", "--part-videos", "4"]
MISSING = "ghost"
ATOL = 1e-3


def tiny_config(out: Path, **kw: object) -> ExtractConfig:
    return ExtractConfig(out=out, model="avmaster-tiny", random_init=True, seconds=SECONDS,
                         progress=False, workers=0, **kw)  # type: ignore[arg-type]


def read_all(path: Path) -> dict[str, np.ndarray]:
    store = VideoFeatures(path)
    return {v: store.raw(v) for v in sorted(store.ids)}


def assert_same_features(a: Path, b: Path) -> None:
    fa, fb = read_all(a), read_all(b)
    assert sorted(fa) == sorted(fb)
    for vid in fa:
        np.testing.assert_allclose(fa[vid].astype(np.float32), fb[vid].astype(np.float32),
                                   atol=ATOL, rtol=ATOL, err_msg=vid)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_media(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def annotations(media: dict[str, Path]) -> list[Path]:
    folder = media["plain"].parent.parent / "ann"
    folder.mkdir(exist_ok=True)
    return write_annotations(folder, sorted(media), MISSING)


@pytest.fixture(scope="module")
def single_run(media: dict[str, Path], annotations: list[Path],
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One unsharded run over everything: the reference the other runs are compared with."""
    out = tmp_path_factory.mktemp("single")
    argv = ["--videos", str(media["plain"].parent), "--annotations", *map(str, annotations),
            "--out", str(out), "--workers", "2", *TINY]
    assert main(argv) == 0
    return out


def paths_of(out: Path) -> object:
    return feature_paths(tiny_config(out))


# ----------------------------------------------------------------------------- media + decode


def test_write_video_roundtrip(tmp_path: Path) -> None:
    frames = np.zeros((14, 47, 63, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(14)[:, None, None] * 15
    audio = np.zeros((44100, 2), np.float32)
    path = write_video(tmp_path / "odd.mp4", frames, 7, audio, 44100)
    with av.open(str(path)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (63, 47)
        assert c.streams.audio[0].rate == 44100 and c.streams.audio[0].channels == 2
        assert sum(1 for _ in c.decode(video=0)) == 14


@pytest.mark.parametrize("vid", sorted(CASES))
def test_decode_every_case(media: dict[str, Path], vid: str) -> None:
    case = CASES[vid]
    d = decode_video(media[vid], DecodeSpec(image_size=(32, 32), seconds=SECONDS), vid)
    assert {p.kind for p in d.problems} == case.kinds, [p.detail for p in d.problems]
    assert d.failed == case.failed
    if case.failed:
        assert d.frames is None
        return
    n = min(case.real_seconds, SECONDS)
    assert d.n_seconds == n
    assert tuple(d.frames.shape) == (n, 32, 32, 3) and d.frames.dtype == torch.uint8
    assert tuple(d.log_mel.shape) == (n, 96, 64)
    for k in range(n):  # the background colour of second k (a corner pixel, lossy codec)
        corner = d.frames[k, 0, 0].numpy().astype(int)
        assert np.abs(corner - np.array(second_colour(k))).max() < 24, (vid, k)


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_metadata_that_is_not_utf8_decodes(tmp_path: Path, suffix: str) -> None:
    """A container title in another encoding (Latin-1 here) is no reason to drop a video."""
    placeholder, latin1 = b"TITLE_PLACEHOLDER", "Opéra à Genève 1!".encode("latin-1")
    assert len(latin1) == len(placeholder)
    with pytest.raises(UnicodeDecodeError):
        latin1.decode("utf-8")
    frames = np.zeros((2 * 10, 32, 32, 3), np.uint8)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)
    good = write_video(tmp_path / f"good{suffix}", frames, 10, tone, 16000,
                       metadata={"title": placeholder.decode()})
    data = good.read_bytes()
    assert data.count(placeholder) == 1
    bad = tmp_path / f"latin1{suffix}"
    bad.write_bytes(data.replace(placeholder, latin1))
    d = decode_video(bad, DecodeSpec(image_size=(32, 32), seconds=2))
    assert [p.detail for p in d.problems] == [] and d.n_seconds == 2


def test_frame_at_middle_of_each_second(tmp_path: Path) -> None:
    fps = 10
    frames = np.zeros((4 * fps, 32, 32, 3), np.uint8)
    frames[:] = (np.arange(4 * fps) * 6)[:, None, None, None]  # grey level encodes the index
    path = write_video(tmp_path / "idx.mp4", frames, fps, None)
    for position, offset in ((0.5, fps // 2), (0.0, 0)):
        spec = DecodeSpec(image_size=(32, 32), seconds=4, frame_position=position,
                          audio=False)
        d = decode_video(path, spec)
        index = np.round(d.frames.float().mean(dim=(1, 2, 3)).numpy() / 6).astype(int)
        assert list(index) == [k * fps + offset for k in range(4)]


def test_audio_is_16k_mono_per_second(media: dict[str, Path]) -> None:
    """Each second's example holds that second's tone, whatever the rate and channels."""
    spec = DecodeSpec(image_size=(32, 32), seconds=SECONDS, visual=False)
    tones = []
    for vid in ("plain", "stereo44k", "stereo48k"):
        mel = decode_video(media[vid], spec, vid).log_mel.numpy()
        tones.append(mel.mean(axis=1).argmax(axis=1))  # loudest mel band per second
    assert all((t == tones[0]).all() for t in tones)
    assert len(set(tones[0][:4])) == 4  # four different tones
    silence = decode_video(media["noaudio"], spec, "noaudio").log_mel.numpy()
    np.testing.assert_allclose(silence, log_mel_examples(np.zeros(1), SECONDS))


def test_log_mel_matches_vggish_reference() -> None:
    """Second k's example = VGGish's reference code run on second k alone (MUSIC-AVQA)."""
    from torchvggish import vggish_input

    wave = np.random.default_rng(0).standard_normal(3 * 16000) * 0.1
    ref = np.concatenate([vggish_input.waveform_to_examples(
        wave[k * 16000 : (k + 1) * 16000], 16000, return_tensor=False) for k in range(3)])
    np.testing.assert_allclose(log_mel_examples(wave, 3), ref, atol=1e-5)


# ----------------------------------------------------------------------------- encoders


def test_feature_extractor_api(media: dict[str, Path], tmp_path: Path) -> None:
    ex = FeatureExtractor(tiny_config(tmp_path))
    assert FeatureExtractor(tiny_config(tmp_path), text_batch_size=3).config.text_batch_size == 3
    visual, audio, problems = ex.encode_video_file(media["short"])
    assert visual.shape == (SECONDS, 64) and audio.shape == (SECONDS, 128)
    assert visual.dtype == np.float32 and [p.kind for p in problems] == ["short_video"]
    np.testing.assert_array_equal(visual[2], visual[4])  # last real second repeated
    np.testing.assert_array_equal(audio[2], audio[3])
    assert not np.allclose(visual[0], visual[1])
    with pytest.raises(UndecodableVideoError, match="empty_file"):
        ex.encode_video_file(media["zero"])
    calls: list[int] = []
    original = ex.clip.encode_texts
    ex.clip.encode_texts = lambda texts, bs: calls.append(len(texts)) or original(texts, bs)
    sentence, tokens = ex.encode_texts(["a cat", "a dog", "a cat"])
    assert calls == [2] and sentence.shape == (3, 64)
    np.testing.assert_array_equal(sentence[0], sentence[2])
    ids = ex.clip.tokenizer(["a cat"])[0]
    assert tokens[0].shape == (int(ids.argmax()) + 1, 64)  # SOT, a, cat, EOT
    with torch.inference_mode():
        ref = ex.clip.model.encode_text(ex.clip.tokenizer(["a cat", "a dog"]))
    np.testing.assert_allclose(sentence[:2], ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(tokens[0][-1], sentence[0], atol=1e-5)  # EOT state = sentence


def test_patch_tokens_and_keep_all(media: dict[str, Path], tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, patch_tokens=True, keep_all_seconds=True)
    ex = FeatureExtractor(cfg)
    decoded = decode_video(media["long"], ex.decode_spec, "long")
    r = ex.encode_decoded([decoded])[0]
    assert r.visual.shape == (8, 64)  # every whole second kept
    assert r.patch.shape == (8, (64 // 16) ** 2 * 64)  # 4x4 patches x 64, flattened


def test_patch_token_file(media: dict[str, Path], tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for vid in ("plain", "short"):
        (videos / media[vid].name).symlink_to(media[vid])
    out = tmp_path / "out"
    assert main(["--videos", str(videos), "--out", str(out), "--workers", "0", "--patch-tokens",
                 *TINY]) == 0
    paths = paths_of(out)
    patch = VideoFeatures(paths.patch, seconds=SECONDS)
    dim, per_frame = patch.attrs["token_dim"], patch.attrs["tokens_per_frame"]
    assert (dim, per_frame) == (64, 16)
    tokens = patch["short"].reshape(SECONDS, per_frame, dim)
    np.testing.assert_array_equal(tokens[2], tokens[4])  # padded like the other files


def test_resnet18_visual_file(media: dict[str, Path], tmp_path: Path) -> None:
    """Table XI's ResNet-18: 512-d avgpool features of 224 px frames, one per second, in
    visual_resnet18_<tag>.h5 with the encoder and weights recorded; the text stays CLIP's."""
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / media["short"].name).symlink_to(media["short"])
    out = tmp_path / "out"
    assert main(["--videos", str(videos), "--out", str(out), "--workers", "0",
                 "--visual-encoder", "resnet18", *TINY]) == 0
    paths = feature_paths(tiny_config(out, visual_encoder="resnet18"))
    assert paths.visual.name == "visual_resnet18_random.h5"
    visual = VideoFeatures(paths.visual, seconds=SECONDS)
    assert visual.attrs["encoder"] == "resnet18" and visual.attrs["pretrained"] == "random"
    assert visual.dim == 512 and visual["short"].shape == (SECONDS, 512)
    settings = json.loads(visual.attrs["settings"])
    assert settings["image_size"] == 224 and settings["output"] == "avgpool"
    np.testing.assert_array_equal(visual["short"][2], visual["short"][4])  # padded
    ex = FeatureExtractor(tiny_config(tmp_path, visual_encoder="resnet18"))
    assert ex.decode_spec.image_size == (224, 224)
    frames = decode_video(media["short"], ex.decode_spec, "short").frames
    with torch.inference_mode():  # torchvision's network up to the average pool
        net = ex.visual.model
        x = (frames.permute(0, 3, 1, 2).float() - ex.visual._mean) / ex.visual._std
        ref = torch.flatten(net.avgpool(net.layer4(net.layer3(net.layer2(net.layer1(
            net.maxpool(net.relu(net.bn1(net.conv1(x))))))))), 1)
    np.testing.assert_allclose(visual["short"].astype(np.float32)[:3], ref.numpy(),
                               atol=2e-2, rtol=1e-2)  # stored as float16
    with pytest.raises(ValueError, match="patch_tokens needs visual_encoder clip"):
        tiny_config(tmp_path, visual_encoder="resnet18", patch_tokens=True)


def test_a_resnet18_clap_checkpoint_extracts_new_videos_the_same_way() -> None:
    from avmaster.extract.config import audio_settings, text_settings, visual_settings
    from avmaster.inference import extract_config_for

    cfg = ExtractConfig(model="ViT-L-14", visual_encoder="resnet18", audio_encoder="clap",
                        frame_position=0.5)
    settings = {"visual": visual_settings(cfg), "audio": audio_settings(cfg),
                "text": text_settings(cfg), "seconds": 60}
    again = extract_config_for(settings)
    assert (again.visual_encoder, again.model, again.pretrained) == ("resnet18", "ViT-L-14",
                                                                     "openai")
    assert visual_settings(again) == settings["visual"]
    assert (again.audio_encoder, again.clap_model) == ("clap", "laion/clap-htsat-unfused")
    assert audio_settings(again) == settings["audio"]


def test_clap_audio_file(media: dict[str, Path], tmp_path: Path) -> None:
    """Table XI's CLAP: one embedding per second of 48 kHz audio in audio_clap_<model>.h5, the
    encoder recorded; the same weights load from a local folder (offline)."""
    pytest.importorskip("transformers")
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / media["short"].name).symlink_to(media["short"])
    out = tmp_path / "out"
    assert main(["--videos", str(videos), "--out", str(out), "--workers", "0",
                 "--audio-encoder", "clap", "--clap-model", "avmaster-tiny", *TINY]) == 0
    paths = feature_paths(tiny_config(out, audio_encoder="clap", clap_model="avmaster-tiny"))
    assert paths.audio.name == "audio_clap_random.h5" and paths.visual.exists()
    audio = VideoFeatures(paths.audio, seconds=SECONDS)
    assert audio.attrs["encoder"] == "clap" and audio.attrs["pretrained"] == "random"
    assert json.loads(audio.attrs["settings"])["sample_rate"] == 48_000
    short = audio["short"].astype(np.float32)
    assert short.shape == (SECONDS, 32) and not np.allclose(short[0], short[1])
    np.testing.assert_array_equal(short[2], short[4])  # 3 real seconds, the last repeated

    ex = FeatureExtractor(tiny_config(tmp_path, audio_encoder="clap", clap_model="avmaster-tiny"))
    decoded = decode_video(media["short"], ex.decode_spec, "short")
    assert decoded.wave.shape == (3, 48_000) and decoded.log_mel is None
    folder = tmp_path / "clap-local"
    ex.audio.model.save_pretrained(folder)
    ex.audio.features.save_pretrained(folder)
    local = ClapEncoder(str(folder))
    assert local.pretrained == "clap-local"
    torch.testing.assert_close(local.encode(decoded.wave), ex.audio.encode(decoded.wave))
    np.testing.assert_allclose(short[:3], local.encode(decoded.wave).numpy(), atol=2e-3,
                               rtol=1e-2)  # stored as float16
    with pytest.raises(WeightsUnavailableError, match="--clap-model DIR"):
        ClapEncoder(str(tmp_path / "no-such-folder"))


def test_resnet18_weights_from_a_local_file(tmp_path: Path, monkeypatch) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(1)
    net = resnet18(weights=None).eval()
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    enc = ResNetEncoder(weights_file=str(tmp_path / "resnet18.pth"))
    assert enc.pretrained == "imagenet1k-v1"
    torch.testing.assert_close(enc.model.layer4[1].conv2.weight, net.layer4[1].conv2.weight)

    def offline(*_: object, **__: object) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr("torch.hub.load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError, match="--resnet-weights FILE"):
        ResNetEncoder()


def test_gpu_decoding_falls_back_to_software(media: dict[str, Path]) -> None:
    spec = DecodeSpec(image_size=(32, 32), seconds=SECONDS)
    soft = decode_video(media["plain"], spec)
    hard = decode_video(media["plain"], DecodeSpec(image_size=(32, 32), seconds=SECONDS,
                                                   hwaccel="cuda"))
    assert not hard.problems
    torch.testing.assert_close(hard.frames, soft.frames)  # H.264 decoding is exact anywhere


def test_gop_skip_keeps_the_same_frames(tmp_path: Path) -> None:
    """Skipping each group of pictures' tail changes nothing but the work done."""
    spec = ClipSpec(seconds=8, fps=25, width=64, height=48, audio=False, texture=0.3)
    path = synthetic_clip(tmp_path / "gop.mp4", spec, options={"g": "25", "bf": "2"})
    for position in (0.0, 0.5):
        kw = {"image_size": (32, 32), "seconds": 8, "frame_position": position, "audio": False}
        full = decode_video(path, DecodeSpec(**kw, gop_skip=False))
        fast = decode_video(path, DecodeSpec(**kw))
        assert fast.info["packets_skipped"] > 0 and fast.info["gop_skip_misses"] == 0
        torch.testing.assert_close(fast.frames, full.frames)


def test_weights_errors_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="--random-init"):
        build_clip("avmaster-tiny", "openai")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        build_clip("no-such-model", "openai")

    def offline(*_: object, **__: object) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr("open_clip.create_model", offline)
    with pytest.raises(WeightsUnavailableError, match="--clip-weights FILE"):
        build_clip("ViT-B-32", "openai")
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        build_clip("ViT-B-32", "openai", weights_file="/nonexistent/clip.bin")
    monkeypatch.setattr("torch.hub.load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError, match="--vggish-weights FILE"):
        VGGishEncoder()


def test_vggish_postprocess_modes() -> None:
    x = torch.tensor([[0.0, 1.0, 3.0, -5.0]])
    whiten = VGGishPCA(torch.eye(4), torch.zeros(4), quantize=False)
    quant = VGGishPCA(torch.eye(4), torch.zeros(4), quantize=True)
    torch.testing.assert_close(whiten(x), x)
    torch.testing.assert_close(quant(x), torch.tensor([[128.0, 191.0, 255.0, 0.0]]))


def test_feature_paths() -> None:
    assert clip_slug("ViT-L-14-336", "openai") == "vit-l-14-336_openai"
    p = feature_paths(ExtractConfig(out=Path("f")))
    assert p.visual == Path("f/visual_vit-l-14-336_openai.h5")
    assert p.text == Path("f/text_vit-l-14-336_openai.h5")
    assert p.audio == Path("f/audio_vggish.h5")
    tiny = feature_paths(ExtractConfig(out=Path("f"), model="avmaster-tiny", random_init=True,
                                       vggish_postprocess="pca"))
    assert tiny.visual.name == "visual_avmaster-tiny_random.h5"
    assert tiny.audio.name == "audio_vggish-pca_random.h5"


# ----------------------------------------------------------------------------- full runs


def test_run_outputs(single_run: Path, media: dict[str, Path], annotations: list[Path]) -> None:
    p = paths_of(single_run)
    visual, audio = VideoFeatures(p.visual), VideoFeatures(p.audio)
    assert sorted(visual.ids) == GOOD == sorted(audio.ids)
    assert visual.attrs["pretrained"] == "random" and audio.attrs["pretrained"] == "random"
    assert visual.attrs["seconds"] == SECONDS and visual.dim == 64 and audio.dim == 128
    for vid in GOOD:
        v, a = visual[vid], audio[vid]
        assert v.shape == (SECONDS, 64) and a.shape == (SECONDS, 128)
        real = min(CASES[vid].real_seconds, SECONDS)
        for k in range(real, SECONDS):  # padded by repeating the last real second
            np.testing.assert_array_equal(v[k], v[real - 1])
            np.testing.assert_array_equal(a[k], a[real - 1])
    # the same per-second content decoded from different containers/rates looks alike
    np.testing.assert_allclose(visual["plain"], visual["stereo48k"], atol=0.1)

    report = [json.loads(line) for line in p.report.read_text().splitlines()]
    by_video: dict[str, set[str]] = {}
    for r in report:
        by_video.setdefault(r["video_id"], set()).add(r["kind"])
        assert set(r) == {"video_id", "file", "kind", "detail", "failed"}
    for vid, case in CASES.items():
        assert by_video.get(vid, set()) == case.kinds, vid
    assert by_video[MISSING] == {"missing_file"}
    assert {r["video_id"] for r in report if r["failed"]} == {*FAILED, MISSING}

    summary = json.loads(p.summary.read_text())
    assert summary["videos"] == {"listed": len(CASES), "with_features": len(GOOD),
                                 "failed": len(FAILED), "missing_file": 1}
    kinds: dict[str, int] = {}
    for r in report:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    assert summary["problems_by_kind"] == dict(sorted(kinds.items()))

    texts = collect_texts(annotations).texts
    store = TextFeatures(p.text)
    assert len(store) == len(texts) == len(set(texts))  # each distinct text once
    assert "How many violin are in the entire video" in texts and "a car" in texts
    ex = FeatureExtractor(tiny_config(single_run))
    sentence, tokens = ex.encode_texts(list(texts))
    for i, t in enumerate(texts):
        f = store[t]
        assert f.tokens.shape == tokens[i].shape  # true length, up to EOT inclusive
        np.testing.assert_allclose(f.sentence, sentence[i], atol=ATOL, rtol=ATOL)


def test_empty_second_vectors_recorded(single_run: Path, tmp_path: Path) -> None:
    """The audio file records the encoder's silence vector, the visual its black-frame vector:
    the rows a video without sound / a black video gets, up to float16 rounding."""
    p = paths_of(single_run)
    audio, visual = VideoFeatures(p.audio), VideoFeatures(p.visual)
    silence, blank = audio.attrs["silence"], visual.attrs["blank"]
    assert silence.shape == (128,) and blank.shape == (64,)
    # equal up to float16 rounding: the batch it is encoded in may change the last bit
    np.testing.assert_allclose(audio["noaudio"], np.broadcast_to(silence, (SECONDS, 128)),
                               rtol=2e-3, atol=1e-3)
    assert not np.allclose(audio["plain"][0], silence)
    black = write_video(tmp_path / "black.mp4", np.zeros((SECONDS * 4, 32, 32, 3), np.uint8), 4)
    rows, _, _ = FeatureExtractor(tiny_config(tmp_path)).encode_video_file(black)
    np.testing.assert_allclose(rows, np.broadcast_to(blank, rows.shape), atol=0.02)
    assert not np.allclose(visual["plain"][0], blank, atol=0.02)
    # what the probe silences and blanks with
    vec, source = empty_vector(audio, SILENCE_ATTR)
    assert source.endswith(":silence") and np.array_equal(vec, silence)
    vec, source = empty_vector(visual, BLANK_ATTR)
    assert source.endswith(":blank") and np.array_equal(vec, blank)


def test_rerun_skips_done(single_run: Path, media: dict[str, Path], annotations: list[Path],
                          capsys: pytest.CaptureFixture[str]) -> None:
    p = paths_of(single_run)
    before = {f: f.stat().st_mtime_ns for f in (p.visual, p.audio, p.text)}
    argv = ["--videos", str(media["plain"].parent), "--annotations", *map(str, annotations),
            "--out", str(single_run), *TINY]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["run"]["videos_processed"] == 0 and summary["run"]["texts_encoded"] == 0
    assert summary["run"]["videos_skipped_done"] == len(CASES)
    assert {f: f.stat().st_mtime_ns for f in before} == before


def test_shards_then_merge_equal_single_run(single_run: Path, media: dict[str, Path],
                                            annotations: list[Path], tmp_path: Path) -> None:
    base = ["--videos", str(media["plain"].parent), "--annotations", *map(str, annotations),
            "--out", str(tmp_path), "--workers", "0", *TINY]
    assert main([*base, "--shard", "0/2", "--no-merge"]) == 0
    p = paths_of(tmp_path)
    assert not p.visual.exists()  # a shard alone writes parts only
    assert main([*base, "--shard", "1/2", "--no-merge"]) == 0
    assert main(["--out", str(tmp_path), "--merge", *TINY]) == 0
    ref = paths_of(single_run)
    assert_same_features(p.visual, ref.visual)
    assert_same_features(p.audio, ref.audio)
    for path, ref_path, attr in ((p.audio, ref.audio, "silence"), (p.visual, ref.visual, "blank")):
        np.testing.assert_array_equal(VideoFeatures(path).attrs[attr],
                                      VideoFeatures(ref_path).attrs[attr])
    assert p.report.read_text() == ref.report.read_text()
    a, b = TextFeatures(p.text, preload=True), TextFeatures(ref.text, preload=True)
    assert len(a) == len(b)
    for t in collect_texts(annotations).texts:
        np.testing.assert_allclose(a[t].tokens, b[t].tokens, atol=ATOL, rtol=ATOL)


def test_resume_after_partial_run_and_new_videos(single_run: Path, media: dict[str, Path],
                                                 tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for vid in GOOD[:4]:
        (videos / media[vid].name).symlink_to(media[vid])
    argv = ["--videos", str(videos), "--out", str(tmp_path / "out"), "--workers", "0", *TINY]
    assert main(argv) == 0
    for vid in GOOD[4:]:  # more videos arrive: only they are extracted, then merged in
        (videos / media[vid].name).symlink_to(media[vid])
    assert main([*argv, "--clean-parts"]) == 0
    p = paths_of(tmp_path / "out")
    assert not list_parts(video_parts_dir(tiny_config(tmp_path / "out")), VIDEO_PART)
    ref = read_all(paths_of(single_run).visual)
    got = read_all(p.visual)
    assert sorted(got) == GOOD
    for vid in GOOD:
        np.testing.assert_allclose(got[vid].astype(float), ref[vid].astype(float), atol=ATOL)


def test_listing_and_duplicates(media: dict[str, Path], tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    (videos / "plain.mp4").symlink_to(media["plain"])
    (videos / "sub" / "plain.MKV").symlink_to(media["long"])  # same id, other file
    (videos / ".hidden.mp4").symlink_to(media["plain"])
    (videos / "notes.txt").write_text("not a video")
    found = find_videos(videos, ("mp4", "mkv"))
    assert found.files == {"plain": videos / "plain.mp4"}
    assert [(p.video_id, p.kind) for p in found.problems] == [("plain", "duplicate_id")]
    out = tmp_path / "out"
    argv = ["--videos", str(videos), "--out", str(out), "--workers", "0", *TINY]
    assert main(argv) == 0
    (videos / "short.mp4").symlink_to(media["short"])
    assert main(argv) == 0  # merges again: the listing problem is reported once
    kinds = [json.loads(line)["kind"] for line in paths_of(out).report.read_text().splitlines()]
    assert sorted(kinds) == ["duplicate_id", "short_video"]


def test_other_settings_refused(single_run: Path, media: dict[str, Path],
                                capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--videos", str(media["plain"].parent), "--out", str(single_run), *TINY,
            "--frame-position", "0.5"]
    assert main(argv) == 2
    assert "other settings" in capsys.readouterr().err


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    def rows():
        yield "a", np.zeros((2, 3))
        raise KeyboardInterrupt  # killed mid-write

    target = tmp_path / "visual.h5"
    with pytest.raises(KeyboardInterrupt):
        write_video_features(target, rows(), modality="visual", encoder="x")
    assert list(tmp_path.iterdir()) == []
    with atomic_h5(tmp_path / "part.h5") as f:  # a reader never sees a half-written part
        f.create_dataset("x", data=[1])
        assert not (tmp_path / "part.h5").exists()
    assert (tmp_path / "part.h5").exists()


@pytest.mark.slow
def test_kill_9_mid_run_then_resume(single_run: Path, media: dict[str, Path],
                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "avmaster.extract.runner", "--videos",
            str(media["plain"].parent), "--out", str(out), "--workers", "0", *TINY,
            "--part-videos", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = video_parts_dir(tiny_config(out))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list_parts(parts, VIDEO_PART)) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list_parts(parts, VIDEO_PART))
    assert done_before >= 1
    for part in list_parts(parts, VIDEO_PART):  # every part that exists is complete
        with h5py.File(part, "r") as f:
            assert len(f["ids"]) + len(f["failed"]) == 1
    p = paths_of(out)
    for final in (p.visual, p.audio):
        if final.exists():  # killed after the merge began: the file is whole or absent
            VideoFeatures(final)
    assert main([*argv[3:]]) == 0
    assert_same_features(p.visual, paths_of(single_run).visual)
    assert_same_features(p.audio, paths_of(single_run).audio)


def test_synthetic_clip_spec(tmp_path: Path) -> None:
    path = synthetic_clip(tmp_path / "c.webm", ClipSpec(seconds=2), fps=5)
    with av.open(str(path)) as c:
        assert c.streams.video[0].average_rate == 5


def test_synthetic_clips_in_parallel_match_one_by_one(tmp_path: Path) -> None:
    specs = [ClipSpec(seconds=1, fps=4, width=32, height=24, seed=i) for i in range(3)]
    files = {}
    for workers in (1, 2):
        folder = tmp_path / str(workers)
        folder.mkdir()
        jobs = [(folder / f"c{i}.mp4", spec) for i, spec in enumerate(specs)]
        assert synthetic_clips(jobs, X264_DEFAULTS, workers) == [path for path, _ in jobs]
        assert sorted(p.name for p in folder.iterdir()) == ["c0.mp4", "c1.mp4", "c2.mp4"]
        files[workers] = [path.read_bytes() for path, _ in jobs]
    assert files[1] == files[2]
    assert len(set(files[1])) == 3  # each clip its own seed


def test_remerge_counts_and_strict_exit_status(single_run: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "copy"
    shutil.copytree(single_run, out)
    first = json.loads(paths_of(single_run).summary.read_text())["videos"]
    first["listed"] = None  # --merge alone lists no folder
    for _ in range(2):  # a re-merge of the same data counts the same failures
        assert main(["--out", str(out), "--merge", *TINY]) == 0
        assert json.loads(capsys.readouterr().out)["videos"] == first
    assert main(["--out", str(out), "--merge", "--strict", *TINY]) == 3
    err = capsys.readouterr().err
    assert f"{len(FAILED) + 1} videos have no features" in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's MALLOC_PERTURB_")
def test_extraction_reads_no_uninitialised_memory(media, tmp_path):
    """Decoding, resampling and both encoders give bit-identical features in processes whose
    fresh memory holds different bytes (glibc's ``MALLOC_PERTURB_``): extracting twice gives the
    same files' arrays."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("plain", "fps7_odd", "stereo44k"):
        shutil.copy(media[name], videos / media[name].name)
    outs = []
    for perturb in ("165", "77"):
        out = tmp_path / f"out{perturb}"
        subprocess.run([sys.executable, "-m", "avmaster.cli", "extract", "--videos", str(videos),
                        "--out", str(out), *TINY], check=True, capture_output=True,
                       env=child_env(MALLOC_PERTURB_=perturb))
        outs.append(feature_paths(tiny_config(out)))
    for modality in ("visual", "audio"):
        first, second = (read_all(getattr(paths, modality)) for paths in outs)
        assert sorted(first) == sorted(second) and len(first) == 3, modality
        for vid, arr in first.items():
            assert np.array_equal(arr, second[vid]), (modality, vid)
