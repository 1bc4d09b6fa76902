import json

import pytest

from avmaster.data.annotations import load_annotations
from avmaster.data.tables import get_table
from avmaster.data.vocab import NO_LABEL, AnswerVocab
from avmaster.scoring import AnswerMapper, PredictionError, read_predictions, score


@pytest.fixture
def vocab(fixtures):
    return AnswerVocab.from_file(fixtures / "music_avqa_answers.json")


def test_mapper_free_text(vocab):
    m = AnswerMapper(vocab.answers)
    idx = vocab.index
    assert m("yes") == idx("yes")
    assert m("Yes.") == idx("yes")
    assert m("<answer>acoustic guitar</answer>") == idx("acoustic_guitar")
    assert m("I think the answer is <answer> Two </answer>.") == idx("two")
    assert m("2") == idx("two")
    assert m("There are more than ten instruments") == idx("more than ten")
    assert m("The sound comes from the left.") == idx("left")
    assert m("left or right, hard to say") == NO_LABEL  # two different answers: ambiguous
    assert m("a banana") == NO_LABEL
    assert m("Electric-bass") == idx("electric_bass")


def test_score_jsonl_with_free_text_and_missing(tmp_path, fixtures, vocab):
    s = load_annotations(fixtures / "music_avqa_test_sample.json")
    lines = []
    for i, r in enumerate(s.records):
        if i % 3 == 0:
            continue  # missing: scored wrong
        text = f"<answer>{r.answer.replace('_', ' ')}</answer>" if i % 3 == 1 else "banana"
        lines.append(json.dumps({"question_id": int(r.question_id), "text": text}))
    lines.append(json.dumps({"question_id": 999999999, "answer": "yes"}))
    p = tmp_path / "preds.jsonl"
    p.write_text("\n".join(lines) + "\n")
    preds = read_predictions(p)
    rep = score(preds, s.records, get_table("music_avqa"), vocab)
    n = len(s.records)
    assert rep.counts["avg"] == n
    assert rep.accuracy["avg"] == pytest.approx(100 * sum(1 for i in range(n) if i % 3 == 1) / n)
    assert len(rep.missing) == 36 and len(rep.unmapped) == 36 and rep.extra == 1


def test_score_dict_and_duplicates(tmp_path, fixtures, vocab):
    s = load_annotations(fixtures / "music_avqa_original_test_quirks.json")
    preds = {r.question_id: r.answer for r in s.records}  # last answer wins for duplicates
    p = tmp_path / "p.json"
    p.write_text(json.dumps(preds))
    rep = score(read_predictions(p), s.records, get_table("music_avqa"), vocab)
    # each duplicated id has two conflicting entries: exactly one of the pair is right
    assert rep.counts["avg"] == 20 and rep.accuracy["avg"] == pytest.approx(100 * 15 / 20)


def test_score_multiple_choice(tmp_path):
    entries = [{"id": i, "video_name": f"v{i}.mp4", "video_id": i, "question_text": "What?",
                "multi_choice": ["dog", "cat", "car", "bird"], "answer": i % 4,
                "question_relation": "Both", "question_type": "Which"} for i in range(8)]
    (tmp_path / "a.json").write_text(json.dumps(entries))
    records = load_annotations(tmp_path / "a.json").records
    preds = {"0": 0, "1": "cat", "2": "It is a car.", "3": "1", "4": "nope"}
    rep = score(preds, records, get_table("avqa"), None)
    assert rep.accuracy["which"] == pytest.approx(100 * 3 / 8)


def test_bad_predictions_file(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"question_id": 1, "answer": "yes"}\nnot json\n')
    with pytest.raises(PredictionError, match=r"p.jsonl, line 2: not JSON"):
        read_predictions(p)
    p.write_text('{"question_id": 1}\n{"question_id": 2, "answer": "no"}\n')
    with pytest.raises(PredictionError, match=r"entry 1, question 1: no answer field"):
        read_predictions(p)
