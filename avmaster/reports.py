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

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

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
KEY_COLUMNS = ("source", "dataset", "data", "table", "method", "setting", "ablation", "label")
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
ABLATION_TABLES = ("VII ", "VIII ", "IX ", "X ", "XI ", "XII ")

# Ablation presets (configs/ablations/) -> the rows (table, setting) of reported_other.csv.
ABLATION_ROWS: dict[str, tuple[tuple[str, str], ...]] = {
    "full": (("VII ablation", "full"), ("VIII loss ablation", "all four"),
             ("IX template length", "8"), ("X weight sharing", "attention shared (default)"),
             ("XI encoders", "CLIP-L + VGGish"), ("XII preference enhancement", "full")),
    "wo_all": (("VII ablation", "w/o ALL"),),
    "wo_avfc": (("VII ablation", "w/o AVFC"),),
    "wo_dpcl": (("VII ablation", "w/o DPCL"),),
    "wo_gpap": (("VII ablation", "w/o GPAP"),),
    "wo_tdpp": (("VII ablation", "w/o TDPP"),),
    "loss_qa": (("VIII loss ablation", "L_qa only"),),
    "loss_qa_c": (("VIII loss ablation", "L_qa+L_c"),),
    "loss_qa_c_a": (("VIII loss ablation", "L_qa+L_c+L_a^p"),),
    "loss_qa_c_v": (("VIII loss ablation", "L_qa+L_c+L_v^p"),),
    "loss_qa_a_v": (("VIII loss ablation", "L_qa+L_a^p+L_v^p"),),
    "template_16": (("IX template length", "16"),),
    "template_12": (("IX template length", "12"),),
    "template_4": (("IX template length", "4"),),
    "template_2": (("IX template length", "2"),),
    "share_none": (("X weight sharing", "none"),),
    "share_bias": (("X weight sharing", "bias shared"),),
    "share_both": (("X weight sharing", "both shared"),),
    "encoder_clip_b": (("XI encoders", "CLIP-B + VGGish"),),
    "encoder_clip_l224": (("XI encoders", "CLIP-L + VGGish"),),
    "wo_ape": (("XII preference enhancement", "w/o APE"),),
    "wo_vpe": (("XII preference enhancement", "w/o VPE"),),
    "wo_avpe": (("XII preference enhancement", "w/o AVPE"),),
}
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


def infer_ablations(config: dict[str, Any]) -> list[str]:
    """The ablation presets a run's saved ``config.json`` matches (``['full']`` for none):
    its ``model``/``loss`` switches that presets set, compared with the defaults, and its
    feature files for the encoder presets. Identical presets (``wo_gpap``/``wo_avpe``) all
    match."""
    from omegaconf import OmegaConf

    from avmaster.config import PRESET_KINDS, load_config, to_dict
    from avmaster.paths import config_dirs

    default = to_dict(load_config())
    presets: dict[str, Any] = {}
    for d in config_dirs():
        for f in sorted((d / PRESET_KINDS["ablation"]).glob("*.yaml")):
            presets.setdefault(f.stem, OmegaConf.to_container(OmegaConf.load(f)))

    def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            key = f"{prefix}{k}"
            out.update(leaves(v, key + ".") if isinstance(v, dict) else {key: v})
        return out

    flat_cfg, flat_default = leaves(config), leaves(default)
    flat_presets = {name: leaves(p) for name, p in presets.items() if isinstance(p, dict)}
    switches = {k for p in flat_presets.values() for k in p if not k.startswith("data.")}
    diff = {k: flat_cfg.get(k) for k in switches if flat_cfg.get(k) != flat_default.get(k)}
    found = []
    for name, p in flat_presets.items():
        p_switch = {k: v for k, v in p.items() if not k.startswith("data.")}
        p_data = {k: v for k, v in p.items() if k.startswith("data.")}
        own = {k: v for k, v in p_switch.items() if v != flat_default.get(k)}
        if p_data:
            if not diff and all(flat_cfg.get(k) == v for k, v in p_data.items()):
                found.append(name)
        elif own and own == diff:
            found.append(name)
    return found or (["full"] if not diff else [])


