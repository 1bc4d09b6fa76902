"""``avmaster import-features``: folders of .npy files shaped like each released format ->
the store -> train and evaluate a tiny model on them; validation, refusals, resume."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import TINY

from avmaster.cli import main
from avmaster.data.annotations import load_annotations
from avmaster.data.store import VideoFeatures, write_video_features
from avmaster.extract import importer
from avmaster.extract.synth_media import synthetic_clip

FILES = ["music_avqa_val_sample.json", "music_avqa_test_sample.json"]
T = 8  # released files have 60 rows; fewer keep the test fast (--seconds, data.seconds)
SHORT = 7  # some released videos have T != 60


def video_ids(fixtures: Path) -> list[str]:
    return sorted({r.video_id for f in FILES for r in load_annotations(fixtures / f).records})


def npy_folder(folder: Path, ids: list[str], shape: tuple[int, ...], seed: int = 0,
               odd: dict[int, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """One ``<id>.npy`` per video, float32 ``shape``; ``odd`` gives some videos another shape."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, vid in enumerate(ids):
        arr = rng.standard_normal((odd or {}).get(i, shape)).astype(np.float32)
        np.save(folder / f"{vid}.npy", arr)
        out[vid] = arr
    return out


def run_import(release: str, npy: Path, out: Path, *extra: str) -> int:
    return main(["import-features", "--release", release, "--npy", str(npy), "--out", str(out),
                 "--no-progress", *extra])


def texts(out: Path, fixtures: Path) -> str:
    """Question features from the annotations alone (tiny random CLIP); the file's name."""
    assert main(["extract", "--annotations", *(str(fixtures / f) for f in FILES), "--out",
                 str(out), "--model", "avmaster-tiny", "--random-init", "--no-progress"]) == 0
    return "text_avmaster-tiny_random.h5"


def train_eval(tmp_path: Path, fixtures: Path, features: Path, *overrides: str) -> dict:
    args = [*TINY, "data=music_avqa", f"data.annotations_dir={fixtures}",
            "data.train=[music_avqa_val_sample.json]", "data.val=[music_avqa_val_sample.json]",
            "data.test=[music_avqa_test_sample.json]", f"data.features_dir={features}",
            f"output_dir={tmp_path / 'runs'}", "name=imported", f"data.seconds={T}", *overrides]
    assert main(["train", *args, "trainer.max_epochs=1"]) == 0
    ckpt = tmp_path / "runs" / "imported" / "checkpoints" / "last.ckpt"
    assert main(["eval", *args, f"ckpt={ckpt}"]) == 0
    return json.loads((tmp_path / "runs" / "imported" / "results_music_avqa.json").read_text())


@pytest.mark.slow
def test_resnet18_vggish_import_train_eval(tmp_path, fixtures, capsys, single_thread):
    """Table XI's ResNet-18 + VGGish row from the dataset authors' released files."""
    ids = video_ids(fixtures)
    out = tmp_path / "features"
    # ResNet-18 [T, 512], two videos short, one stored [1, T, 512]; VGGish [T, 128], one
    # stored [T, 1, 128]
    res = npy_folder(tmp_path / "res18", ids, (T, 512), odd={0: (SHORT, 512), 1: (SHORT, 512),
                                                              2: (1, T, 512)})
    vgg = npy_folder(tmp_path / "vggish", ids, (T, 128), seed=1, odd={3: (T, 1, 128)})
    quirks = str(fixtures / "music_avqa_original_test_quirks.json")  # videos not released here
    assert run_import("music_avqa_resnet18", tmp_path / "res18", out, "--seconds", str(T),
                      "--annotations", *(str(fixtures / f) for f in FILES), quirks) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["imported"] == len(ids) and report["squeezed_singleton_axes"] == 1
    assert report["seconds"] == {"expected": T, "other": 2,
                                 "counts": {str(SHORT): 2, str(T): len(ids) - 2}}
    missing = {r.video_id for r in load_annotations(quirks).records} - set(ids)
    assert report["annotations"]["missing"]["count"] == len(missing) > 0
    assert run_import("music_avqa_vggish", tmp_path / "vggish", out) == 0
    assert json.loads(capsys.readouterr().out)["squeezed_singleton_axes"] == 1

    visual = VideoFeatures(out / "visual_resnet18_imagenet1k-v1.h5")
    assert visual.attrs["encoder"] == "resnet18" and visual.attrs["pretrained"] == "imagenet1k-v1"
    assert visual.dim == 512 and visual.attrs["frame_position"] == 0.0
    assert json.loads(visual.attrs["imported_from"])[0]["folder"] == str(tmp_path / "res18")
    assert visual.raw(ids[0]).shape == (SHORT, 512)  # kept as stored; readers pad/trim
    np.testing.assert_allclose(visual.raw(ids[2]), res[ids[2]][0], atol=2e-3, rtol=2e-3)
    audio = VideoFeatures(out / "audio_vggish.h5")
    assert (audio.attrs["encoder"], audio.attrs["postprocess"]) == ("vggish", "none")
    np.testing.assert_allclose(audio.raw(ids[3]), vgg[ids[3]][:, 0], atol=2e-3, rtol=2e-3)
    assert not any((out / ".parts").iterdir())  # the staging parts are gone

    text = texts(out, fixtures)
    result = train_eval(tmp_path, fixtures, out, "ablation=encoder_res18",
                        f"data.text_features={text}")
    assert result["counts"]["avg"] == 108 and 0.0 <= result["accuracy"]["avg"] <= 100.0


