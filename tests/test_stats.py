"""Intervals and tests (avmaster.stats) against independent computations, and the
``avmaster compare`` command on the real annotation sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest

from avmaster import stats
from avmaster.cli import main
from avmaster.data.annotations import load_annotations
from avmaster.data.tables import get_table
from avmaster.metrics import write_results


@pytest.mark.parametrize(("k", "n"), [(0, 7), (7, 7), (3, 10), (60, 120), (1, 5000),
                                      (7167, 9129)])
def test_clopper_pearson_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    lo, hi = stats.clopper_pearson(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)


@pytest.mark.parametrize(("b", "c"), [(0, 1), (3, 10), (10, 3), (5, 5), (0, 25), (120, 160)])
def test_mcnemar_exact_matches_binomial_test(b, c):
    # McNemar's exact test is the two-sided binomial test of b successes in b + c at p = 1/2
    assert stats.mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue,
                                                      rel=1e-9)
    assert stats.mcnemar_exact(0, 0) == 1.0


def test_bootstrap_matches_index_resampling():
    """The multinomial shortcut has the distribution of resampling question indices: its
    percentiles agree with a plain (stratified) index bootstrap within Monte Carlo error."""
    rng = np.random.default_rng(1)
    groups = np.repeat([0, 1, 2], [300, 120, 80])
    a = rng.random(500) < np.where(groups == 0, 0.8, 0.6)
    b = rng.random(500) < 0.7
    d = a.astype(int) - b.astype(int)
    columns = [("g0", (0,)), ("all", (0, 1, 2))]
    ours = stats.bootstrap_means(d, groups, columns, resamples=20000, seed=3)
    means = np.zeros(20000)
    for g in range(3):
        idx = np.flatnonzero(groups == g)
        means += d[rng.choice(idx, size=(20000, len(idx)))].sum(axis=1)
    plain = np.percentile(100 * means / 500, [2.5, 97.5])
    assert ours["all"] == pytest.approx(plain, abs=0.3)  # points; the interval is ~±8
    assert ours["all"][0] < 100 * d.mean() < ours["all"][1]
    # fixed seed: the same interval every time
    assert stats.bootstrap_means(d, groups, columns, 500, 0) == stats.bootstrap_means(
        d, groups, columns, 500, 0)


def test_paired_comparison_counts():
    groups = np.array([0, 0, 0, 0, 1, 1])
    a = np.array([1, 1, 0, 1, 1, 0], dtype=bool)
    b = np.array([0, 1, 0, 0, 1, 1], dtype=bool)
    out = stats.paired_comparison(a, b, groups, [("x", (0,)), ("y", (1,)), ("avg", (0, 1))])
    assert (out["x"].only_a, out["x"].only_b, out["x"].diff) == (2, 0, 50.0)
    assert out["avg"].n == 6 and out["avg"].a == pytest.approx(400 / 6)
    assert out["avg"].p_value == pytest.approx(binomtest(1, 3, 0.5).pvalue)
    assert out["avg"].diff_low <= out["avg"].diff <= out["avg"].diff_high


def test_results_file_carries_n_and_interval(tmp_path):
    spec = get_table("music_avqa")
    counts = {c: 120 for c, _ in spec.columns}
    acc = {c: 100 * 90 / 120 for c in counts}
    js, md = write_results(tmp_path / "res", spec, acc, counts)
    payload = json.loads(js.read_text())
    ci = binomtest(90, 120).proportion_ci(0.95, method="exact")
    assert payload["counts"]["avg"] == 120 and payload["correct"]["avg"] == 90
    assert payload["interval"]["avg"] == pytest.approx([100 * ci.low, 100 * ci.high])
    assert payload["interval_method"] == "exact binomial (Clopper-Pearson), 95%"
    text = md.read_text()
    assert f"| 95% CI | {100 * ci.low:.2f}-{100 * ci.high:.2f} |" in text
    assert "| n | 120 |" in text


def _predictions(path, records, wrong):
    path.write_text("".join(json.dumps({"question_id": r.question_id,
                                        "answer": "banana" if i in wrong else r.answer}) + "\n"
                            for i, r in enumerate(records)))
    return path


def test_compare_command(tmp_path, fixtures, capsys):
    ann = fixtures / "music_avqa_test_sample.json"
    records = load_annotations(ann).records
    n = len(records)
    a = _predictions(tmp_path / "a.jsonl", records, wrong=set(range(0, n, 4)))
    b = _predictions(tmp_path / "b.jsonl", records, wrong=set(range(0, n, 2)))
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--annotations", str(ann), "--answers",
                 str(fixtures / "music_avqa_answers.json"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| column | n | A | B | A - B |" in printed
    result = json.loads(out.with_suffix(".json").read_text(), parse_constant=pytest.fail)[
        "columns"]["avg"]
    only_a = len(set(range(0, n, 2)) - set(range(0, n, 4)))
    assert (result["n"], result["only_a"], result["only_b"]) == (n, only_a, 0)
    assert result["diff"] == pytest.approx(100 * only_a / n)
    assert result["p_value"] == pytest.approx(binomtest(0, only_a, 0.5).pvalue)
    assert 0 < result["diff_low"] <= result["diff"] <= result["diff_high"]

    # a column without questions (only the audio questions kept) is null in the JSON
    audio = [e for e in json.loads(ann.read_text()) if json.loads(e["type"])[0] == "Audio"]
    ann_audio = tmp_path / "audio_only.json"
    ann_audio.write_text(json.dumps(audio))
    assert main(["compare", str(a), str(b), "--annotations", str(ann_audio), "--answers",
                 str(fixtures / "music_avqa_answers.json"), "--out", str(out)]) == 0
    capsys.readouterr()
    columns = json.loads(out.with_suffix(".json").read_text(), parse_constant=pytest.fail)[
        "columns"]
    assert columns["v_avg"]["n"] == 0 and columns["v_avg"]["diff"] is None
    assert columns["a_avg"]["n"] == len(audio) > 0

    # different question sets: one line naming how many ids differ and a few of them
    lines = b.read_text().splitlines()
    b.write_text("\n".join(lines[3:]) + "\n")
    assert main(["compare", str(a), str(b), "--annotations", str(ann)]) == 2
    err = capsys.readouterr().err.strip()
    assert "3 question ids only in a, 0 only in b" in err and records[0].question_id in err
    assert len(err.splitlines()) == 1
