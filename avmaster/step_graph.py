"""The training step's forward, losses and backward recorded once as a CUDA graph and replayed.

On a GPU a training step of AV-Master issues about 9,500 small kernels, 138 per second of video
in the focus recurrence alone, and a host launches them one at a time: at the paper's sizes the
host, not the GPU, sets the pace. Replaying a recorded graph launches them all at once. The
optimiser step stays outside the graph (fused Adam, a few kernels), so the learning-rate
schedule, gradient clipping, checkpoints and Lightning's step counting work as in eager training.

How a run uses it (:class:`StepGraph`): the first :data:`WARMUP` batches run eagerly on a side
stream, as the CUDA graph documentation asks; the next is recorded with the gradients unset, so
that the recorded backward writes them rather than adding to them; every later batch of the
same shapes is copied into the recorded inputs and the graph is replayed. A batch of other
shapes (an epoch's last, smaller batch) runs eagerly into the same gradient tensors, zeroed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import torch
from torch import Tensor, nn

WARMUP = 3  # eager steps before recording (the CUDA graph documentation's whole-network example)


class Recorder(Protocol):
    """Records a function once and replays it."""

    def record(self, fn: Callable[[], None]) -> None: ...

    def replay(self) -> None: ...

    def side_stream(self) -> contextlib.AbstractContextManager: ...


class CUDARecorder:
    """:class:`Recorder` on ``torch.cuda.CUDAGraph``. Recording refuses unsafe CUDA calls of
    its own thread only (``thread_local``), so a data loader's pinning thread may go on."""

    def __init__(self) -> None:
        self.graph = torch.cuda.CUDAGraph()
        self.stream = torch.cuda.Stream()

    def record(self, fn: Callable[[], None]) -> None:
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            fn()

    def replay(self) -> None:
        self.graph.replay()

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        """Run on a stream of its own, after and before the current stream's work."""
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            yield
        torch.cuda.current_stream().wait_stream(self.stream)


def _shapes(batch: Mapping[str, object]) -> dict[str, tuple]:
    return {k: (v.shape, v.dtype, v.device) for k, v in batch.items() if isinstance(v, Tensor)}


class StepGraph:
    """``step(batch) -> losses``: forward, ``loss_fn`` and backward of ``model`` for a batch,
    eager for the first ``warmup`` batches, then recorded once (``recorder``) and replayed.

    ``loss_fn(model, batch)`` returns the losses dict (``"loss"``: the total); a step returns
    them detached (after a replay, copies of the recorded outputs). After a step the trainable
    parameters' ``.grad`` hold the batch's gradients; the caller runs the optimiser step and
    must not zero them (the next step overwrites them).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Mapping], dict],
                 recorder: Callable[[], Recorder] = CUDARecorder, warmup: int = WARMUP):
        self.model, self.loss_fn, self.warmup = model, loss_fn, warmup
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.recorder = recorder()
        self.recorded = False
        self.inputs: dict[str, Tensor] = {}  # the recorded step reads these
        self.shapes: dict[str, tuple] = {}
        self.losses: dict[str, Tensor] = {}  # and writes these
        self.grads: list[Tensor | None] = []  # and these
        self.eager_steps = 0  # before recording
        self.replays = 0
        self.eager_after = 0  # batches of other shapes, after recording

    def __call__(self, batch: Mapping[str, object]) -> dict[str, Tensor]:
        if not self.recorded and self.eager_steps < self.warmup:
            self.eager_steps += 1
            for p in self.params:
                p.grad = None
            with self.recorder.side_stream():
                return self._detached(self._forward_backward(batch))
        if not self.recorded:
            self._record(batch)
        elif _shapes(batch) != self.shapes:
            self.eager_after += 1
            self._point_grads(zero=True)
            return self._detached(self._forward_backward(batch))
        self._point_grads(zero=False)
        for k, v in self.inputs.items():
            v.copy_(batch[k], non_blocking=True)  # type: ignore[arg-type]
        self.recorder.replay()
        self.replays += 1
        return {k: v.clone() for k, v in self.losses.items()}

    def _forward_backward(self, batch: Mapping[str, object]) -> dict[str, Tensor]:
        losses = self.loss_fn(self.model, batch)
        device = losses["loss"].device.type
        with torch.autocast(device, enabled=False):  # backward outside autocast, as Lightning's
            losses["loss"].backward()
        return losses

    def _record(self, batch: Mapping[str, object]) -> None:
        """Record the step on a copy of ``batch`` (the recorded inputs)."""
        self.inputs = {k: v.clone() for k, v in batch.items() if isinstance(v, Tensor)}
        self.shapes = _shapes(self.inputs)
        recorded = {**batch, **self.inputs}
        for p in self.params:
            p.grad = None  # so that the recorded backward writes the gradients

        def step() -> None:
            self.losses = self._detached(self._forward_backward(recorded))

        try:
            self.recorder.record(step)
        except RuntimeError as e:
            raise RuntimeError(f"recording the training step as a CUDA graph failed ({e}); "
                               "train without it: cuda_graph=false") from e
        self.recorded = True
        self.grads = [p.grad for p in self.params]

    def _point_grads(self, zero: bool) -> None:
        """Each parameter's ``.grad`` is the recorded backward's output (``zero``: zeroed for an
        eager backward to add into)."""
        for p, g in zip(self.params, self.grads, strict=True):
            if p.grad is not g:
                p.grad = g
            if zero and g is not None:
                g.zero_()

    @staticmethod
    def _detached(losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.detach() for k, v in losses.items()}
