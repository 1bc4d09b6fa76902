import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import make_features

from avmaster.data.annotations import (
    AnnotationError,
    assign_head_tail,
    concat,
    ensure_head_tail,
    load_annotations,
    load_head_tail,
    strip_question,
)
from avmaster.data.dataset import QADataset
from avmaster.data.records import MUSIC_AVQA_TYPES
from avmaster.data.store import TextFeatures, VideoFeatures
from avmaster.data.tables import get_table
from avmaster.data.vocab import NO_LABEL, AnswerVocab

MUSIC_FILES = [
    "music_avqa_test_sample.json",
    "music_avqa_val_sample.json",
    "music_avqa_original_test_quirks.json",
    "music_avqa_v2_balance_test_sample.json",
    "music_avqa_v2_bias_valid_sample.json",
]


@pytest.mark.parametrize("name", MUSIC_FILES)
def test_every_music_fixture_loads(fixtures, name):
    raw = json.loads((fixtures / name).read_text())
    s = load_annotations(fixtures / name, "test")
    assert len(s) == len(raw)  # nothing dropped
    known = {f"{m}/{q}" for m, q, _ in MUSIC_AVQA_TYPES}
    for r, e in zip(s.records, raw, strict=True):
        assert r.type_key in known
        assert "<" not in r.question and not r.question.endswith(("?", "？"))
        assert r.answer == e["anser"]
        assert r.video_id == e["video_id"]


def test_fill_and_strip(fixtures):
    r = load_annotations(fixtures / "music_avqa_test_sample.json").records[0]
    assert r.question == "Is the flute louder than the guzheng"
    assert r.template == "Is the <Object> louder than the <Object>?"
    assert r.extra["templ_values"] == ["flute", "guzheng"]
    assert strip_question("How many sounding erhu in the video？") == (
        "How many sounding erhu in the video")
    assert strip_question("Are there flute and clarinet sound? ") == (
        "Are there flute and clarinet sound")


def test_v2_quirks(fixtures):
    bal = load_annotations(fixtures / "music_avqa_v2_balance_test_sample.json").records
    raw = json.loads((fixtures / "music_avqa_v2_balance_test_sample.json").read_text())
    # list-valued templ_values and missing question ids
    listy = [r for r, e in zip(bal, raw, strict=True) if isinstance(e["templ_values"], list)]
    assert listy and all(r.question == "Is this sound from the instrument in the video"
                         for r in listy)
    assert listy[0].extra["unmatch_audio"] == "00008531"
    no_id = [r for r, e in zip(bal, raw, strict=True) if "question_id" not in e]
    assert no_id and all(r.question_id.startswith("music_avqa_v2_balance_test_sample#")
                         for r in no_id)
    assert len({r.question_id for r in bal}) == len(bal)
    flips = [r for r in bal if r.video_id.endswith("_flip")]
    assert flips and flips[0].question == "Which clarinet makes the sound first"
    # float ids and nulls (bias valid)
    bias = load_annotations(fixtures / "music_avqa_v2_bias_valid_sample.json").records
    assert bias[0].question_id == "35045"
    assert bias[0].extra["person"] is None


def test_duplicates_reported_once_with_ceiling(fixtures, caplog):
    s = load_annotations(fixtures / "music_avqa_original_test_quirks.json")
    assert len(s) == 20
    assert s.duplicates == {"1138": 2, "1219": 2, "1413": 2, "2958": 2, "4452": 2}
    assert sorted(s.conflicting) == ["1138", "1219", "1413", "2958", "4452"]
    # each conflicting pair shares video and question: one entry of each pair is always wrong
    assert s.ceiling == pytest.approx(100 * 15 / 20)
    both = concat([s], "test")
    both.report()
    assert caplog.text.count("occur more than once") == 1
    assert "achievable ceiling 75.00 %" in caplog.text


def test_avqa_answer_text_split(fixtures):
    s = load_annotations(fixtures / "avqa_avqacl_split_test_sample.json")
    assert len(s) == 40
    r = s.records[0]
    assert r.video_id == "A5Qe-YZgRdM_trimmed" and r.qtype == "Which"
    assert r.question == "What sounds in the video" and r.answer == "a car"
    assert r.options is None and r.extra["label"] == "race car"


