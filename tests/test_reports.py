"""Reported-vs-measured tables (avmaster.reports): loading, matching, comparing, plotting."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from helpers import make_results

from avmaster import reports
from avmaster.config import load_config, to_dict


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return make_results(tmp_path / "results")


def test_reported_tables_hold_the_papers_numbers():
    t2 = reports.load_reported("music_avqa")
    row = t2[t2["method"] == "AV-Master"].iloc[0]
    assert row["avg"] == 78.51 and row["a_count"] == 87.02
    assert list(t2.columns[2:]) == reports.metric_columns("music_avqa")
    v2 = reports.load_reported("music_avqa_v2")
    assert set(v2[v2["method"] == "AV-Master"]["setting"]) == {
        f"train {a}, test {b}" for a in ("bias", "balance") for b in ("bias", "balance")}
    assert reports.load_reported("avqa").set_index("method").loc["AV-Master", "avg"] == 91.4
    r = reports.load_reported("music_avqa_r")
    assert r[r["method"] == "AV-Master"]["avg"].item() == 71.19
    abl = reports.load_reported("ablations")
    assert len(abl) == 30 and set(abl["table"].str.split().str[0]) == {
        "VII", "VIII", "IX", "X", "XI", "XII"}
    assert reports.load_reported("demo").empty
    with pytest.raises(ValueError, match="unknown table"):
        reports.load_reported("nope")


def test_every_ablation_preset_maps_to_a_paper_row():
    rows = set(map(tuple, reports.load_reported("ablations")[["table", "setting"]].to_numpy()))
    for preset, keys in reports.ABLATION_ROWS.items():
        assert set(keys) <= rows, preset
    unmapped = rows - {k for keys in reports.ABLATION_ROWS.values() for k in keys}
    assert unmapped == {("XI encoders", e) for e in ("ResNet-18 + VGGish", "CLIP-L + CLAP",
                                                     "InternVideo2 + InternVideo2")}


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], {"full"}),
    (["ablation=wo_avfc"], {"wo_avfc"}),
    (["ablation=wo_gpap"], {"wo_gpap", "wo_avpe"}),
    (["ablation=loss_qa_a_v"], {"loss_qa_a_v", "wo_dpcl"}),
    (["ablation=template_2"], {"template_2"}),
    (["ablation=encoder_clip_b"], {"encoder_clip_b"}),
    (["ablation=question_only"], {"question_only"}),
    (["model.dim=64", "optim.lr=0.01"], {"full"}),  # size and optimiser are not ablations
])
def test_infer_ablations_from_a_run_config(overrides, expected):
    assert set(reports.infer_ablations(to_dict(load_config(overrides=overrides)))) == expected


def test_load_measured_finds_every_result_once(results):
    m = reports.load_measured(results)
    assert sorted(m["dataset"]) == ["demo", "demo", "music_avqa", "music_avqa", "music_avqa",
                                    "music_avqa_v2"]
    demo = m[m["dataset"] == "demo"].set_index("method")
    assert demo.loc["AV-Master", "avg"] == pytest.approx(90.0 + 12)  # the demo's run is not
    assert set(demo["ablation"]) == {"full", "question_only"}      # counted twice
    by_source = m.set_index("source")["ablation"]
    assert by_source[str(Path("full/results_music_avqa.json"))] == "full"
    assert by_source[str(Path("wo_avfc/results_music_avqa.json"))] == "wo_avfc"
    assert by_source[str(Path("named/results_music_avqa.json"))] == "template_4"
    v2 = m[m["dataset"] == "music_avqa_v2"].iloc[0]
    assert v2["setting"] == "train balance, test bias"


def test_load_measured_of_a_missing_folder_is_empty(tmp_path, monkeypatch):
    monkeypatch.setenv(reports.RESULTS_ENV, str(tmp_path / "none"))
    m = reports.load_measured()
    assert m.empty and m.attrs["folder"] == str(tmp_path / "none")


def test_compare_puts_measured_next_to_reported(results):
    m = reports.load_measured(results)
    frame = reports.compare(reports.load_reported("music_avqa"), m)
    assert list(frame.index) == reports.metric_columns("music_avqa")
    assert frame.columns[0] == "reported AV-Master"
    measured = [c for c in frame.columns if c.startswith("measured")]
    deltas = [c for c in frame.columns if c.startswith("Δ")]
    assert len(measured) == 3 and len(deltas) == 3
    col = "measured AV-Master (ours) [wo_avfc]"
    assert frame.loc["avg", col] == pytest.approx(60.0 + 12)
    assert frame.loc["avg", "Δ AV-Master (ours) [wo_avfc]"] == pytest.approx(72.0 - 78.51)
    v2 = reports.compare(reports.load_reported("music_avqa_v2"), m)
    assert sum(c.startswith("reported") for c in v2.columns) == 4  # one per train/test setting
    assert list(v2.index) == reports.metric_columns("music_avqa_v2")
    assert not any(c.startswith("Δ") for c in v2.columns)


def test_compare_ablations(results):
    m = reports.load_measured(results)
    frame = reports.compare(reports.load_reported("ablations"), m)
    assert frame.loc[("VII ablation", "w/o AVFC"), "reported"] == 78.11
    assert frame.loc[("VII ablation", "w/o AVFC"), "measured (music_avqa)"] == 72.0
    assert frame.loc[("IX template length", "4"), "measured (music_avqa)"] == 62.0
    for key in reports.ABLATION_ROWS["full"]:  # the full model fills every table's default
        assert frame.loc[key, "measured (music_avqa)"] == 82.0
    assert frame.loc[("VII ablation", "full"), "measured (demo)"] == 102.0
    extra = frame.loc[reports.NOT_IN_PAPER]
    assert len(extra) == 1 and extra["reported"].isna().all()


def test_plot_draws_one_bar_per_cell(results):
    frame = reports.compare(reports.load_reported("music_avqa"), reports.load_measured(results))
    fig = reports.plot(frame, "MUSIC-AVQA")
    ax = fig.axes[0]
    n_series = sum(not c.startswith("Δ") for c in frame.columns)
    assert len(ax.patches) == n_series * len(frame)
    assert ax.get_title() == "MUSIC-AVQA"


def test_sections_say_when_nothing_was_measured(results, tmp_path):
    empty = reports.load_measured(tmp_path / "nothing")
    sec = reports.section("avqa", empty)
    assert sec.note.startswith("None measured")
    assert "AV-Master" in sec.frame.index.get_level_values("method")
    assert sec.figure is not None
    sec = reports.section("music_avqa", reports.load_measured(results))
    assert "3 measured" in sec.note and sec.frame.shape[1] == 7
    assert reports.section("demo", empty).figure is None
    abl = reports.ablation_section(empty, chart=False)
    assert abl.note.startswith("None measured") and list(abl.frame.columns) == ["reported"]
