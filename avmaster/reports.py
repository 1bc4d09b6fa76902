"""Measured accuracies next to the ones the papers report: tables and bar charts.

The reported numbers ship in ``avmaster/reference/*.csv``; measured ones are the results files
the library writes (``results_<data>.json`` from ``avmaster train``/``eval``, ``demo.json``
from ``avmaster demo``), found recursively under a folder (``$AVMASTER_RESULTS``, default
``outputs/demo``). The notebooks ``notebooks/benchmark.ipynb`` and ``notebooks/ablations.ipynb``
are thin front ends of :func:`section` and :func:`ablation_section`.

>>> measured = load_measured("outputs/demo")
>>> frame = compare(load_reported("music_avqa"), measured)
>>> plot(frame, "MUSIC-AVQA")
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from avmaster.config import VARIANTS_KIND, load_variant, preset_names
from avmaster.data.tables import get_table

log = logging.getLogger(__name__)

REFERENCE_DIR = Path(__file__).with_name("reference")
RESULTS_ENV = "AVMASTER_RESULTS"
DEFAULT_RESULTS = "outputs/demo"
RESULT_GLOBS = ("results_*.json", "demo.json")
OTHER_CSV = "reported_other.csv"
ABLATIONS = "ablations"
DEMO = "demo"
DEMO_TABLE = "music_avqa"  # the demo's data uses MUSIC-AVQA's question types
PAPER_METHOD = "AV-Master"
REPORTED_PREFIX = "reported"
MEASURED_PREFIX = "measured"
DELTA_PREFIX = "Δ"
# Per metric column of a measured row: questions, interval bounds (%), std over seeds (points).
N_PREFIX, LOW_PREFIX, HIGH_PREFIX, STD_PREFIX = "n:", "lo:", "hi:", "std:"
KEY_COLUMNS = ("source", "dataset", "data", "table", "method", "setting", "ablation", "label",
               "paper")
ABLATION_INDEX = ("table", "setting")
CHART_WIDTH_PER_COLUMN = 0.55  # inches per metric column in :func:`plot`
CHART_MIN_WIDTH = 6.0
CHART_HEIGHT = 3.6


@dataclass(frozen=True)
class Benchmark:
    """A dataset whose reported table ships with the library."""

    title: str
    table: str  # metric table (avmaster.metrics) of its results
    csv: str | None  # reported table in REFERENCE_DIR (None: rows of reported_other.csv)
    other_prefix: str | None = None  # those rows: ``table`` column prefix in reported_other.csv


BENCHMARKS: dict[str, Benchmark] = {
    "music_avqa": Benchmark("MUSIC-AVQA (paper Table II)", "music_avqa",
                            "reported_music_avqa_table2.csv"),
    "music_avqa_r": Benchmark("MUSIC-AVQA-R (paper Table III)", "music_avqa_r",
                              "reported_music_avqa_r_table3.csv"),
    "music_avqa_v2": Benchmark("MUSIC-AVQA-v2.0 (paper Table IV)", "music_avqa_v2",
                               "reported_music_avqa_v2_table4.csv"),
    "avqa": Benchmark("AVQA (paper Table V)", "avqa", None, "V "),
}
DEMO_TITLE = "Synthetic demo (avmaster demo; no reported counterpart)"
ABLATION_TABLES = ("VII ", "VIII ", "IX ", "X ", "XI ", "XII ", "XIII ", "Fig. ")
# The full model stands for each table's default row; the presets name their own rows
# (``paper:`` in configs/ablations/*.yaml, configs/variants/*.yaml).
FULL_ROWS: tuple[tuple[str, str], ...] = (
    ("VII ablation", "full"), ("VIII loss ablation", "all four"), ("IX template length", "8"),
    ("X weight sharing", "attention shared (default)"), ("XI encoders", "CLIP-L + VGGish"),
    ("XII preference enhancement", "full"), ("XIII prediction combination", "ADD (default)"),
    ("Fig. 4 segment length", "60"), ("Fig. 5 input modalities", "A+V+Q"))
NOT_IN_PAPER = "not in the paper's tables"


def results_folder(folder: Path | str | None = None) -> Path:
    """``folder``, else ``$AVMASTER_RESULTS``, else ``outputs/demo``."""
    return Path(folder or os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)


def metric_columns(table: str) -> list[str]:
    """The metric columns of a table in the papers' order (``ablations``: ``avg``)."""
    if table in (ABLATIONS,):
        return ["avg"]
    if table == DEMO:
        table = DEMO_TABLE
    spec = BENCHMARKS[table].table if table in BENCHMARKS else table
    return [c for c, _ in get_table(spec).columns]