def test_avqa_multiple_choice(tmp_path):
    entry = {"id": 7, "video_name": "abc.mp4", "video_id": 3, "question_text": "Who plays?",
             "multi_choice": ["a", "b", "c", "d"], "answer": 2, "question_relation": "Both",
             "question_type": "Which"}
    p = tmp_path / "avqa.json"
    p.write_text(json.dumps([entry]))
    r = load_annotations(p).records[0]
    assert r.options == ("a", "b", "c", "d") and r.answer_index == 2 and r.answer == "c"
    assert r.question_id == "7" and r.video_id == "abc"
    p.write_text(json.dumps([{**entry, "answer": 4}]))
    with pytest.raises(AnnotationError, match=r"entry 0, field 'answer'"):
        load_annotations(p)


def test_avqa_options_with_answer_text(tmp_path, caplog):
    """Derived AVQA splits (AVQACL) keep the four options but give the answer as text."""
    base = {"video_name": "v.mp4", "video_id": 1, "question_text": "What plays?",
            "multi_choice": ["a dog", "Car ", "bird", "piano"], "question_relation": "Both",
            "question_type": "Which"}
    entries = [{**base, "id": 1, "answer": "car"}, {**base, "id": 2, "answer": " Bird "},
               {**base, "id": 3, "answer": "cat"}, {**base, "id": 4, "answer": 3},
               {**base, "id": 5, "answer": "0"}]
    p = tmp_path / "avqacl_train.json"
    p.write_text(json.dumps(entries))
    s = load_annotations(p)
    assert [r.answer_index for r in s.records] == [1, 2, None, 3, 0]
    assert s.records[0].answer == "Car" and s.records[2].answer == "cat"
    assert s.unmatched == ["3"]
    s.report()
    assert "1 answers name none of their options (3)" in caplog.text
    # the unmatched answer is left out of the losses and scored wrong: its label is NO_LABEL
    paths = make_features(tmp_path / "features", s.records)
    data = QADataset(s.records, None, VideoFeatures(paths["visual"], 6),
                     VideoFeatures(paths["audio"], 6), TextFeatures(paths["text"]),
                     get_table("avqa"))
    assert data.labels.tolist() == [1, 2, NO_LABEL, 3, 0]


def _bad(tmp_path: Path, fixtures: Path, **change) -> Path:
    entries = json.loads((fixtures / "music_avqa_test_sample.json").read_text())[:5]
    entries[3] = {**entries[3], **change}
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(entries))
    return p


def test_bad_input_names_file_entry_field(tmp_path, fixtures):
    p = _bad(tmp_path, fixtures, templ_values='["flute"]')
    with pytest.raises(AnnotationError) as e:
        load_annotations(p)
    msg = str(e.value)
    assert str(p) in msg and "entry 3" in msg and "field 'templ_values'" in msg
    assert "placeholders" in msg

    p = _bad(tmp_path, fixtures, type='["Audio", "Dancing"]')
    with pytest.raises(AnnotationError, match=r"entry 3, field 'type': unknown question type"):
        load_annotations(p)

    p = _bad(tmp_path, fixtures, type="[Audio")
    with pytest.raises(AnnotationError, match=r"entry 3, field 'type'"):
        load_annotations(p)

    entries = json.loads(p.read_text())
    entries[1]["anser"] = None
    p.write_text(json.dumps(entries))
    with pytest.raises(AnnotationError, match=r"entry 1, field 'anser': is null; every entry"):
        load_annotations(p)
    entries[1]["anser"] = "yes"
    del entries[2]["anser"]
    p.write_text(json.dumps(entries))
    with pytest.raises(AnnotationError, match=r"entry 2, field 'anser'"):
        load_annotations(p)


