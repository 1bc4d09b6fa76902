"""Deferred weight gradients for a recurrence that applies the same linear layers T times.

Plain autograd computes a linear layer's weight gradient at every use: T GEMMs reducing over
the few rows of one step (2B x N in the focus recurrence), plus T accumulations. Here each use
hands its input and output gradient to a buffer in the backward pass, and ``dW = G^T X``,
``db = sum(G)`` are computed in one GEMM per :data:`FLUSH_ROWS` rows (all T x rows at once when
they are fewer); the sum is returned once every use has been back-propagated.
The sum is the same (only the order of floating-point additions differs); input gradients are
unchanged. Used by :meth:`avmaster.models.focus.FocusStep.scan` through :func:`deferred_linears`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avmaster.models.amp import autocast_dtype, no_autocast

FLUSH_ROWS = 1024
"""Rows of buffered uses reduced in one GEMM: large enough for full GEMM speed, small enough
that the buffered inputs and gradients add little memory (the rest waits in the autograd graph
anyway)."""


class _Sink:
    """Input and output gradient of the uses of one weight, filled during a backward pass and
    reduced into the gradient every :data:`FLUSH_ROWS` rows.

    Inputs are kept detached and dropped once used, so the sink never closes a reference
    cycle through the autograd graph (which Python's collector could not free).
    """

    def __init__(self, dtype: torch.dtype, bias: bool) -> None:
        self.dtype, self.bias, self.rows = dtype, bias, 0
        self.pairs: list[tuple[Tensor, Tensor]] = []
        self.grad_w: Tensor | None = None
        self.grad_b: Tensor | None = None

    def add(self, x: Tensor, grad: Tensor) -> None:
        self.pairs.append((x.detach().reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])))
        self.rows += self.pairs[-1][0].shape[0]
        if self.rows >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.pairs:
            return
        x = torch.cat([x for x, _ in self.pairs])
        g = torch.cat([g for _, g in self.pairs])
        self.pairs, self.rows = [], 0
        grad_w = torch.mm(g.t(), x.to(g.dtype)).to(self.dtype)
        self.grad_w = grad_w if self.grad_w is None else self.grad_w.add_(grad_w)
        if self.bias:
            grad_b = g.sum(dim=0, dtype=self.dtype)
            self.grad_b = grad_b if self.grad_b is None else self.grad_b.add_(grad_b)

    def take(self) -> tuple[Tensor | None, Tensor | None]:
        """The gradients of all uses so far; the sink is empty afterwards."""
        self.flush()
        grads = self.grad_w, self.grad_b
        self.grad_w = self.grad_b = None
        return grads


class _Gather(torch.autograd.Function):
    """Identity on ``(weight, bias)``; its backward runs after all uses (autograd's ordering)
    and returns the gradient of all of them at once."""

    @staticmethod
    def forward(ctx, weight: Tensor, bias: Tensor | None, sink: _Sink):  # type: ignore[override]
        ctx.sink = sink
        ctx.set_materialize_grads(False)
        return weight.view_as(weight), None if bias is None else bias.view_as(bias)

    @staticmethod
    def backward(ctx, *_unused: Tensor | None):  # type: ignore[override]
        return *ctx.sink.take(), None


class _LinearNoWeightGrad(torch.autograd.Function):
    """``x W^T + b`` whose backward returns the input gradient only and hands the output
    gradient to the sink."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None,  # type: ignore[override]
                sink: _Sink) -> Tensor:
        ctx.sink = sink
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        ctx.sink.add(x, grad)
        grad_x = grad.matmul(weight) if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None


class DeferrableLinear(nn.Linear):
    """An ``nn.Linear`` (same parameters and state-dict names) whose weight gradient can be
    deferred while :func:`deferred_linears` is active; a plain linear layer otherwise."""

    _deferred: tuple[Tensor, Tensor | None, _Sink] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self._deferred is None or torch.compiler.is_compiling():
            return F.linear(x, self.weight, self.bias)
        weight, bias, sink = self._deferred
        with no_autocast(x.device.type):  # cast as autocast would
            return _LinearNoWeightGrad.apply(x.to(weight.dtype), weight, bias, sink)


def make_deferrable(module: nn.Module) -> None:
    """Turn every ``nn.Linear`` inside ``module`` into a :class:`DeferrableLinear` in place
    (parameters, their values and names are kept; no random numbers are drawn)."""
    for sub in module.modules():
        if type(sub) is nn.Linear:
            sub.__class__ = DeferrableLinear


@contextlib.contextmanager
def deferred_linears(module: nn.Module) -> Iterator[None]:
    """Within the block, the :class:`DeferrableLinear` layers of ``module`` defer their weight
    gradients (only when autograd records and the weight needs a gradient)."""
    layers = [
        m for m in module.modules()
        if isinstance(m, DeferrableLinear) and m.weight.requires_grad and torch.is_grad_enabled()
    ]
    for layer in layers:
        sink = _Sink(layer.weight.dtype, layer.bias is not None)
        weight, bias = _Gather.apply(layer.weight, layer.bias, sink)
        dtype = autocast_dtype(weight.device.type)
        if dtype is not None:  # cast once for all uses, as autocast would
            weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
        layer._deferred = (weight, bias, sink)
    try:
        yield
    finally:
        for layer in layers:
            layer._deferred = None