# ----------------------------------------------------------------------------- reported


def _other() -> pd.DataFrame:
    return pd.read_csv(REFERENCE_DIR / OTHER_CSV)


def load_reported(table: str) -> pd.DataFrame:
    """Reported accuracies (%) of one table: columns ``method``, ``setting`` and the metric
    columns (``ablations``: ``table``, ``setting``, ``method``, ``avg``). ``table``: a key of
    :data:`BENCHMARKS`, ``ablations`` (paper Tables VII-XII) or ``demo`` (none: empty)."""
    if table == ABLATIONS:
        other = _other()
        rows = other[other["table"].str.startswith(ABLATION_TABLES)]
        out = rows.rename(columns={"value": "avg"})[["table", "setting", "method", "avg"]]
    elif table == DEMO:
        out = pd.DataFrame(columns=["method", "setting", *metric_columns(DEMO)])
    elif table not in BENCHMARKS:
        raise ValueError(f"unknown table {table!r}; choose one of "
                         f"{[*BENCHMARKS, ABLATIONS, DEMO]}")
    elif BENCHMARKS[table].csv is None:
        other = _other()
        rows = other[other["table"].str.startswith(BENCHMARKS[table].other_prefix or "")]
        out = pd.DataFrame({"method": rows["method"],
                            "setting": rows["setting"].replace("—", ""),
                            "avg": rows["value"].astype(float)})
    else:
        raw = pd.read_csv(REFERENCE_DIR / BENCHMARKS[table].csv)  # type: ignore[operator]
        if "test_set" in raw:
            setting = "train " + raw["train_set"] + ", test " + raw["test_set"]
        else:
            setting = raw["venue"]
        metrics = [c for c in metric_columns(table) if c in raw]
        out = pd.concat([raw[["method"]], setting.rename("setting"), raw[metrics]], axis=1)
    out = out.reset_index(drop=True)
    out.attrs["table"] = table
    return out


# ----------------------------------------------------------------------------- measured


def _v2_setting(data: str, test: Sequence[str]) -> str:
    train = "balance" if "balance" in data else "bias" if "bias" in data else "?"
    tested = " ".join(test)
    split = "bias" if "bias" in tested else "balance" if "balance" in tested else "?"
    return f"train {train}, test {split}"


def dataset_of(table: str, data: str) -> str:
    """Which benchmark a result belongs to: ``demo`` for the synthetic data, else the table's
    key in :data:`BENCHMARKS`."""
    return DEMO if data.startswith(DEMO) else table


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def preset_paper_rows() -> dict[str, tuple[tuple[str, str], ...]]:
    """Ablation preset -> the paper rows it reproduces (read from its YAML ``paper:`` key), with
    ``full`` -> :data:`FULL_ROWS`."""
    from avmaster.config import PRESET_KINDS, read_preset

    kind = PRESET_KINDS["ablation"]
    rows = {name: tuple(read_preset(kind, name)[1]) for name in preset_names(kind)}
    return {"full": FULL_ROWS, **rows}


def paper_rows_of(meta: dict[str, Any], ablations: Sequence[str],
                  table_rows: dict[str, tuple[tuple[str, str], ...]]) -> list[tuple[str, str]]:
    """The paper rows one result stands for: its variant row when it is an inference-time
    variant of the full model; else its presets' rows (default inference only); else none."""
    inference = meta.get("inference") or {}
    if meta.get("variant"):
        return [(str(meta["paper"]), str(meta["setting"]))] if list(ablations) == ["full"] else []
    from avmaster.models.config import InferenceConfig

    if inference and inference != dataclasses.asdict(InferenceConfig()):
        return []
    return [key for a in ablations for key in table_rows.get(a, ())]


