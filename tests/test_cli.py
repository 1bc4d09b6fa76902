import json

from avmaster.cli import main


def test_help_and_unknown(capsys):
    assert main([]) == 0 and "commands:" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2


def test_score_command_prints_the_table(tmp_path, fixtures, capsys):
    entries = json.loads((fixtures / "music_avqa_test_sample.json").read_text())
    preds = tmp_path / "crab.jsonl"
    preds.write_text("".join(json.dumps({"question_id": e["question_id"],
                                         "text": f"<answer>{e['anser']}</answer>"}) + "\n"
                             for e in entries[:54]))
    out = tmp_path / "scored"
    code = main(["score", "--predictions", str(preds), "--annotations",
                 str(fixtures / "music_avqa_test_sample.json"), "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert "| method | a_count | a_comp | a_avg |" in captured.out
    assert "54 questions without a prediction" in captured.err
    assert json.loads(out.with_suffix(".json").read_text())["accuracy"]["avg"] == 50.0


def test_predictions_for_other_questions_are_refused(tmp_path, fixtures, capsys):
    """Predictions scored against annotations they were not made for gave a table of zeros
    and exit status 0: now one line."""
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"question_id": "nope-1", "answer": "yes"}\n')
    test = str(fixtures / "music_avqa_test_sample.json")
    assert main(["score", "--predictions", str(preds), "--annotations", test]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("avmaster score: error:") and len(err[-1]) < 400, err
    assert "none of its 1 predictions is for a question of" in err[-1]


def test_score_head_tail_table(tmp_path, fixtures, capsys):
    preds = tmp_path / "p.json"
    preds.write_text("{}")
    assert main(["score", "--predictions", str(preds), "--table", "music_avqa_r",
                 "--annotations", str(fixtures / "music_avqa_test_sample.json")]) == 0
    assert "a_count_h | a_count_t" in capsys.readouterr().out


def test_errors_are_one_clear_line(tmp_path, fixtures, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    preds = tmp_path / "p.json"
    preds.write_text("{}")
    assert main(["score", "--predictions", str(preds), "--annotations", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "avmaster score: error:" in err and "bad.json: malformed JSON" in err
    assert main(["config", "model.nope=1"]) == 2
    assert "unknown config key 'model.nope'" in capsys.readouterr().err
    assert main(["config", "data.format=nope"]) == 2
    assert "data.format must be one of" in capsys.readouterr().err
    assert main(["config", "trainer.precision=16-true"]) == 2
    assert "trainer.precision=16-true: choose one of" in capsys.readouterr().err
    answers = tmp_path / "answers.json"
    test = str(fixtures / "music_avqa_test_sample.json")
    for content, says in (("[\"yes\",", "answers.json: malformed JSON at line 1"),
                          ("{}", "answers.json: expected a non-empty JSON list of answers"),
                          ('["yes", "no", "yes"]', "lists ['yes'] more than once; list each")):
        answers.write_text(content)
        assert main(["score", "--predictions", str(preds), "--annotations", test,
                     "--answers", str(answers)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err


def test_settings_a_run_cannot_use_are_one_line(tmp_path, tiny_run, capsys):
    """Settings a run cannot use stop with one line saying what to set (they raised a traceback):
    no data=NAME (no files listed), a half-given head/tail pair, an unknown table, eval without
    ckpt=, W-ADD without weights, the question-only model without its loss."""
    runs = f"output_dir={tmp_path}"
    for argv, says in ((["train", runs], "no answer vocabulary: choose the dataset with data="),
                       (["eval", runs, f"ckpt={tiny_run.ckpt}"],
                        "data.test lists no annotation file: choose the dataset with data="),
                       (["eval", runs, f"ckpt={tiny_run.ckpt}", "data.test_head=head.json"],
                        "data.test_head and data.test_tail go together"),
                       (["eval", *tiny_run.overrides, runs, f"ckpt={tiny_run.ckpt}",
                         "data.table=nope"], "data.table=nope: unknown table; choose one of"),
                       (["eval", *tiny_run.overrides, runs],
                        "evaluation needs a checkpoint: pass ckpt="),
                       (["eval", *tiny_run.overrides, runs, f"ckpt={tiny_run.ckpt}",
                         "inference.combine=w_add"], "or run variants=table13, which measures"),
                       (["train", *tiny_run.overrides, runs, "ablation=question_only",
                         "loss.qa=0"], "the question-only model needs loss.qa > 0"),
                       (["train", *tiny_run.overrides, runs, "trainer.accelerator=nope"],
                        "trainer.accelerator=nope, trainer.devices=1, trainer.strategy=auto, "
                        "trainer.precision=32-true: You selected an invalid accelerator")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err


def test_every_command_closes_an_open_process_group(monkeypatch, capsys):
    """A DDP run's process group is destroyed before the process exits, whether the command
    succeeded or failed (a gloo group alive at exit can abort a finished run)."""
    import torch.distributed as dist

    closed = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a: closed.append("closed"))
    assert main(["config", "model.nope=1"]) == 2
    assert main(["config"]) == 0
    assert closed == ["closed", "closed"]
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    assert main(["config"]) == 0 and closed == ["closed", "closed"]
