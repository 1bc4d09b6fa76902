"""Several seeds through the CLI: one run folder each, the aggregate, evaluating the folder,
comparing two seed runs, and the reports reading the aggregate like a single run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tiny_overrides

from avmaster import reports
from avmaster.cli import main
from avmaster.stats import clopper_pearson


def test_seeds_aggregate_eval_compare(tmp_path, capsys):
    overrides = tiny_overrides(tmp_path)
    fast = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "save_predictions=true"]
    assert main(["train", "--seeds", "2", *overrides, *fast]) == 0
    run = tmp_path / "runs" / "tiny"
    seeds = [json.loads((run / f"seed{k}" / "results_music_avqa.json").read_text())
             for k in (0, 1)]
    assert [json.loads((run / f"seed{k}" / "config.json").read_text())["seed"]
            for k in (0, 1)] == [0, 1]
    agg = json.loads((run / "results_music_avqa.json").read_text())
    assert agg["meta"]["sources"] == ["seed0/results_music_avqa.json",
                                      "seed1/results_music_avqa.json"]
    for col in agg["columns"]:
        values = [s["accuracy"][col] for s in seeds]
        assert agg["accuracy"][col] == pytest.approx(np.mean(values))
        assert agg["std"][col] == pytest.approx(np.std(values, ddof=1))
    # pooled interval: exact binomial over the column's questions (not questions x seeds)
    mean_k, n = agg["correct"]["avg"], agg["counts"]["avg"]
    assert agg["interval"]["avg"][0] == pytest.approx(100 * clopper_pearson(int(mean_k), n)[0])
    assert "±" in (run / "results_music_avqa.md").read_text()

    # evaluating the folder evaluates every seed's checkpoint and rewrites the aggregate
    (run / "results_music_avqa.json").unlink()
    assert main(["eval", *overrides, f"ckpt={run}"]) == 0
    assert json.loads((run / "results_music_avqa.json").read_text())["accuracy"] == pytest.approx(
        agg["accuracy"])

    # two seed runs compared on their own test split (read from their results files)
    assert main(["compare", str(run / "seed0"), str(run / "seed1")]) == 0
    assert f"| avg | {n} | {seeds[0]['accuracy']['avg']:.2f} |" in capsys.readouterr().out
    # the folder of seeds against one seed: each question counts as its fraction of seeds
    # right, so A is the mean of the seeds; McNemar needs single runs
    assert main(["compare", str(run), str(run / "seed1"), "--out", str(tmp_path / "c")]) == 0
    assert "fraction of seeds right" in capsys.readouterr().out
    avg = json.loads((tmp_path / "c.json").read_text())["columns"]["avg"]
    assert avg["a"] == pytest.approx(agg["accuracy"]["avg"])
    assert avg["b"] == pytest.approx(seeds[1]["accuracy"]["avg"])
    assert avg["p_value"] is None and avg["only_a"] is None

    # the reports count the aggregate once, with its spread, and not the seed files again
    measured = reports.load_measured(tmp_path / "runs")
    assert len(measured) == 1 and "mean of 2 seeds" in measured["label"].item()
    assert measured["std:avg"].item() == pytest.approx(agg["std"]["avg"])
    assert measured["lo:avg"].item() == pytest.approx(agg["interval"]["avg"][0])

    # with variants= every seed's rows and one aggregate per row (it was refused)
    assert main(["eval", *overrides, f"ckpt={run}", "variants=table13"]) == 0
    rows = json.loads((run / "seed0" / "variants_music_avqa.json").read_text())["avg"]
    assert len(rows) == 3
    for row, avg in rows.items():
        agg_row = json.loads((run / f"results_music_avqa__{row}.json").read_text())
        seed1 = json.loads((run / "seed1" / "variants_music_avqa.json").read_text())["avg"][row]
        assert agg_row["accuracy"]["avg"] == pytest.approx((avg + seed1) / 2)
        assert agg_row["meta"]["row"] and row in agg_row["method"]
    # a command that takes one checkpoint names the seed runs of such a folder
    capsys.readouterr()
    assert main(["probe", *overrides, f"ckpt={run}", "--probes", "reversed"]) == 2
    assert f"a folder of 2 runs (seed0, seed1); pass one of them, e.g. ckpt={run / 'seed0'}" in (
        capsys.readouterr().err)
