"""The benchmark and ablation notebooks run headless and show their tables and charts."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_reports import make_results

from avmaster.reports import RESULTS_ENV

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "python3"
TIMEOUT_S = 300


def run_notebook(name: str, results: Path, monkeypatch: pytest.MonkeyPatch,
                 cwd: Path) -> nbformat.NotebookNode:
    monkeypatch.setenv(RESULTS_ENV, str(results))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=TIMEOUT_S, kernel_name=KERNEL,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def outputs(nb: nbformat.NotebookNode, mime: str) -> list[str]:
    return [o["data"][mime] for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if mime in o.get("data", {})]


def assert_clean(nb: nbformat.NotebookNode) -> None:
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors


def test_benchmark_notebook(tmp_path, monkeypatch):
    results = make_results(tmp_path / "results")
    nb = run_notebook("benchmark.ipynb", results, monkeypatch, tmp_path)
    assert_clean(nb)
    html = outputs(nb, "text/html")
    markdown = "\n".join(outputs(nb, "text/markdown"))
    # a bar chart per dataset and the demo, and a forest plot per column group (A, V, AV,
    # overall) of MUSIC-AVQA, v2.0 and the demo, the three with measured results
    assert len(outputs(nb, "image/png")) == 5 + 3 * 4
    assert sum("reported AV-Master" in h and "Δ" in h for h in html) == 1  # MUSIC-AVQA
    # measured with interval and n, the reported number inside it or not, reported gaps
    # within the measured noise (n = 10 per column here: every gap is)
    assert any("70.00 [34.75, 93.33] n=10" in h and "reported inside?" in h for h in html)
    assert any("≈ +0.89" in h and "QA-TIGER" in h for h in html)  # 78.51 - 77.62
    assert "reported gap(s) between AV-Master and another method" in markdown
    assert any("measured AV-Master [wo_avfc]" in h and "Δ" in h for h in html)
    assert any("train balance, test bias" in h for h in html)  # v2.0: measured setting
    assert markdown.count("None measured") == 2  # MUSIC-AVQA-R and AVQA
    assert any("measured question only" in h for h in html)  # the demo's two rows


def test_ablations_notebook(tmp_path, monkeypatch):
    results = make_results(tmp_path / "results")
    nb = run_notebook("ablations.ipynb", results, monkeypatch, tmp_path)
    assert_clean(nb)
    html = "\n".join(outputs(nb, "text/html"))
    markdown = "\n".join(outputs(nb, "text/markdown"))
    assert "w/o AVFC" in html and "measured (music_avqa)" in html and "measured (demo)" in html
    for title in ("Table VII", "Table VIII", "Table IX", "Table X:", "Table XI", "Table XII",
                  "Table XIII", "Fig. 4", "Fig. 5", "Fig. 6"):
        assert f"## {title}" in markdown, title
    assert "variants=table13" in html and "ablation=segments_24" in html  # missing rows
    assert len(outputs(nb, "image/png")) == 10  # every table and figure with a value


def test_notebooks_without_results(tmp_path, monkeypatch):
    for name in ("benchmark.ipynb", "ablations.ipynb"):
        nb = run_notebook(name, tmp_path / "none", monkeypatch, tmp_path)
        assert_clean(nb)
    assert "None measured" in "\n".join(outputs(nb, "text/markdown"))