def _rows_of(path: Path, payload: dict[str, Any], folder: Path,
             table_rows: dict[str, tuple[tuple[str, str], ...]]) -> list[dict[str, Any]]:
    """The rows of one results file, labelled by what the file records (``meta.ablation``,
    ``meta.variant``); nothing is inferred."""
    meta = payload.get("meta") or {}
    table = str(payload.get("table", ""))
    data = str(meta.get("data", table))
    dataset = dataset_of(table, data)
    setting = _v2_setting(data, _as_list(meta.get("test"))) if table == "music_avqa_v2" else ""
    if "rows" in payload:  # several methods in one file (demo.json)
        named = meta.get("ablations") or {}
        intervals = payload.get("intervals") or {}
        rows = [(m, acc, _as_list(named.get(m)), intervals.get(m) or {}, {})
                for m, acc in payload["rows"].items()]
    else:
        rows = [(str(payload.get("method", "?")), payload.get("accuracy") or {},
                 _as_list(meta.get("ablation")), payload.get("interval") or {},
                 payload.get("std") or {})]
    counts = payload.get("counts") or {}
    out = []
    for method, accuracy, ablations, interval, std in rows:
        label = method
        if setting:
            label += f" ({setting})"
        out.append({"source": str(path.relative_to(folder)), "dataset": dataset, "data": data,
                    "table": table, "method": method, "setting": setting,
                    "ablation": ",".join(ablations), "label": label,
                    "seeds": len(payload.get("seeds") or {}) or 1,
                    "paper": paper_rows_of(meta, ablations, table_rows),
                    **{k: _number(v) for k, v in accuracy.items()},
                    **{f"{N_PREFIX}{k}": float(v) for k, v in counts.items()},
                    **{f"{LOW_PREFIX}{k}": _number(v[0]) for k, v in interval.items()},
                    **{f"{HIGH_PREFIX}{k}": _number(v[1]) for k, v in interval.items()},
                    **{f"{STD_PREFIX}{k}": _number(v) for k, v in std.items()}})
    return out


def _number(v: float | None) -> float:
    """A results file's number; ``null`` (what JSON holds for NaN, a column without questions)
    is NaN again."""
    return float("nan") if v is None else float(v)


def load_measured(folder: Path | str | None = None) -> pd.DataFrame:
    """Every results file under ``folder`` (see :func:`results_folder`), one row per method:
    ``source`` (path under ``folder``), ``dataset`` (benchmark key or ``demo``), ``data``
    (data config name), ``table``, ``method``, ``setting``, ``ablation`` (preset names,
    comma-separated), ``label``, ``seeds`` and the metric columns (%), each with ``n:<col>``
    (questions), ``lo:<col>``/``hi:<col>`` (95 % interval) and, for an aggregate over seeds,
    ``std:<col>``. Per-run files that a ``demo.json`` or an aggregate already gathers (its
    ``meta.sources``) are not counted twice."""
    folder = results_folder(folder)
    files = sorted({p for g in RESULT_GLOBS for p in folder.rglob(g)}) if folder.is_dir() else []
    payloads: dict[Path, dict[str, Any]] = {}
    for path in files:
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            log.warning("%s: skipped (%s)", path, e)
            continue
        if isinstance(payload, dict) and ("accuracy" in payload or "rows" in payload):
            payloads[path] = payload
    gathered = {(p.parent / s).resolve() for p, pl in payloads.items()
                for s in _as_list((pl.get("meta") or {}).get("sources"))}
    table_rows = preset_paper_rows()
    rows = [r for p, pl in payloads.items() if p.resolve() not in gathered
            for r in _rows_of(p, pl, folder, table_rows)]
    frame = pd.DataFrame(rows)
    frame = frame.reindex(columns=[*KEY_COLUMNS,
                                   *(c for c in frame.columns if c not in KEY_COLUMNS)])
    if "avg" not in frame:
        frame["avg"] = pd.Series(dtype=float)
    frame.attrs["folder"] = str(folder)
    return frame


# ----------------------------------------------------------------------------- compare


