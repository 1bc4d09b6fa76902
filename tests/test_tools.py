"""The benchmark scripts in tools/ run (at tiny sizes) and print their figures."""

from __future__ import annotations

import dataclasses
import json
import runpy
import sys
from pathlib import Path

import pytest
from helpers import DIMS, REPO, SMALL, C, make_batch

from avmaster.lightning_module import AVMasterModule


def run_tool(name: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``python tools/<name> <args>``, in this process; fails on a non-zero exit status."""
    monkeypatch.setattr(sys, "argv", [name, *args])
    try:
        runpy.run_path(str(REPO / "tools" / name), run_name="__main__")
    except SystemExit as done:
        assert done.code in (0, None), f"{name} exited with {done.code}"


def test_bench_train_prints_step_time_flops_and_memory(monkeypatch, capsys) -> None:
    run_tool("bench_train.py", ["--batch", "2", "--seconds", "3", "--dim", "16", "--set",
                                "heads=2", "--warmup", "0", "--steps", "1"], monkeypatch)
    out = capsys.readouterr().out
    assert "step_s=" in out and "gflop_per_s=" in out and "peak_mem_mb=" in out


def test_bench_train_counts_the_same_work_for_either_focus_scan(monkeypatch, capsys) -> None:
    """The manual scan's float32 weight gradients accumulate in place (``addmm_``), which
    FlopCounterMode does not count by itself: the work is the autograd scan's, so is the count."""
    counts = {}
    for scan in ("manual", "autograd"):
        # 20 seconds x 2 modalities x 2 videos x 8 templates: more rows than one gradient chunk
        run_tool("bench_train.py", ["--batch", "2", "--seconds", "20", "--dim", "16", "--set",
                                    "heads=2", f"focus_scan={scan}", "--warmup", "0", "--steps",
                                    "1", "--matmul-floor", "--repeats", "1"], monkeypatch)
        lines = capsys.readouterr().out.strip().splitlines()
        counts[scan] = dict(kv.split("=") for kv in lines[-2].split())["gflop"]
    assert float(counts["manual"]) == float(counts["autograd"]) > 0, counts


def test_bench_train_matmul_floor_counts_every_product(monkeypatch, capsys) -> None:
    run_tool("bench_train.py", ["--batch", "2", "--seconds", "3", "--dim", "16", "--set",
                                "heads=2", "--warmup", "0", "--steps", "1", "--matmul-floor",
                                "--repeats", "1", "--precision", "bf16-mixed"], monkeypatch)
    lines = capsys.readouterr().out.strip().splitlines()
    step = dict(kv.split("=") for kv in lines[-2].split())
    floor = dict(kv.split("=") for kv in lines[-1].split())
    # under bf16 every attention runs as matrix products, so the timer sees all counted work
    assert float(floor["matmul_gflop"]) == pytest.approx(float(step["gflop"]), rel=1e-3)
    assert float(floor["matmul_alone_s"]) > 0 and float(floor["matmul_in_step_s"]) > 0


def load_bench_train():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_train", REPO / "tools" / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_train"] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    return bench


def test_bench_train_counts_operator_calls(monkeypatch, capsys) -> None:
    import torch

    bench = load_bench_train()
    counter = bench.OpCounter()
    x = torch.randn(4, 3)
    with counter:
        y = (x.t() @ x).relu()  # mm, relu; t is a view
        _ = y.view(-1), torch.empty(3)  # neither counts
    assert counter.calls == 2
    run_tool("bench_train.py", ["--batch", "2", "--seconds", "3", "--dim", "16", "--set",
                                "heads=2", "--warmup", "0", "--steps", "1"], monkeypatch)
    fields = dict(kv.split("=") for kv in capsys.readouterr().out.split())
    assert fields["cuda_graph"] == "0" and int(fields["ops"]) > 100


def test_bench_train_cuda_graph_needs_cuda(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["bench_train.py", "--cuda-graph", "--device", "cpu"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "tools" / "bench_train.py"), run_name="__main__")
    assert done.value.code == 2
    assert "--cuda-graph needs --device cuda" in capsys.readouterr().err


def test_cuda_graph_step_equals_eager_steps() -> None:
    """The whole step replayed as a CUDA graph trains as eager steps do (runs where CUDA is)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    bench = load_bench_train()
    args = bench.parse_args(["--device", "cuda", "--cuda-graph", "--batch", "4", "--seconds",
                             "6", "--dim", "32", "--set", "heads=2"])
    diff, moved = bench.graph_difference(args, steps=3)
    assert moved > 0 and diff <= 1e-3 * moved


def test_graph_difference_tells_a_replay_that_trains_from_one_that_does_not(monkeypatch) -> None:
    """The check :func:`test_cuda_graph_step_equals_eager_steps` relies on, on any device: a
    stand-in for the graph that runs the real step gives no difference, one that skips it a
    difference of the order of the training's own change."""
    bench = load_bench_train()
    args = bench.parse_args(["--batch", "2", "--seconds", "3", "--dim", "16", "--set",
                             "heads=2"])

    def stand_in(trains: bool):
        def record(run):
            for _ in range(bench.GRAPH_WARMUP):
                run.step()
            return run.step if trains else (lambda: None)
        return record

    monkeypatch.setattr(bench, "record_graph", stand_in(True))
    diff, moved = bench.graph_difference(args, steps=2)
    assert moved > 0 and diff == 0
    monkeypatch.setattr(bench, "record_graph", stand_in(False))
    diff, moved = bench.graph_difference(args, steps=2)
    assert diff > 0.1 * moved


