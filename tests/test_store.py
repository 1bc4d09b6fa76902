import multiprocessing as mp

import h5py
import numpy as np
import pytest

from avmaster.data.store import (
    SCHEMA_VERSION,
    FeatureStoreError,
    MissingFeaturesError,
    TextFeatures,
    VideoFeatures,
    atomic_h5,
    pad_or_trim,
    write_text_features,
    write_video_features,
)


def test_pad_repeats_last_second_and_trim_keeps_first():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    padded = pad_or_trim(x, 6)
    assert padded.shape == (6, 3)
    np.testing.assert_array_equal(padded[:4], x)
    np.testing.assert_array_equal(padded[4], x[3])
    np.testing.assert_array_equal(padded[5], x[3])
    np.testing.assert_array_equal(pad_or_trim(x, 2), x[:2])
    with pytest.raises(FeatureStoreError, match="0 stored seconds"):
        pad_or_trim(x[:0], 3)


def test_video_roundtrip_attrs_and_names(tmp_path):
    feats = {"00000001": np.ones((5, 4)), "a/b": np.zeros((3, 4)), "x_flip": np.ones((7, 4))}
    path = tmp_path / "v.h5"
    assert write_video_features(path, feats, modality="visual", encoder="ViT-L-14-336",
                                pretrained="openai", seconds=5) == 3
    store = VideoFeatures(path, seconds=5)
    assert store.ids == frozenset(feats) and store.dim == 4
    assert store.attrs["schema_version"] == SCHEMA_VERSION
    assert store.attrs["encoder"] == "ViT-L-14-336" and store.attrs["fps"] == 1.0
    assert store["a/b"].shape == (5, 4) and store["x_flip"].shape == (5, 4)
    assert store["00000001"].dtype == np.float32
    assert VideoFeatures(path).raw("x_flip").shape == (7, 4)
    pre = VideoFeatures(path, seconds=5, preload=True)
    np.testing.assert_array_equal(pre["x_flip"], store["x_flip"])


def test_missing_ids_listed_once(tmp_path):
    path = tmp_path / "v.h5"
    write_video_features(path, {"a": np.ones((2, 2))}, modality="audio", encoder="vggish")
    store = VideoFeatures(path)
    missing = [f"vid{i:03d}" for i in range(20)]
    with pytest.raises(MissingFeaturesError) as e:
        store.check(["a", *missing])
    msg = str(e.value)
    assert "20 video ids have no features" in msg and "vid000" in msg and "(+12 more)" in msg
    assert str(path) in msg and "avmaster extract" in msg


def test_text_roundtrip_ragged(tmp_path):
    texts = ["how many", "is there a voiceover", "where"]
    tokens = [np.full((n, 3), i, dtype=np.float32) for i, n in enumerate((2, 5, 1))]
    sentence = np.arange(9, dtype=np.float32).reshape(3, 3)
    path = tmp_path / "t.h5"
    write_text_features(path, texts, sentence, tokens, encoder="ViT-L-14-336")
    for preload in (False, True):
        store = TextFeatures(path, preload=preload)
        f = store["is there a voiceover"]
        assert f.tokens.shape == (5, 3) and (f.tokens == 1).all()
        np.testing.assert_array_equal(f.sentence, sentence[1])
        assert "where" in store and "nope" not in store
    with pytest.raises(MissingFeaturesError, match="1 texts have no features"):
        store.check(["where", "nope"])


def test_wrong_kind_and_missing_file(tmp_path):
    path = tmp_path / "t.h5"
    write_text_features(path, ["a"], np.ones((1, 2)), [np.ones((1, 2))], encoder="x")
    with pytest.raises(FeatureStoreError, match="not video features"):
        VideoFeatures(path)
    with pytest.raises(FeatureStoreError, match="feature file not found"):
        VideoFeatures(tmp_path / "none.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(FeatureStoreError, match="not a readable HDF5 file"):
        VideoFeatures(tmp_path / "junk.h5")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "v.h5"
    write_video_features(path, {"a": np.ones((2, 2))}, modality="audio", encoder="vggish")
    with pytest.raises(RuntimeError), atomic_h5(path) as f:
        f.create_dataset("half", data=np.ones(3))
        raise RuntimeError("killed")
    assert VideoFeatures(path).ids == {"a"}
    assert [p.name for p in tmp_path.iterdir()] == ["v.h5"]


def _read_in_child(store: VideoFeatures, q) -> None:
    q.put(float(store["a"].sum()))


def test_reader_survives_fork(tmp_path):
    path = tmp_path / "v.h5"
    write_video_features(path, {"a": np.ones((3, 2))}, modality="audio", encoder="vggish")
    store = VideoFeatures(path, seconds=3)
    assert store["a"].sum() == 6  # opens the file in the parent first
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_read_in_child, args=(store, q))
    p.start()
    p.join(30)
    assert q.get(timeout=5) == 6.0
    with h5py.File(path, "r") as f:
        assert f.attrs["kind"] == "video"