def test_malformed_json(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('[{"video_id": "1",\n  "question_id": }]')
    with pytest.raises(AnnotationError, match=r"broken.json: malformed JSON at line 2"):
        load_annotations(p)
    with pytest.raises(AnnotationError, match="file not found"):
        load_annotations(tmp_path / "nope.json")
    p.write_text('{"a": 1}')
    with pytest.raises(AnnotationError, match="expected a JSON list"):
        load_annotations(p)


@pytest.mark.parametrize("group", ["template", "type"])
def test_head_tail_rule(fixtures, group):
    records = load_annotations(fixtures / "music_avqa_test_sample.json").records
    marked = assign_head_tail(records, ratio=1.2, group=group)
    keyof = (lambda r: (r.type_key, r.template)) if group == "template" else (lambda r: r.type_key)
    for key in {keyof(r) for r in records}:
        members = [r for r in marked if keyof(r) == key]
        counts = Counter(r.answer for r in members)
        mean = len(members) / len(counts)
        for r in members:
            assert (r.extra["head_tail"] == "head") == (counts[r.answer] > 1.2 * mean)
    # "Is the <Object> louder than the <Object>": yes 7, no 2 (mean 4.5): yes is head
    louder = [r for r in marked if r.template == "Is the <Object> louder than the <Object>?"]
    if group == "template":
        assert {r.answer: r.extra["head_tail"] for r in louder} == {"yes": "head", "no": "tail"}


def test_head_tail_yes_no_types_get_head_questions(fixtures):
    """The released head/tail table has head questions in every type, yes/no types included;
    template groups give them, type groups cannot (two answers: head needs over 60 %)."""
    sample = load_annotations(fixtures / "music_avqa_test_sample.json").records
    louder, longer = (next(r for r in sample if r.template == t) for t in (
        "Is the <Object> louder than the <Object>?",
        "Is the <Object> playing longer than the <Object>?"))
    # each template skewed, the type balanced (as MUSIC-AVQA's yes/no types: about 55/45)
    records = ([replace(louder, answer="yes")] * 7 + [replace(louder, answer="no")] * 3
               + [replace(longer, answer="yes")] * 3 + [replace(longer, answer="no")] * 7)
    by_template = assign_head_tail(records, group="template")
    assert Counter(r.extra["head_tail"] for r in by_template) == {"head": 14, "tail": 6}
    assert {r.extra["head_tail"] for r in assign_head_tail(records, group="type")} == {"tail"}
    with pytest.raises(ValueError, match="head/tail group 'video'"):
        assign_head_tail(records, group="video")


def test_head_tail_files(tmp_path, fixtures):
    entries = json.loads((fixtures / "music_avqa_test_sample.json").read_text())
    (tmp_path / "h.json").write_text(json.dumps(entries[:10]))
    (tmp_path / "t.json").write_text(json.dumps(entries[10:15]))
    s = load_head_tail(tmp_path / "h.json", tmp_path / "t.json")
    assert [r.extra["head_tail"] for r in s.records] == ["head"] * 10 + ["tail"] * 5
    def labels(records):
        return [r.extra["head_tail"] for r in records]

    assert labels(ensure_head_tail(s.records)) == labels(s.records)  # the files' labels kept
    unlabelled = load_annotations(tmp_path / "t.json").records[:1]
    mixed = ensure_head_tail(s.records[:14] + unlabelled)  # one without a label: rule for all
    assert labels(mixed) == labels(assign_head_tail(s.records[:14] + unlabelled))
    assert labels(mixed) != ["head"] * 10 + ["tail"] * 5


def test_vocab_spelling_variants(tmp_path, caplog):
    p = tmp_path / "answers.json"
    p.write_text(json.dumps(["yes ", "no", "Yes", "two", "Two "]))
    vocab = AnswerVocab.from_file(p)
    assert vocab.answers == ["yes", "no", "two"]
    assert vocab.index("YES") == vocab.index("yes") == 0 and vocab.index(" two") == 2
    assert "yes" in vocab and "2 answers are spelling variants" in caplog.text
    with pytest.raises(ValueError, match="more than once"):
        AnswerVocab(["a", "b", "a"])


def test_vocab(fixtures):
    vocab = AnswerVocab.from_file(fixtures / "music_avqa_answers.json")
    assert len(vocab) == 42 and vocab.index("two") == 0 and vocab.index("banana") == NO_LABEL
    records = load_annotations(fixtures / "music_avqa_val_sample.json").records
    built = AnswerVocab.from_records(records)
    top = Counter(r.answer for r in records).most_common(1)[0][0]
    assert built[0] == top and set(built.answers) == {r.answer for r in records}


def test_datamodule_counts_head_tail_in_the_configured_groups(fixtures):
    from avmaster.data.config import DataConfig
    from avmaster.data.datamodule import AVQADataModule

    records = load_annotations(fixtures / "music_avqa_test_sample.json").records
    marks = {g: [r.extra["head_tail"] for r in assign_head_tail(records, group=g)]
             for g in ("template", "type")}
    assert marks["template"] != marks["type"]  # the sample tells the two apart
    for group in ("template", "type"):
        cfg = DataConfig(table="music_avqa_r", annotations_dir=str(fixtures),
                         test=["music_avqa_test_sample.json"], head_tail_group=group)
        loaded = AVQADataModule(cfg).load_split("test").records
        expect = assign_head_tail(records, group=group)
        assert [r.extra["head_tail"] for r in loaded] == [r.extra["head_tail"] for r in expect]
