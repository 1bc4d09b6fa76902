import json

import pytest

from avmaster.cli import main
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


def test_mapper_two_answers_and_ranges(vocab):
    m, idx = AnswerMapper(vocab.answers), vocab.index
    assert m("<answer>two</answer> ... <answer>three</answer>") == NO_LABEL
    assert m("<answer>two</answer> so <answer>2</answer>") == idx("two")
    assert m("It is the cello, not the violin") == NO_LABEL
    for text in ("over ten", "ten or more", "There are at least ten.", "10+ instruments",
                 "up to 10"):
        assert m(text) != idx("ten"), text
    assert m("over ten") == NO_LABEL and m("ten or more") == NO_LABEL
    assert m("more than ten") == idx("more than ten") and m("ten") == idx("ten")


def test_score_null_answers(tmp_path, fixtures, vocab):
    s = load_annotations(fixtures / "music_avqa_test_sample.json")
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(json.dumps({"question_id": int(r.question_id),
                                       "answer": None if i < 4 else r.answer})
                           for i, r in enumerate(s.records)))
    rep = score(read_predictions(p), s.records, get_table("music_avqa"), vocab)
    assert len(rep.null) == 4 and not rep.missing and not rep.unmapped
    assert '4 predictions with a null answer ("answer": null' in rep.summary()
    assert rep.accuracy["avg"] == pytest.approx(100 * (len(s) - 4) / len(s))


def test_score_cli_duplicates_once_with_ceiling(tmp_path, fixtures, caplog, capsys):
    quirks = fixtures / "music_avqa_original_test_quirks.json"
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"question_id": r.question_id, "answer": r.answer}) + "\n"
                             for r in load_annotations(quirks).records))
    assert main(["score", "--predictions", str(preds), "--annotations", str(quirks)]) == 0
    assert caplog.text.count("occur more than once") == 1
    assert "achievable ceiling 75.00 %" in caplog.text


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