def compare(reported: pd.DataFrame, measured: pd.DataFrame,
            method: str = PAPER_METHOD) -> pd.DataFrame:
    """Metric columns as rows; as columns the reported numbers of ``method`` (one per
    setting), every measured result of the same benchmark, and, when the paper gives a single
    row, each measured result's difference from it (``Δ ...``). ``reported`` comes from
    :func:`load_reported` (its ``attrs['table']`` names the benchmark); for ``ablations`` see
    :func:`compare_ablations`."""
    table = reported.attrs.get("table", "music_avqa")
    if table == ABLATIONS:
        return compare_ablations(reported, measured)
    cols = metric_columns(table)
    out = pd.DataFrame(index=pd.Index(cols, name="column"))
    mine = reported[reported["method"] == method] if len(reported) else reported
    for _, row in mine.iterrows():
        name = REPORTED_PREFIX + (f" {method}" if len(mine) == 1 or not row["setting"]
                                  else f" {method} ({row['setting']})")
        out[name] = [row.get(c, float("nan")) for c in cols]
    ours = measured[measured["dataset"] == table] if len(measured) else measured
    for _, row in ours.iterrows():
        out[f"{MEASURED_PREFIX} {row['label']}"] = [row.get(c, float("nan")) for c in cols]
    if len(mine) == 1:
        ref = out.columns[0]
        for col in [c for c in out.columns if c.startswith(MEASURED_PREFIX)]:
            out[f"{DELTA_PREFIX} {col[len(MEASURED_PREFIX) + 1:]}"] = out[col] - out[ref]
    out = out.astype(float)
    out.attrs["table"] = table
    return out


def compare_ablations(reported: pd.DataFrame, measured: pd.DataFrame) -> pd.DataFrame:
    """Rows (paper table, setting) of Tables VII-XIII and Fig. 4-6; columns ``reported`` and
    one ``measured (<data>)`` per dataset with ablation results (a result counts for every row
    it records; the rest, labelled, come last under "not in the paper's tables")."""
    rep = reported.set_index(list(ABLATION_INDEX))["avg"].astype(float)
    out = pd.DataFrame({REPORTED_PREFIX: rep})
    runs = measured[measured["ablation"].astype(bool) | measured["paper"].astype(bool)
                    ] if len(measured) else measured
    for data, group in (runs.groupby("data", sort=True) if len(runs) else []):
        col = f"{MEASURED_PREFIX} ({data})"
        for _, row in group.iterrows():
            for key in row["paper"] or [(NOT_IN_PAPER, row["label"])]:
                if key not in out.index:
                    out.loc[key, REPORTED_PREFIX] = float("nan")
                out.loc[key, col] = row.get("avg", float("nan"))
    out.index = out.index.set_names(list(ABLATION_INDEX))
    out = out.astype(float)
    out.attrs["table"] = ABLATIONS
    return out


def plot(frame: pd.DataFrame, title: str = "", ax: Any = None) -> Any:
    """Grouped bar chart of a :func:`compare` frame (``Δ`` columns left out); returns the
    matplotlib figure."""
    import matplotlib.pyplot as plt

    series = frame[[c for c in frame.columns if not str(c).startswith(DELTA_PREFIX)]]
    series = series.dropna(how="all")
    labels = [": ".join(str(p) for p in i) if isinstance(i, tuple) else str(i)
              for i in series.index]
    if ax is None:
        width = max(CHART_MIN_WIDTH, CHART_WIDTH_PER_COLUMN * max(1, len(labels))
                    * max(1, len(series.columns)) ** 0.5)
        fig, ax = plt.subplots(figsize=(width, CHART_HEIGHT))
    else:
        fig = ax.figure
    n = max(1, len(series.columns))
    bar = 0.8 / n
    for k, col in enumerate(series.columns):
        xs = [i + (k - (n - 1) / 2) * bar for i in range(len(labels))]
        ax.bar(xs, series[col].to_numpy(dtype=float), width=bar, label=str(col))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45 if len(labels) > 4 else 0, ha="right"
                       if len(labels) > 4 else "center")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    if len(series.columns):
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- sections


@dataclass
class Section:
    """One notebook section: a title, a sentence about what was measured, the comparison
    frame and its chart (``None`` when the frame is empty)."""

    title: str
    note: str
    frame: pd.DataFrame
    figure: Any = None


