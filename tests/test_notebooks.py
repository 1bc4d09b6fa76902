"""The benchmark and ablation notebooks run headless and show their tables and charts: one run
each, on a results folder with runs of several datasets and a demo. (What they show when nothing
was measured is tested on the report functions they call, in test_reports.py.)"""

from __future__ import annotations

from helpers import assert_clean, make_results, outputs, run_notebook


def test_benchmark_notebook(tmp_path, monkeypatch):
    results = make_results(tmp_path / "results")
    nb = run_notebook("benchmark.ipynb", results, monkeypatch, tmp_path)
    assert_clean(nb)
    html = outputs(nb, "text/html")
    markdown = "\n".join(outputs(nb, "text/markdown"))
    assert len(outputs(nb, "image/png")) == 5  # one chart per dataset and the demo
    assert sum("reported AV-Master" in h for h in html) == 2  # MUSIC-AVQA (measured) and AVQA
    assert any("measured AV-Master (ours) [wo_avfc]" in h and "Δ" in h for h in html)
    assert any("train balance, test bias" in h for h in html)  # v2.0: measured setting
    assert markdown.count("None measured") == 2  # MUSIC-AVQA-R and AVQA
    assert any("measured question only" in h for h in html)  # the demo's two rows


def test_ablations_notebook(tmp_path, monkeypatch):
    results = make_results(tmp_path / "results")
    nb = run_notebook("ablations.ipynb", results, monkeypatch, tmp_path)
    assert_clean(nb)
    html = "\n".join(outputs(nb, "text/html"))
    assert "w/o AVFC" in html and "measured (music_avqa)" in html and "measured (demo)" in html
    assert len(outputs(nb, "image/png")) == 1