def _ablations_of(path: Path, payload: dict[str, Any]) -> list[str]:
    meta = payload.get("meta") or {}
    named = _as_list(meta.get("ablation"))
    if named:
        return named
    config = path.parent / "config.json"
    if config.exists():
        try:
            return infer_ablations(json.loads(config.read_text()))
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            log.warning("%s: cannot tell the run's ablation (%s)", config, e)
    return []


def _rows_of(path: Path, payload: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    meta = payload.get("meta") or {}
    table = str(payload.get("table", ""))
    data = str(meta.get("data", table))
    dataset = dataset_of(table, data)
    setting = _v2_setting(data, _as_list(meta.get("test"))) if table == "music_avqa_v2" else ""
    if "rows" in payload:  # several methods in one file (demo.json)
        named = meta.get("ablations") or {}
        rows = [(m, acc, _as_list(named.get(m))) for m, acc in payload["rows"].items()]
    else:
        rows = [(str(payload.get("method", "?")), payload.get("accuracy") or {},
                 _ablations_of(path, payload))]
    out = []
    for method, accuracy, ablations in rows:
        label = method
        if ablations and ablations != ["full"] and not payload.get("rows"):
            label += f" [{', '.join(ablations)}]"
        if setting:
            label += f" ({setting})"
        out.append({"source": str(path.relative_to(folder)), "dataset": dataset, "data": data,
                    "table": table, "method": method, "setting": setting,
                    "ablation": ",".join(ablations), "label": label,
                    **{k: float(v) if v is not None else float("nan")
                       for k, v in accuracy.items()}})
    return out


def load_measured(folder: Path | str | None = None) -> pd.DataFrame:
    """Every results file under ``folder`` (see :func:`results_folder`), one row per method:
    ``source`` (path under ``folder``), ``dataset`` (benchmark key or ``demo``), ``data``
    (data config name), ``table``, ``method``, ``setting``, ``ablation`` (preset names,
    comma-separated), ``label`` and the metric columns (%). Per-run files that a ``demo.json``
    already gathers (its ``meta.sources``) are not counted twice."""
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
    rows = [r for p, pl in payloads.items() if p.resolve() not in gathered
            for r in _rows_of(p, pl, folder)]
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
    """Rows (paper table, setting) of Tables VII-XII; columns ``reported`` and one
    ``measured (<data>)`` per dataset with ablation results (a run counts for every row its
    preset stands for; presets outside the paper's tables come last)."""
    rep = reported.set_index(list(ABLATION_INDEX))["avg"].astype(float)
    out = pd.DataFrame({REPORTED_PREFIX: rep})
    runs = measured[measured["ablation"].astype(bool)] if len(measured) else measured
    for data, group in (runs.groupby("data", sort=True) if len(runs) else []):
        col = f"{MEASURED_PREFIX} ({data})"
        for _, row in group.iterrows():
            for preset in row["ablation"].split(","):
                keys = ABLATION_ROWS.get(preset, ((NOT_IN_PAPER, f"{preset}: {row['label']}"),))
                for key in keys:
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
    """Paper Tables VII-XII (overall accuracy) next to every measured ablation run."""
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
    figure = plot(frame, "Ablations (paper Tables VII-XII): avg accuracy") if chart else None
    return Section("Ablations (paper Tables VII-XII)", note, frame, figure)


def show(sec: Section) -> None:
    """Display a section in a notebook: title, note, table, chart."""
    from IPython.display import Markdown, display

    display(Markdown(f"## {sec.title}\n\n{sec.note}"))
    display(sec.frame.round(2))
    if sec.figure is not None:
        display(sec.figure)
        import matplotlib.pyplot as plt

        plt.close(sec.figure)