def section(table: str, measured: pd.DataFrame, chart: bool = True) -> Section:
    """Reported vs measured for one benchmark (or ``demo``)."""
    title = DEMO_TITLE if table == DEMO else BENCHMARKS[table].title
    frame = compare(load_reported(table), measured)
    n = sum(c.startswith(MEASURED_PREFIX) for c in frame.columns)
    where = measured.attrs.get("folder", "the results folder")
    if n:
        note = f"{n} measured result(s) from {where}, next to the paper's {PAPER_METHOD}."
        if table == DEMO:
            note = (f"{n} measured result(s) from {where} on synthetic data; the paper has no "
                    "such table, so nothing is reported to compare with.")
    elif table == DEMO:
        note = f"No demo results under {where} (run `avmaster demo`)."
    else:
        note = (f"None measured: no results for this dataset under {where}; the reported "
                "numbers are shown alone.")
    figure = None
    if chart and not frame.dropna(how="all").empty:
        figure = plot(frame, title)
    if not n and table != DEMO:  # the whole reported table, every method
        frame = load_reported(table).set_index(["method", "setting"])
    return Section(title, note, frame, figure)


def ablation_section(measured: pd.DataFrame, chart: bool = True) -> Section:
    """Paper Tables VII-XIII and Fig. 4-6 (overall accuracy) next to every measured result."""
    frame = compare_ablations(load_reported(ABLATIONS), measured)
    cols = [c for c in frame.columns if c.startswith(MEASURED_PREFIX)]
    where = measured.attrs.get("folder", "the results folder")
    if cols:
        note = (f"Measured ablation runs from {where} ({', '.join(cols)}); a run counts for "
                "every paper row its preset stands for. Compare within a column: other data "
                "than MUSIC-AVQA is not comparable with the paper's numbers.")
    else:
        note = (f"None measured: no ablation results under {where}; the reported numbers are "
                "shown alone.")
    figure = plot(frame, "Ablations (paper Tables VII-XIII, Fig. 4-6): avg accuracy"
                  ) if chart else None
    return Section("Ablations (paper Tables VII-XIII, Fig. 4-6)", note, frame, figure)


EXPERIMENTS: tuple[tuple[str, str], ...] = (
    ("VII ablation", "Table VII: components removed (training-time)"),
    ("VIII loss ablation", "Table VIII: loss subsets (loss weights only; every decoder votes)"),
    ("IX template length", "Table IX: template length"),
    ("X weight sharing", "Table X: weight sharing"),
    ("XI encoders", "Table XI: encoders"),
    ("XII preference enhancement", "Table XII: preference enhancement disabled at inference"),
    ("XIII prediction combination", "Table XIII: combining the paths' distributions"),
    ("Fig. 4 segment length", "Fig. 4: number of one-second segments"),
    ("Fig. 5 input modalities", "Fig. 5: input modalities"),
    ("Fig. 6 focus readout", "Fig. 6: focus templates read out after step k"),
)
EXAMPLE_DATA = "music_avqa"
EXAMPLE_CKPT = "runs/avmaster/checkpoints/last.ckpt"
COMMAND = "command"
UNAVAILABLE = {("XI encoders", "InternVideo2 + InternVideo2"):
               "not available: InternVideo2 has no maintained package to extract features with"}
READOUT = "Fig. 6 focus readout"


def row_commands(data: str = EXAMPLE_DATA) -> dict[tuple[str, str], str]:
    """The command that produces each paper row: ``avmaster train ... ablation=NAME`` for a
    preset's row, ``avmaster eval ... variants=NAME`` for an inference-time row (from the YAML
    registries), and why a row cannot be produced where it cannot."""
    out: dict[tuple[str, str], str] = {}
    for name, keys in preset_paper_rows().items():
        command = (f"avmaster train data={data}" if name == "full"
                   else f"avmaster train data={data} ablation={name} name={name}")
        out.update({key: command for key in keys})
    for name in preset_names(VARIANTS_KIND):
        v = load_variant(name)
        command = f"avmaster eval data={data} ckpt={EXAMPLE_CKPT} variants={name}"
        keys = [(v.paper, r.setting) for r in v.rows] or [(v.paper, "k=0..T-1")]
        out.update({key: command for key in keys})
    out.update(UNAVAILABLE)
    return out


def _readout_step(setting: str) -> int:
    return int(setting.split("=", 1)[1])


