"""Training with the step recorded as a CUDA graph (``cuda_graph=true``, avmaster/step_graph.py).

On a CPU the recording is stood in for by :class:`RunningRecorder`, which runs the recorded
function again at each replay: that checks everything around the graph (warm-up, the recorded
inputs, the gradients the optimiser reads, batches of other shapes, Lightning's hooks, the
learning-rate schedule). The real CUDA graph is checked where a GPU is present.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import lightning as L
import pytest
import torch
from helpers import DIMS, SMALL, ListData, make_batch, tiny_overrides
from test_datamodule import _module

from avmaster.cli import main
from avmaster.lightning_module import AVMasterModule, build_optimizer
from avmaster.losses import AVMasterLoss
from avmaster.models import AVMaster, OptimConfig
from avmaster.step_graph import WARMUP, CUDARecorder, StepGraph

C = 7


class RunningRecorder:
    """Records a function by running it once (a capture creates the outputs and gradients)
    and replays it by running it again into the same gradient tensors, zeroed first (a replayed
    backward writes them)."""

    def __init__(self, model: torch.nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.fn: Callable[[], None] | None = None

    def record(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        fn()

    def replay(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()
        assert self.fn is not None
        self.fn()

    def side_stream(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


def _batches(device: str = "cpu") -> list[dict[str, torch.Tensor]]:
    """Eight batches of one shape but the sixth (smaller, as an epoch's last)."""
    sizes = [3, 3, 3, 3, 3, 2, 3, 3]
    return [{k: v.to(device) for k, v in make_batch(b, lengths=(4, 2, 3)[:b], seed=i).items()}
            for i, b in enumerate(sizes)]


def _train(graphed: bool, device: str = "cpu", recorder=None):
    torch.manual_seed(0)
    model = AVMaster(SMALL, DIMS, C).to(device).train()
    criterion = AVMasterLoss()
    opt, _ = build_optimizer(model.parameters(), OptimConfig())
    step = (StepGraph(model, lambda m, b: criterion(m(b), b["label"]),
                      recorder or (lambda: RunningRecorder(model))) if graphed else None)
    losses = []
    for batch in _batches(device):
        if step is None:
            opt.zero_grad(set_to_none=True)
            out = criterion(model(batch), batch["label"])
            out["loss"].backward()
        else:
            out = step(batch)
        opt.step()
        losses.append(out["loss"].item())
    return model, losses, step


def test_step_graph_trains_as_eager_steps(single_thread) -> None:
    eager, eager_losses, _ = _train(False)
    graphed, graph_losses, step = _train(True)
    assert graph_losses == eager_losses
    for (name, a), b in zip(eager.named_parameters(), graphed.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert (step.eager_steps, step.replays, step.eager_after) == (WARMUP, 4, 1)
    # the optimiser reads the recorded gradient tensors, also after the smaller batch
    assert all(p.grad is g for p, g in zip(step.params, step.grads, strict=True))


def test_lightning_fit_with_step_graph_equals_plain_fit(single_thread) -> None:
    """Two epochs with validation, gradient clipping and a learning rate that changes after
    the first epoch: the recorded step trains the same weights as Lightning's own loop."""
    batches = _batches()

    def fit(graphed: bool) -> AVMasterModule:
        torch.manual_seed(0)
        module = AVMasterModule(SMALL, optim_cfg={"lr_step_size": 1, "lr_gamma": 0.5},
                                dims=DIMS, num_answers=C)
        if graphed:
            module.use_step_graph(lambda: RunningRecorder(module.model))
        trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, gradient_clip_val=0.05)
        trainer.fit(module, datamodule=ListData(batches))
        return module

    plain, graphed = fit(False), fit(True)
    for (name, a), b in zip(plain.named_parameters(), graphed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    step = graphed.step_graph
    assert (step.eager_steps, step.replays, step.eager_after) == (WARMUP, 11, 2)


def test_a_failed_recording_says_how_to_train_without_it(single_thread) -> None:
    class Failing(RunningRecorder):
        def record(self, fn: Callable[[], None]) -> None:
            raise RuntimeError("operation not permitted when stream is capturing")

    torch.manual_seed(0)
    model = AVMaster(SMALL, DIMS, C)
    criterion = AVMasterLoss()
    step = StepGraph(model, lambda m, b: criterion(m(b), b["label"]), lambda: Failing(model),
                     warmup=0)
    with pytest.raises(RuntimeError, match=r"not permitted.*cuda_graph=false"):
        step(_batches()[0])


def test_cuda_graph_needs_one_cuda_device(tmp_path, capsys) -> None:
    assert main(["train", *tiny_overrides(tmp_path), "cuda_graph=true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cuda_graph=true needs one CUDA device" in err[0]
    assert "trainer.devices=1" in err[0]


def test_split_padding_gives_every_batch_one_shape(tmp_path, fixtures) -> None:
    """``data.question_padding=split`` (which ``cuda_graph=true`` sets) pads the question
    tokens to the split's longest question; the model's outputs do not change."""
    dm = _module(tmp_path / "split", fixtures, question_padding="split")
    dm.setup("fit")
    shapes = {tuple(b["question_tokens"].shape[1:]) for b in dm.train_dataloader()}
    longest = int(dm.dataset("train").text.lengths(dm.dataset("train")._text_rows).max())
    assert shapes == {(longest, 12)}
    per_batch = _module(tmp_path / "batch", fixtures)
    per_batch.setup("fit")
    torch.manual_seed(0)
    model = AVMaster(SMALL, per_batch.dims, 42).eval()
    short = per_batch.dataset("train").__getitems__(list(range(5)))
    long = dm.dataset("train").__getitems__(list(range(5)))
    assert long["question_tokens"].shape[1] > short["question_tokens"].shape[1]
    with torch.no_grad():
        a, b = (model({k: v.float() if v.is_floating_point() else v for k, v in x.items()})
                for x in (short, long))
    for x, y in zip(a.path_logits, b.path_logits, strict=True):
        torch.testing.assert_close(x, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_trains_as_eager_steps() -> None:
    eager, eager_losses, _ = _train(False, "cuda")
    graphed, graph_losses, step = _train(True, "cuda", CUDARecorder)
    assert step.replays == 4
    torch.testing.assert_close(torch.tensor(graph_losses), torch.tensor(eager_losses))
    for (name, a), b in zip(eager.named_parameters(), graphed.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_under_bf16_autocast_follows_the_weights() -> None:
    """Recorded inside bf16 autocast with its cast cache on, one autocast region per step (as
    Lightning's bf16-mixed runs a training step), with Adam steps between: the last replay's
    losses and gradients are an eager step's for the same (updated) weights and batch, so no
    bf16 copy of a weight is kept from the recording."""
    torch.manual_seed(0)
    model = AVMaster(SMALL, DIMS, C).cuda().train()
    criterion = AVMasterLoss()
    opt, _ = build_optimizer(model.parameters(), OptimConfig(lr=1e-2))
    step = StepGraph(model, lambda m, b: criterion(m(b), b["label"]), CUDARecorder)
    batches = [b for b in _batches("cuda") if b["label"].shape[0] == 3]
    for batch in batches[:-1]:  # warm-up, recording, replays
        with torch.autocast("cuda", dtype=torch.bfloat16):
            step(batch)
        opt.step()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        replayed = step(batches[-1])
    assert step.replays == len(batches) - WARMUP  # the recording step replays too
    graph_grads = [g.clone() for g in step.grads]
    for p in step.params:
        p.grad = None
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = criterion(model(batches[-1]), batches[-1]["label"])
    eager["loss"].backward()
    for k, v in eager.items():
        torch.testing.assert_close(replayed[k], v.detach(), msg=k)
    for p, g in zip(step.params, graph_grads, strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-2, atol=1e-5)