def test_matmul_timer_times_products_and_leaves_results_unchanged() -> None:
    import torch

    bench = load_bench_train()
    a, b, c = torch.randn(6, 5), torch.randn(5, 4), torch.randn(6, 4)
    out = torch.empty(6, 4)
    timer = bench.MatmulTimer(lambda: None, repeats=2)
    with timer:
        prod = a @ b
        acc = torch.addmm(c, a, b)
        torch.mm(a, b, out=out)
        batched = torch.bmm(a[None], b[None])
        _ = a.exp()  # not a product: not timed
    assert timer.flop == 4 * (2 * 6 * 5 * 4)
    assert timer.alone > 0 and timer.in_step > 0
    torch.testing.assert_close(prod, a @ b)
    torch.testing.assert_close(acc, c + a @ b)
    torch.testing.assert_close(out, a @ b)
    torch.testing.assert_close(batched[0], a @ b)


def test_bench_loader_prints_samples_per_second(monkeypatch, capsys) -> None:
    run_tool("bench_loader.py", ["--videos", "6", "--questions", "40", "--seconds", "3",
                                 "--batch", "4", "--batches", "2", "--workers", "0",
                                 "--preload", "1"], monkeypatch)
    assert "samples/s" in capsys.readouterr().out


def test_bench_extract_runs_every_stage(tmp_path: Path, monkeypatch, capsys) -> None:
    run_tool("bench_extract.py", ["--model", "avmaster-tiny", "--random-init", "--device",
                                  "cpu", "--workers", "0", "--n-videos", "1", "--seconds", "2",
                                  "--width", "64", "--height", "48", "--fps", "4",
                                  "--batch-size", "8", "--audio-batch-size", "8",
                                  "--encode-batches", "1", "--work", str(tmp_path)], monkeypatch)
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"decode", "encode", "end_to_end"} <= set(figures)
    assert figures["end_to_end"]["videos_s"] > 0


def test_bench_compare_prints_its_timing(monkeypatch, capsys) -> None:
    run_tool("bench_compare.py", ["--questions", "300", "--resamples", "50", "--repeats", "1"],
             monkeypatch)
    assert capsys.readouterr().out.strip()


def test_bench_import_prints_its_throughput(monkeypatch, capsys) -> None:
    run_tool("bench_import.py", ["--videos", "4", "--seconds", "3"], monkeypatch)
    assert capsys.readouterr().out.strip()


def test_temporal_toy_trains_each_variant(monkeypatch, capsys) -> None:
    run_tool("temporal_toy.py", ["--seconds", "4", "--gap", "1", "--steps", "2", "--batch", "4",
                                 "--dim", "16", "--train", "16", "--test", "8", "--variants",
                                 "full:none", "wo_tdpp:none"], monkeypatch)
    out = capsys.readouterr().out
    assert "full" in out and "wo_tdpp" in out


def test_focus_memory_on_a_checkpoint(tiny_run, monkeypatch, capsys) -> None:
    run_tool("focus_memory.py", ["--videos", "3", "--reinit", *tiny_run.overrides,
                                 f"ckpt={tiny_run.ckpt}"], monkeypatch)
    assert capsys.readouterr().out.strip()


def test_bench_fit_trains_without_validation_and_prints_throughput(monkeypatch, capsys,
                                                                    tmp_path) -> None:
    """``avmaster train`` on the synthetic dataset (no val or test split); the timed batches
    are the last ``--batches``; a second run reuses the dataset written under ``--work``."""
    monkeypatch.syspath_prepend(str(REPO / "tools"))
    args = ["--batch", "4", "--seconds", "3", "--dims", "8", "6", "8", "--videos", "6",
            "--warmup", "1", "--batches", "2", "--workers", "0", "--work", str(tmp_path),
            "--set", "model.dim=16", "model.heads=2"]
    for _ in range(2):
        run_tool("bench_fit.py", args, monkeypatch)
        fields = dict(kv.split("=", 1) for kv in capsys.readouterr().out.split()
                      if "=" in kv and not kv.startswith("model."))
        assert float(fields["samples_per_s"]) > 0 and fields["timed_batches"] == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["v6_q12_t3_8-6-8"]


def test_bench_fit_no_model_keeps_the_loop_and_drops_the_step(monkeypatch, capsys,
                                                              tmp_path) -> None:
    """``--no-model``: the first batch runs the real losses (their keys are logged as usual),
    later ones a loss of the batch alone whose backward reaches one parameter; it refuses
    ``cuda_graph=true``."""
    monkeypatch.syspath_prepend(str(REPO / "tools"))
    from bench_fit import NoModel

    module = AVMasterModule(SMALL, dims=dataclasses.asdict(DIMS), num_answers=C)
    real_keys = set(module._losses(module.model, make_batch()))
    callback = NoModel()
    callback.setup(None, module, "fit")
    for seed in range(2):
        batch = make_batch(seed=seed)
        losses = module._losses(module.model, batch)
        assert set(losses) == real_keys == set(callback.keys)
        assert losses["loss"].item() == pytest.approx(batch["visual"].mean().item())
    module.zero_grad(set_to_none=True)
    losses["loss"].backward()
    assert sum(p.grad is not None for p in module.parameters()) == 1

    args = ["--batch", "4", "--seconds", "3", "--dims", "8", "6", "8", "--videos", "6",
            "--warmup", "1", "--batches", "2", "--workers", "0", "--work", str(tmp_path),
            "--no-model", "--set", "model.dim=16", "model.heads=2"]
    run_tool("bench_fit.py", args, monkeypatch)
    assert " model=no " in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["bench_fit.py", *args, "cuda_graph=true"])
    with pytest.raises(SystemExit) as refused:
        runpy.run_path(str(REPO / "tools" / "bench_fit.py"), run_name="__main__")
    assert refused.value.code == 2 and "drop cuda_graph=true" in capsys.readouterr().err