def experiment_sections(measured: pd.DataFrame, chart: bool = True) -> list[Section]:
    """One section per paper table and figure (VII-XIII, Fig. 4-6): every row the paper reports
    or a preset / variant produces, the reported value, the measured ones, and for rows with
    no measurement the command that produces it. Fig. 6 is drawn as a curve over k."""
    frame = compare_ablations(load_reported(ABLATIONS), measured)
    commands = row_commands()
    missing = [k for k in commands if k not in frame.index]
    if missing:
        frame = pd.concat([frame, pd.DataFrame(index=pd.MultiIndex.from_tuples(
            missing, names=list(ABLATION_INDEX)), columns=frame.columns, dtype=float)])
    measured_cols = [c for c in frame.columns if c.startswith(MEASURED_PREFIX)]
    sections = []
    for table, title in EXPERIMENTS:
        part = frame.xs(table, level=0, drop_level=False)
        figure = None
        if table == READOUT:
            measured_rows = [k for k in part.index if k[1] != "k=0..T-1"]
            if measured_rows:
                part = part.loc[sorted(measured_rows, key=lambda k: _readout_step(k[1]))]
            if chart and measured_rows:
                figure = _readout_plot(part, measured_cols, title)
        elif chart and not part.dropna(how="all").empty:
            figure = plot(part.droplevel(0), title)
        shown = part.droplevel(0).copy()
        has_value = shown[measured_cols].notna().any(axis=1) if measured_cols else (
            pd.Series(False, index=shown.index))
        shown[COMMAND] = [("" if done else commands.get((table, s), ""))
                          for s, done in zip(shown.index, has_value, strict=True)]
        n = int(has_value.sum())
        if n == len(shown):
            note = f"All {n} row(s) measured."
        elif n:
            note = (f"{n} of {len(shown)} row(s) measured; the command column says how to "
                    "produce the others.")
        else:
            note = "None measured yet: each row's command produces it."
        if table.startswith("Fig."):
            note += " The paper gives this figure as a plot only (no numbers to compare with)."
        sections.append(Section(title, note, shown, figure))
    if NOT_IN_PAPER in frame.index.get_level_values(0):
        other = frame.xs(NOT_IN_PAPER, level=0)[[REPORTED_PREFIX, *measured_cols]]
        sections.append(Section("Other measured results (not in the paper's tables)",
                                "Runs whose presets or overrides match no paper row, by label.",
                                other.drop(columns=[REPORTED_PREFIX])))
    return sections