@pytest.mark.slow
def test_pstp_clip_b32_class_and_patches(tmp_path, fixtures, capsys, single_thread):
    """PSTP-Net's [T, 50, 512] (class token + 7x7 patches) and TSPM's [1, T, 768] CLIP-L."""
    ids = video_ids(fixtures)
    out = tmp_path / "features"
    arrays = npy_folder(tmp_path / "pstp", ids, (T, 50, 512), odd={0: (1, SHORT, 50, 512)})
    assert run_import("pstp_vit_b32", tmp_path / "pstp", out) == 0
    visual = VideoFeatures(out / "visual_vit-b-32_openai.h5")
    patch = VideoFeatures(out / "patch_vit-b-32_openai.h5")
    assert visual.dim == 512 and patch.attrs["token_dim"] == 512
    np.testing.assert_allclose(visual.raw(ids[1]), arrays[ids[1]][:, 0], atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(patch.raw(ids[1]).reshape(T, 49, 512), arrays[ids[1]][:, 1:],
                               atol=2e-3, rtol=2e-3)
    assert visual.raw(ids[0]).shape == (SHORT, 512)
    clip_l = npy_folder(tmp_path / "clip_l", ids, (1, T, 768), seed=2)
    assert run_import("clip_vit_l14_336", tmp_path / "clip_l", out) == 0
    stored = VideoFeatures(out / "visual_vit-l-14-336_openai.h5")
    assert stored.attrs["encoder"] == "open_clip:ViT-L-14-336" and not stored.attrs["normalized"]
    np.testing.assert_allclose(stored.raw(ids[5]), clip_l[ids[5]][0], atol=2e-3, rtol=2e-3)
    npy_folder(tmp_path / "vggish", ids, (T, 128), seed=1)
    assert run_import("music_avqa_vggish", tmp_path / "vggish", out) == 0
    capsys.readouterr()
    text = texts(out, fixtures)
    result = train_eval(tmp_path, fixtures, out, "ablation=encoder_clip_b",
                        f"data.text_features={text}")
    assert result["counts"]["avg"] == 108


def test_bad_files_named(tmp_path, capsys):
    folder = tmp_path / "vggish"
    npy_folder(folder, ["a", "b"], (60, 128))
    np.save(folder / "b.npy", np.zeros((60, 127), dtype=np.float32))
    assert run_import("music_avqa_vggish", folder, tmp_path / "f") == 2
    err = capsys.readouterr().err
    assert f"{folder / 'b.npy'}: shape [60, 127], want [T, D] with D = 128" in err
    assert len(err.strip().splitlines()) == 1
    np.save(folder / "b.npy", np.zeros((60, 128), dtype=np.int64))
    assert run_import("music_avqa_vggish", folder, tmp_path / "f") == 2
    assert "b.npy: dtype int64, want floating point" in capsys.readouterr().err
    assert run_import("no_such_release", folder, tmp_path / "f") == 2
    assert "known: clip_vit_l14_336" in capsys.readouterr().err
    typo = tmp_path / "typo.yaml"
    typo.write_text("modality: audio\nencoder: vggish\npretrained: x\ndim: 128\nfile: a.h5\n"
                    "source: x\nfps_: 1\n")
    assert run_import(str(typo), folder, tmp_path / "f") == 2
    assert f"{typo}: Key 'fps_' not in 'Release'" in capsys.readouterr().err


def test_one_store_two_sources(tmp_path, capsys):
    """Extracted features of some videos plus imported ones of others, in one file when the
    encoders agree; a one-line refusal when they do not."""
    out = tmp_path / "features"
    rng = np.random.default_rng(0)
    extracted = {"new1": rng.standard_normal((60, 128)).astype(np.float32)}
    write_video_features(out / "audio_vggish.h5", extracted, modality="audio",
                         encoder="torchvggish:vggish", pretrained="audioset", seconds=60,
                         extra_attrs={"postprocess": "none", "settings": "{}"})
    npy_folder(tmp_path / "vggish", ["old1", "old2", "new1"], (60, 128),
               odd={0: (SHORT, 128)})
    assert run_import("music_avqa_vggish", tmp_path / "vggish", out) == 0
    assert json.loads(capsys.readouterr().out)["already_in_store"] == 1
    store = VideoFeatures(out / "audio_vggish.h5")
    assert store.ids == {"new1", "old1", "old2"}
    np.testing.assert_allclose(store.raw("new1"), extracted["new1"], atol=2e-3, rtol=2e-3)
    assert store.raw("old1").shape == (60, 128)  # the file's rows are fitted to its T = 60
    assert store.attrs["settings"] == "{}" and "imported_from" in store.attrs

    other = tmp_path / "other"
    write_video_features(other / "audio_vggish.h5", extracted, modality="audio",
                         encoder="torchvggish:vggish", pretrained="audioset",
                         extra_attrs={"postprocess": "pca"})
    assert run_import("music_avqa_vggish", tmp_path / "vggish", other) == 2
    err = capsys.readouterr().err
    assert "holds features of another encoder than release music_avqa_vggish " \
           "(postprocess: file 'pca', release music_avqa_vggish 'none')" in err
    assert VideoFeatures(other / "audio_vggish.h5").ids == {"new1"}  # untouched


@pytest.mark.slow
def test_extract_adds_to_imported_store(tmp_path, capsys):
    """The other order: imported first, then `avmaster extract` of a new video (random
    VGGish: a release file describing such features stands in for a real one)."""
    release = tmp_path / "random_vggish.yaml"
    release.write_text("modality: audio\nencoder: vggish\npretrained: random\ndim: 128\n"
                       "file: audio_vggish_random.h5\npostprocess: none\nsource: test\n")
    out = tmp_path / "features"
    npy_folder(tmp_path / "npy", ["old1", "old2"], (60, 128))
    assert run_import(str(release), tmp_path / "npy", out) == 0
    videos = tmp_path / "videos"
    videos.mkdir()
    synthetic_clip(videos / "new1.mp4", seconds=3, fps=5, width=32, height=32)
    assert main(["extract", "--videos", str(videos), "--out", str(out), "--model",
                 "avmaster-tiny", "--random-init", "--seconds", "3", "--no-progress",
                 "--workers", "0"]) == 0
    store = VideoFeatures(out / "audio_vggish_random.h5")
    assert store.ids == {"old1", "old2", "new1"} and "imported_from" in store.attrs
    assert store.raw("old1").shape == (3, 128)  # fitted to the extraction's T
    capsys.readouterr()
    release.write_text(release.read_text().replace("postprocess: none", "postprocess: pca"))
    write_video_features(tmp_path / "pca" / "audio_vggish_random.h5", {"x": np.ones((3, 128))},
                         modality="audio", encoder="vggish", pretrained="random",
                         extra_attrs={"postprocess": "pca", "imported_from": "[]"})
    assert main(["extract", "--videos", str(videos), "--out", str(tmp_path / "pca"), "--model",
                 "avmaster-tiny", "--random-init", "--seconds", "3", "--no-progress",
                 "--workers", "0"]) == 2
    assert "another encoder than this extraction (postprocess: file 'pca'" in \
        capsys.readouterr().err


def test_resume_after_kill(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "res18"
    ids = [f"{i:08d}" for i in range(7)]
    npy_folder(folder, ids, (4, 512))
    loaded: list[str] = []
    real_load = np.load

    def dying_load(path, *a, **kw):
        if len(loaded) == 5:
            raise KeyboardInterrupt
        loaded.append(Path(path).stem)
        return real_load(path, *a, **kw)

    monkeypatch.setattr(importer.np, "load", dying_load)
    out = tmp_path / "f"
    assert run_import("music_avqa_resnet18", folder, out, "--part-videos", "2") == 130
    assert not (out / "visual_resnet18_imagenet1k-v1.h5").exists()
    parts = list((out / ".parts").rglob("import-*.h5"))
    with_ids = set()
    for p in parts:
        with h5py.File(p, "r") as f:
            with_ids |= set(f["rows"])
    assert with_ids == set(ids[:5])  # completed videos survive (the last one in `finally`)
    monkeypatch.setattr(importer.np, "load", real_load)
    loaded.clear()
    monkeypatch.setattr(importer.np, "load", lambda p, *a, **kw: (loaded.append(Path(p).stem),
                                                                   real_load(p, *a, **kw))[1])
    capsys.readouterr()
    assert run_import("music_avqa_resnet18", folder, out, "--part-videos", "2") == 0
    assert loaded == ids[5:]  # only what was not saved
    assert VideoFeatures(out / "visual_resnet18_imagenet1k-v1.h5").ids == set(ids)
    assert json.loads(capsys.readouterr().out)["imported"] == 7
