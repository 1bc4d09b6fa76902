import csv
import json
import math
from pathlib import Path

import pytest
import torch
from helpers import ddp_metric_data

from avmaster.data.annotations import load_annotations
from avmaster.data.tables import TABLES, get_table
from avmaster.metrics import GroupedAccuracy, write_results

REFERENCE = Path(__file__).resolve().parents[1] / "avmaster" / "reference"


def _columns_of(csv_name: str) -> list[str]:
    with open(REFERENCE / csv_name) as f:
        return next(csv.reader(f))[2:]


def test_column_order_matches_papers():
    assert [c for c, _ in TABLES["music_avqa"].columns] == _columns_of(
        "reported_music_avqa_table2.csv")
    assert [c for c, _ in TABLES["music_avqa_r"].columns] == _columns_of(
        "reported_music_avqa_r_table3.csv")
    v2 = [c for c, _ in TABLES["music_avqa_v2"].columns]
    assert [c for c in v2 if c.endswith("avg")] == ["a_avg", "v_avg", "av_avg", "avg"]


def test_per_type_counts_and_averages(fixtures):
    spec = get_table("music_avqa")
    records = load_annotations(fixtures / "music_avqa_test_sample.json").records
    group = torch.tensor([spec.group_of(r) for r in records])
    label = torch.arange(len(records)) % 5
    pred = label.clone()
    pred[::2] = -7  # every other question wrong
    pred[group == 0] = label[group == 0]  # all Audio/Counting right
    m = GroupedAccuracy(spec)
    m.update(pred, label, group)
    counts = m.counts()
    assert counts == {"a_count": 12, "a_comp": 12, "a_avg": 24, "v_count": 12, "v_local": 12,
                      "v_avg": 24, "av_exist": 12, "av_count": 12, "av_local": 12,
                      "av_comp": 12, "av_temp": 12, "av_avg": 60, "avg": 108}
    acc = m.compute()
    right = (pred == label)
    assert acc["a_count"] == 100.0
    assert acc["avg"] == pytest.approx(100 * right.float().mean().item())
    audio = group < 2
    assert acc["a_avg"] == pytest.approx(100 * right[audio].float().mean().item())


def test_unknown_label_is_always_wrong():
    spec = get_table("avqa")
    m = GroupedAccuracy(spec)
    m.update(torch.tensor([-1, 0, 1]), torch.tensor([-1, 0, -1]), torch.tensor([0, 0, 1]))
    acc = m.compute()
    assert acc["which"] == 50.0 and acc["come_from"] == 0.0 and acc["avg"] == pytest.approx(100 / 3)
    assert acc["why"] != acc["why"]  # NaN: no question of that type


def test_head_tail_groups(fixtures):
    from avmaster.data.annotations import assign_head_tail

    spec = get_table("music_avqa_r")
    records = assign_head_tail(load_annotations(fixtures / "music_avqa_test_sample.json").records)
    groups = [spec.group_of(r) for r in records]
    for r, g in zip(records, groups, strict=True):
        assert spec.groups[g] == f"{r.type_key}/{r.extra['head_tail']}"


def test_write_results(tmp_path):
    spec = get_table("music_avqa")
    acc = {c: 50.0 for c, _ in spec.columns}
    js, md = write_results(tmp_path / "res", spec, acc, dict.fromkeys(acc, 1))
    text = md.read_text()
    assert text.splitlines()[0].startswith("| method | a_count | a_comp | a_avg |")
    assert "| AV-Master (ours) | 50.00 |" in text and js.exists()



def test_a_column_without_questions_is_null_in_json_and_nan_when_read(tmp_path):
    """JSON has no NaN: an accuracy over no questions is written as null, shown as "-", and
    read back as NaN."""
    from avmaster import reports

    spec = get_table("music_avqa")
    metric = GroupedAccuracy(spec)
    metric.update(torch.tensor([1, 2]), torch.tensor([1, 0]), torch.tensor([0, 0]))
    acc, counts = metric.compute(), metric.counts()
    empty = [c for c, n in counts.items() if n == 0]
    assert empty and all(math.isnan(acc[c]) for c in empty)
    js, md = write_results(tmp_path / "res" / "results_music_avqa", spec, acc, counts)

    payload = json.loads(js.read_text(), parse_constant=pytest.fail)
    assert all(payload["accuracy"][c] is None and payload["interval"][c] == [None, None]
               for c in empty)
    assert "nan" not in md.read_text().lower()
    row = reports.load_measured(tmp_path / "res").iloc[0]
    assert all(math.isnan(row[c]) and math.isnan(row[f"{reports.LOW_PREFIX}{c}"])
               for c in empty)
    assert row[spec.columns[0][0]] == pytest.approx(acc[spec.columns[0][0]])


@pytest.mark.slow
def test_ddp_two_processes_equal_one(ddp_run: Path):
    """The per-type tables of two DDP ranks holding uneven shards equal one process's."""
    single = GroupedAccuracy(get_table("music_avqa"))
    single.update(*ddp_metric_data())
    expected = single.compute()
    for rank in (0, 1):
        got = json.loads((ddp_run / f"metrics{rank}.json").read_text())
        assert got == pytest.approx(expected, nan_ok=True)