def _readout_plot(part: pd.DataFrame, columns: Sequence[str], title: str) -> Any:
    """Accuracy against the readout step k, one line per measured column."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(CHART_MIN_WIDTH, CHART_HEIGHT))
    ks = [_readout_step(s) for s in part.index.get_level_values(1)]
    for col in [c for c in columns if part[c].notna().any()]:
        ax.plot(ks, part[col].to_numpy(dtype=float), marker="o", label=str(col))
    ax.set_xlabel("readout step k")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def show(sec: Section) -> None:
    """Display a section in a notebook: title, note, table, chart."""
    from IPython.display import Markdown, display

    display(Markdown(f"## {sec.title}\n\n{sec.note}"))
    display(sec.frame.round(2) if COMMAND not in sec.frame else sec.frame.style.format(
        precision=2, na_rep="–"))
    if sec.figure is not None:
        display(sec.figure)
        import matplotlib.pyplot as plt

        plt.close(sec.figure)


# ----------------------------------------------------------------------------- noise

NOISE_MARK = "≈"  # a reported gap smaller than the measured noise
FOREST_ROW_HEIGHT = 0.28  # inches per method in :func:`forest`
FOREST_PANEL_WIDTH = 2.6  # inches per metric column in :func:`forest`
FOREST_LABEL_WIDTH = 3.0  # inches for the method names
GROUP_TITLES = {"a": "Audio", "v": "Visual", "av": "Audio-Visual"}


def column_groups(table: str) -> dict[str, list[str]]:
    """A table's metric columns by group: each modality's columns (types and average), the
    other per-type columns, and the overall ``avg`` on its own."""
    out: dict[str, list[str]] = {}
    for col in metric_columns(table):
        prefix = col.split("_")[0]
        name = "overall" if col == "avg" else GROUP_TITLES.get(prefix, "question types")
        out.setdefault(name, []).append(col)
    return out


def noise(measured: pd.DataFrame, table: str) -> pd.Series:
    """Per metric column the measured noise of ``table``'s benchmark: the largest half-width of
    a measured 95 % interval (pooled for aggregates over seeds). NaN where none is measured."""
    cols = metric_columns(table)
    ours = measured[measured["dataset"] == table] if len(measured) else measured
    half = pd.DataFrame({c: (ours.get(f"{HIGH_PREFIX}{c}", pd.Series(dtype=float))
                             - ours.get(f"{LOW_PREFIX}{c}", pd.Series(dtype=float))) / 2
                         for c in cols})
    return half.max(axis=0).reindex(cols).astype(float)


def with_intervals(measured: pd.DataFrame, table: str) -> pd.DataFrame:
    """Metric columns as rows; the reported AV-Master number(s) and, per measured result,
    ``accuracy [low, high] n=questions`` (``mean ±std [pooled interval]`` over seeds) and
    whether the reported number lies inside the measured interval."""
    cols = metric_columns(table)
    out = pd.DataFrame(index=pd.Index(cols, name="column"))
    reported = load_reported(table)
    mine = reported[reported["method"] == PAPER_METHOD] if len(reported) else reported
    for _, row in mine.iterrows():
        name = f"{REPORTED_PREFIX} {PAPER_METHOD}" + (f" ({row['setting']})"
                                                     if len(mine) > 1 else "")
        out[name] = [f"{row[c]:.2f}" if c in row and pd.notna(row[c]) else "-" for c in cols]
    ours = measured[measured["dataset"] == table] if len(measured) else measured
    for _, row in ours.iterrows():
        cells, inside = [], []
        for c in cols:
            acc, lo, hi = (row.get(k, float("nan")) for k in (c, f"{LOW_PREFIX}{c}",
                                                               f"{HIGH_PREFIX}{c}"))
            std = row.get(f"{STD_PREFIX}{c}", float("nan"))
            spread = f" ±{std:.2f}" if pd.notna(std) else ""
            count = row.get(f"{N_PREFIX}{c}", float("nan"))
            cells.append("-" if pd.isna(acc) else f"{acc:.2f}{spread}" + (
                f" [{lo:.2f}, {hi:.2f}]" if pd.notna(lo) else "") + (
                f" n={int(count)}" if pd.notna(count) else ""))
            ref = [r[c] for _, r in mine.iterrows() if c in r and pd.notna(r[c])
                   and (len(mine) == 1 or r["setting"] == row["setting"])]
            inside.append("-" if not ref or pd.isna(lo) else
                          "yes" if lo <= ref[0] <= hi else "no")
        out[f"{MEASURED_PREFIX} {row['label']}"] = cells
        if len(mine):
            out[f"reported inside? ({row['label']})"] = inside
    return out


def gaps(measured: pd.DataFrame, table: str) -> pd.DataFrame:
    """Reported differences between AV-Master and every other reported method (AV-Master
    minus method, points, per setting), marked ``≈`` where smaller than the measured noise
    (:func:`noise`): a gap that resampling the test questions alone could produce."""
    reported = load_reported(table)
    if not len(reported) or table not in BENCHMARKS:
        return pd.DataFrame()
    cols = [c for c in metric_columns(table) if c in reported]
    level = noise(measured, table)
    rows = {}
    # only v2.0's settings (train/test split) are conditions; other tables list venues there
    by = reported["setting"] if table == "music_avqa_v2" else pd.Series("", reported.index)
    for setting, group in reported.groupby(by, sort=False):
        paper = group[group["method"] == PAPER_METHOD]
        if paper.empty:
            continue
        for _, row in group[group["method"] != PAPER_METHOD].iterrows():
            cells = []
            for c in cols:
                d = float(paper[c].iloc[0]) - float(row[c])
                mark = f"{NOISE_MARK} " if pd.notna(level[c]) and abs(d) < level[c] else ""
                cells.append("-" if pd.isna(d) else f"{mark}{d:+.2f}")
            rows[f"{row['method']} ({setting})" if setting else row["method"]] = cells
    out = pd.DataFrame.from_dict(rows, orient="index", columns=cols)
    out.index.name = "method"
    return out


def forest(measured: pd.DataFrame, table: str, title: str = "") -> list[Any]:
    """One forest plot per column group (:func:`column_groups`): per column, every reported
    method as a point and every measured result with its 95 % interval (and ±std over seeds as
    a thicker bar). Returns the matplotlib figures."""
    import matplotlib.pyplot as plt

    reported = load_reported(table) if table != DEMO else pd.DataFrame()
    ours = measured[measured["dataset"] == table] if len(measured) else measured
    figures = []
    for group, cols in column_groups(table).items():
        names = [r["method"] + (f" ({r['setting']})" if table == "music_avqa_v2" else "")
                 for _, r in reported.iterrows()]
        names += [f"{MEASURED_PREFIX} {label}" for label in ours.get("label", [])]
        if not names:
            continue
        fig, axes = plt.subplots(1, len(cols), sharey=True, squeeze=False, layout="constrained",
                                 figsize=(
            FOREST_LABEL_WIDTH + FOREST_PANEL_WIDTH * len(cols), max(CHART_HEIGHT / 2,
                                                FOREST_ROW_HEIGHT * (len(names) + 2))))
        for ax, c in zip(axes[0], cols, strict=True):
            y = 0
            for _, r in reported.iterrows():
                ax.plot([r.get(c, float("nan"))], [y], "o", mfc="none", color="0.4")
                y += 1
            for _, r in ours.iterrows():
                acc, lo, hi = (r.get(k, float("nan")) for k in (c, f"{LOW_PREFIX}{c}",
                                                                 f"{HIGH_PREFIX}{c}"))
                if pd.notna(lo):
                    ax.errorbar([acc], [y], xerr=[[acc - lo], [hi - acc]], fmt="s", color="C3",
                                capsize=3)
                std = r.get(f"{STD_PREFIX}{c}", float("nan"))
                if pd.notna(std):
                    ax.plot([acc - std, acc + std], [y, y], color="C0", lw=4, alpha=0.6)
                ax.plot([acc], [y], "s", color="C3")
                y += 1
            ax.set_title(c, fontsize="small")
            ax.set_xlabel("accuracy (%)")
            ax.grid(axis="x", alpha=0.3)
        axes[0][0].set_yticks(range(len(names)))
        axes[0][0].set_yticklabels(names, fontsize="small")
        axes[0][0].invert_yaxis()
        fig.suptitle(f"{title}: {group}" if title else group)
        figures.append(fig)
    return figures


@dataclass
class NoiseSection:
    """Measured results with their intervals, the reported gaps within that noise, and one
    forest plot per column group."""

    title: str
    note: str
    frame: pd.DataFrame
    gaps: pd.DataFrame
    figures: list[Any]


def noise_section(table: str, measured: pd.DataFrame, chart: bool = True) -> NoiseSection:
    """Intervals, reported gaps inside the measured noise and, when something is measured,
    forest plots of one benchmark."""
    title = (DEMO_TITLE if table == DEMO else BENCHMARKS[table].title) + ": intervals"
    level = noise(measured, table)
    gap = gaps(measured, table)
    ours = bool(len(measured) and (measured["dataset"] == table).any())
    if level.notna().any():
        marked = int(gap.apply(lambda s: s.str.startswith(NOISE_MARK)).to_numpy().sum()) if len(
            gap) else 0
        note = (f"95 % intervals of the measured results (exact binomial; pooled for means over "
                f"seeds). Measured noise (largest interval half-width): avg ±"
                f"{level.get('avg', float('nan')):.2f} points. {marked} reported gap(s) between "
                f"{PAPER_METHOD} and another method are smaller than that ({NOISE_MARK}): the "
                "test questions alone could produce them.")
    elif ours:
        note = ("The measured results here carry no interval (files written by an earlier "
                "version: evaluate again), so no reported gap is weighed against the noise.")
    else:
        note = "Nothing measured here: no interval to weigh the reported gaps against."
    figures = forest(measured, table, title.split(":")[0]) if chart and ours else []
    return NoiseSection(title, note, with_intervals(measured, table), gap, figures)


def show_noise(sec: NoiseSection) -> None:
    """Display a :class:`NoiseSection` in a notebook."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    display(Markdown(f"### {sec.title}\n\n{sec.note}"))
    if len(sec.frame.columns):
        display(sec.frame)
    if len(sec.gaps):
        display(Markdown(f"Reported {PAPER_METHOD} minus each method (points); "
                         f"{NOISE_MARK}: inside the measured noise."))
        display(sec.gaps)
    for fig in sec.figures:
        display(fig)
        plt.close(fig)
