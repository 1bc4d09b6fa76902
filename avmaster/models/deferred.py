"""Deferred weight gradients for a recurrence that applies the same linear layers T times.

Plain autograd computes a linear layer's weight gradient at every use: T GEMMs reducing over
the few rows of one step (2B x N in the focus recurrence), plus T accumulations. Here each use
keeps its input and, in the backward pass, its output gradient; once every use has been
back-propagated, ``dW = G^T X`` and ``db = sum(G)`` are computed in one GEMM over all T x rows.
The sum is the same (only the order of floating-point additions differs); input gradients are
unchanged. Used by :meth:`avmaster.models.focus.FocusStep.scan` through :func:`deferred_linears`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Sink:
    """Inputs and output gradients of every use of one weight within one forward pass."""

    def __init__(self) -> None:
        self.inputs: list[Tensor] = []
        self.grads: dict[int, Tensor] = {}  # by use: a retained graph's rerun overwrites


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
        sink: _Sink = ctx.sink
        uses = sorted(sink.grads)
        if not uses:
            return None, None, None
        x = torch.cat([sink.inputs[i].reshape(-1, sink.inputs[i].shape[-1]) for i in uses])
        g = torch.cat([sink.grads[i].reshape(-1, sink.grads[i].shape[-1]) for i in uses])
        grad_w = torch.mm(g.t(), x.to(g.dtype))
        grad_b = g.sum(dim=0) if ctx.needs_input_grad[1] else None
        return grad_w, grad_b, None


class _LinearNoWeightGrad(torch.autograd.Function):
    """``x W^T + b`` whose backward returns the input gradient only and hands the output
    gradient to the sink."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None,  # type: ignore[override]
                sink: _Sink) -> Tensor:
        ctx.sink, ctx.use = sink, len(sink.inputs)
        sink.inputs.append(x)
        ctx.save_for_backward(weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        ctx.sink.grads[ctx.use] = grad
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
        with torch.autocast(x.device.type, enabled=False):  # cast as autocast would
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
        sink = _Sink()
        weight, bias = _Gather.apply(layer.weight, layer.bias, sink)
        device = weight.device.type
        if torch.is_autocast_enabled(device):  # cast once for all uses, as autocast would
            dtype = torch.get_autocast_dtype(device)
            weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
        layer._deferred = (weight, bias, sink)
    try:
        yield
    finally:
        for layer in layers:
            layer._deferred = None
