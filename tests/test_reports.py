"""Reported-vs-measured tables (avmaster.reports): loading, matching, comparing, plotting."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from helpers import make_results

from avmaster import reports
from avmaster.config import load_variant, preset_names


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Written once; the tests only read it."""
    return make_results(tmp_path_factory.mktemp("reports") / "results")


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
    assert len(abl) == 33 and set(abl["table"].str.split().str[0]) == {
        "VII", "VIII", "IX", "X", "XI", "XII", "XIII"}
    assert reports.load_reported("demo").empty
    with pytest.raises(ValueError, match="unknown table"):
        reports.load_reported("nope")


def test_every_preset_and_variant_names_a_paper_row():
    rows = set(map(tuple, reports.load_reported("ablations")[["table", "setting"]].to_numpy()))
    presets = reports.preset_paper_rows()
    assert set(presets) == {"full", *preset_names("ablations")}
    variants = {(v.paper, r.setting) for v in map(load_variant, ("table12", "table13"))
                for r in v.rows}
    figures = {k for keys in presets.values() for k in keys if k[0].startswith("Fig.")}
    assert {k[1] for k in figures} == {"12", "24", "36", "48", "60", "A+Q", "A+V+Q", "V+Q"}
    mapped = {k for keys in presets.values() for k in keys} | variants
    assert mapped - figures <= rows  # every named row exists (figures have no numbers)
    assert presets["question_only"] == ()  # a reference, in no paper table
    assert rows - mapped == {("XI encoders", "InternVideo2 + InternVideo2")}


def test_load_measured_finds_every_result_once(results):
    m = reports.load_measured(results)
    assert sorted(m["dataset"]) == ["demo", "demo", *["music_avqa"] * 9, "music_avqa_v2"]
    demo = m[m["dataset"] == "demo"].set_index("method")
    assert demo.loc["AV-Master", "avg"] == pytest.approx(90.0 + 12)  # the demo's run is not
    assert set(demo["ablation"]) == {"full", "question_only"}      # counted twice
    by_source = m.set_index("source")["ablation"]
    assert by_source[str(Path("full/results_music_avqa.json"))] == "full"
    assert by_source[str(Path("wo_avfc/results_music_avqa.json"))] == "wo_avfc"
    assert by_source[str(Path("named/results_music_avqa.json"))] == "template_4"
    labels = set(m["label"])  # rows are labelled by what the run recorded
    assert {"AV-Master", "AV-Master [wo_avfc]", "AV-Master {table12: wo_ape}",
            "AV-Master [wo_avfc] {table13: mul}"} <= labels
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
    assert len(measured) == 9 and len(deltas) == 9
    col = "measured AV-Master [wo_avfc]"
    assert frame.loc["avg", col] == pytest.approx(60.0 + 12)
    assert frame.loc["avg", "Δ AV-Master [wo_avfc]"] == pytest.approx(72.0 - 78.51)
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
    for key in reports.FULL_ROWS:  # the full model fills every table's default
        assert frame.loc[key, "measured (music_avqa)"] == 82.0
    assert frame.loc[("XII preference enhancement", "w/o APE"), "measured (music_avqa)"] == 77.0
    assert frame.loc[("VII ablation", "full"), "measured (demo)"] == 102.0
    # a variant of an ablated model stands for no paper row; it is listed by its label
    extra = frame.loc[reports.NOT_IN_PAPER]
    assert set(extra.index) == {"question only", "AV-Master [wo_avfc] {table13: mul}"}
    assert extra["reported"].isna().all()


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
    assert "9 measured" in sec.note and sec.frame.shape[1] == 19
    assert reports.section("demo", empty).figure is None
    abl = reports.ablation_section(empty, chart=False)
    assert abl.note.startswith("None measured") and list(abl.frame.columns) == ["reported"]


def test_experiment_sections_cover_every_table_and_figure(results):
    secs = reports.experiment_sections(reports.load_measured(results))
    titles = [s.title for s in secs]
    assert [t.split(":")[0] for t in titles[:10]] == [
        "Table VII", "Table VIII", "Table IX", "Table X", "Table XI", "Table XII", "Table XIII",
        "Fig. 4", "Fig. 5", "Fig. 6"]
    by = dict(zip([t.split(":")[0] for t in titles], secs, strict=True))
    t12 = by["Table XII"].frame
    assert t12.loc["w/o APE", "measured (music_avqa)"] == 77.0
    assert t12.loc["w/o APE", "command"] == ""  # measured: no command needed
    assert t12.loc["w/o VPE", "command"] == (
        "avmaster eval data=music_avqa ckpt=runs/avmaster/checkpoints/last.ckpt variants=table12")
    assert by["Table VIII"].frame.loc["L_qa only", "command"] == (
        "avmaster train data=music_avqa ablation=loss_qa name=loss_qa")
    assert by["Fig. 4"].frame.loc["12", "command"].endswith("ablation=segments_12 name=segments_12")
    assert by["Fig. 4"].frame.loc["60", "measured (music_avqa)"] == 82.0  # the full model
    assert "not available" in by["Table XI"].frame.loc["InternVideo2 + InternVideo2", "command"]
    fig6 = by["Fig. 6"]
    assert list(fig6.frame.index) == ["k=0", "k=1", "k=2", "k=3"]
    assert list(fig6.frame["measured (music_avqa)"]) == [62.0, 64.0, 63.0, 70.0]
    assert fig6.figure is not None and len(fig6.figure.axes[0].lines) == 1
    other = by["Other measured results (not in the paper's tables)"].frame
    assert "AV-Master [wo_avfc] {table13: mul}" in other.index
