import json
from collections import Counter
from pathlib import Path

import pytest

from avmaster.data.annotations import (
    AnnotationError,
    assign_head_tail,
    ensure_head_tail,
    load_annotations,
    load_head_tail,
    strip_question,
)
from avmaster.data.records import MUSIC_AVQA_TYPES
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


def test_duplicates_reported(fixtures, caplog):
    s = load_annotations(fixtures / "music_avqa_original_test_quirks.json")
    assert len(s) == 20
    assert s.duplicates == {"1138": 2, "1219": 2, "1413": 2, "2958": 2, "4452": 2}
    assert sorted(s.conflicting) == ["1138", "1219", "1413", "2958", "4452"]
    assert "occur more than once" in caplog.text


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


def test_head_tail_rule(fixtures):
    records = load_annotations(fixtures / "music_avqa_test_sample.json").records
    marked = assign_head_tail(records, ratio=1.2)
    for key in {r.type_key for r in records}:
        group = [r for r in marked if r.type_key == key]
        counts = Counter(r.answer for r in group)
        mean = len(group) / len(counts)
        for r in group:
            assert (r.extra["head_tail"] == "head") == (counts[r.answer] > 1.2 * mean)
    yes_no = [r for r in marked if r.type_key == "Audio/Comparative"]
    assert {r.extra["head_tail"] for r in yes_no} <= {"head", "tail"}


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


def test_vocab(fixtures):
    vocab = AnswerVocab.from_file(fixtures / "music_avqa_answers.json")
    assert len(vocab) == 42 and vocab.index("two") == 0 and vocab.index("banana") == NO_LABEL
    records = load_annotations(fixtures / "music_avqa_val_sample.json").records
    built = AnswerVocab.from_records(records)
    top = Counter(r.answer for r in records).most_common(1)[0][0]
    assert built[0] == top and set(built.answers) == {r.answer for r in records}
