import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import make_features

from avmaster.data.annotations import load_annotations
from avmaster.data.config import DataConfig
from avmaster.data.datamodule import AVQADataModule
from avmaster.data.store import MissingFeaturesError
from avmaster.data.vocab import NO_LABEL
from avmaster.metrics import GroupedAccuracy


def _module(tmp_path, fixtures, **over) -> AVQADataModule:
    files = {"train": "music_avqa_val_sample.json", "val": "music_avqa_val_sample.json",
             "test": "music_avqa_test_sample.json"}
    records = [r for f in sorted(set(files.values()))
               for r in load_annotations(fixtures / f).records]
    first_test = load_annotations(fixtures / files["test"]).records[0].video_id
    lengths = {first_test: 3, records[-1].video_id: 9}
    paths = make_features(tmp_path, records, seconds=6, lengths=lengths)
    cfg = DataConfig(annotations_dir=str(fixtures), train=[files["train"]], val=[files["val"]],
                     test=[files["test"]], answers="music_avqa_answers.json",
                     features_dir=str(tmp_path), visual_features=paths["visual"].name,
                     audio_features=paths["audio"].name, text_features=paths["text"].name,
                     seconds=6, batch_size=8, eval_batch_size=16,
                     **{"num_workers": 0, "pin_memory": False, **over})
    return AVQADataModule(cfg)


@pytest.mark.parametrize("preload", [False, True])
def test_batches_follow_the_contract(tmp_path, fixtures, preload):
    dm = _module(tmp_path, fixtures, preload=preload)
    dm.setup("fit")
    assert dm.dims == {"visual": 16, "audio": 8, "text": 12}
    batch = next(iter(dm.train_dataloader()))
    assert batch["visual"].shape == (8, 6, 16) and batch["audio"].shape == (8, 6, 8)
    assert batch["visual"].dtype == torch.float16  # stored dtype; the model casts on device
    L = batch["question_tokens"].shape[1]
    assert batch["question_mask"].shape == (8, L) and batch["question_mask"].dtype == torch.bool
    assert (batch["question_mask"].sum(1) >= 3).all()
    assert batch["question_tokens"][~batch["question_mask"]].abs().sum() == 0
    assert batch["question"].shape == (8, 12)
    assert batch["label"].dtype == torch.long and (batch["label"] >= 0).all()
    assert batch["group"].max() < 9 and batch["index"].shape == (8,)
    n = sum(b["label"].shape[0] for b in dm.val_dataloader())
    assert n == 108


def test_padding_repeats_last_second(tmp_path, fixtures):
    dm = _module(tmp_path, fixtures)
    dm.setup("test")
    ds = dm.dataset("test")
    vid = ds.records[0].video_id
    raw = ds.visual.raw(vid)
    x = ds.visual[vid]
    assert raw.shape[0] == 3 and x.shape[0] == 6
    np.testing.assert_allclose(x[3:], np.repeat(raw[-1:], 3, 0).astype(np.float32))


def test_missing_videos_fail_before_training(tmp_path, fixtures):
    dm = _module(tmp_path, fixtures)
    extra = json.loads((fixtures / "music_avqa_test_sample.json").read_text())
    extra += [{**extra[0], "video_id": f"gone{i}", "question_id": 10**6 + i} for i in range(12)]
    (tmp_path / "more.json").write_text(json.dumps(extra))
    dm.cfg.test = [str(tmp_path / "more.json")]
    with pytest.raises(MissingFeaturesError) as e:
        dm.setup("test")
    assert "12 video ids have no features" in str(e.value) and "gone0" in str(e.value)


def test_unknown_answers_kept_and_scored_wrong(tmp_path, fixtures, caplog):
    dm = _module(tmp_path, fixtures)
    entries = json.loads((fixtures / "music_avqa_test_sample.json").read_text())
    entries[0]["anser"] = "eleven"
    (tmp_path / "odd.json").write_text(json.dumps(entries))
    dm.cfg.test = [str(tmp_path / "odd.json")]
    dm.setup("test")
    ds = dm.dataset("test")
    assert len(ds) == 108 and ds.labels[0] == NO_LABEL and ds.num_unknown == 1
    assert "1 of 108 answers are outside the answer vocabulary; scored as wrong" in caplog.text
    m = GroupedAccuracy(dm.spec)
    m.update(torch.tensor(ds.labels), torch.tensor(ds.labels), torch.tensor(ds.groups))
    assert m.compute()["avg"] == pytest.approx(100 * 107 / 108)


def test_vocab_from_train_when_no_answer_file(tmp_path, fixtures):
    dm = _module(tmp_path, fixtures)
    dm.cfg.answers = None
    dm.setup("fit")
    assert set(dm.vocab.answers) == {r.answer for r in dm.load_split("train").records}


def test_memory_is_pinned_only_for_a_gpu(tmp_path, fixtures):
    """``data.pin_memory`` applies where batches go to a GPU; on a CPU it would only warn."""
    dm = _module(tmp_path, fixtures, pin_memory=True)
    dm.setup("fit")
    assert dm.train_dataloader().pin_memory == torch.cuda.is_available()  # no trainer
    for device, pinned in (("cpu", False), ("cuda", True)):
        dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        assert dm.train_dataloader().pin_memory is pinned, device
    dm.cfg.pin_memory = False
    assert dm.val_dataloader().pin_memory is False


def test_a_question_with_another_number_of_options_is_named():
    """The decoders score a fixed number of options per split: the odd question is named by file,
    entry and field (it was a ValueError listing the counts only)."""
    from avmaster.data.annotations import AnnotationError
    from avmaster.data.dataset import _option_count
    from avmaster.data.records import QARecord

    def record(i: int, options: int) -> QARecord:
        return QARecord(str(i), "v", "q", "a", "", "Which", "test",
                        options=tuple(f"o{j}" for j in range(options)), answer_index=0,
                        source=("qa.json", i))

    assert _option_count([record(0, 4), record(1, 4)]) == 4
    with pytest.raises(AnnotationError, match=r"qa\.json, entry 2, field 'multi_choice': 3 answer "
                                              r"options where the split's other questions have 4"):
        _option_count([record(0, 4), record(1, 4), record(2, 3)])
