"""The focus recurrence (Eq. 2) over all T seconds as one autograd node with a written-out backward.

Same math as running :class:`~avmaster.models.focus.FocusStep` T times under autograd: each step
``tp1 = cls + F^k; tp2 = SAB2(SAB1(tp1) + bias) + bias; cls = CAB(tp2, project(F^k))`` (and the
optional gated update). What changes is how it runs:

- one Python loop of plain tensor operations forward and one backward, instead of autograd
  recording every operation of every second (~900 operator calls per second of video);
- weights are cast once per call (and on CPU packed for oneDNN once, see :class:`_Linear`);
  each linear layer writes its inputs into one ``[T, ...]`` buffer and its output gradients
  into a chunk buffer, and its weight gradient is one GEMM per :data:`CHUNK_ROWS` rows of
  seconds (not one small GEMM per second);
- the N x N attention (N ~ 8 templates) runs in float32 on keys-first scores, which on a CPU is
  faster than low-precision batched products of that size and a softmax over a last dim of 8.

Without autocast everything runs in the parameters' dtype. Under autocast the linear layers'
products run in the autocast dtype; LayerNorm, residual sums, the state and the attention core
stay float32 (SDPA under autocast runs attention in the low precision, so this is slightly more
accurate). ``tests/test_model.py`` checks it against the autograd scan: equal to 1e-10 in
float64, to rounding in float32, as accurate under bf16. Activations are freed during the
backward pass: one backward per forward (``focus_scan=autograd`` for more).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avmaster.models.amp import autocast_dtype, no_autocast

CHUNK_ROWS = 2048
"""Rows (seconds x M x N) whose weight gradients are reduced in one GEMM when the compute dtype
is bf16/fp16: each chunk's low-precision result is added to the float32 gradient (~1 ns per
element on a CPU), so chunks should be few; the chunk's output-gradient buffers take ~30 MB at
dim 512."""
CHUNK_ROWS_FP32 = 512
"""The same in float32, where the sum accumulates in place (``addmm``): small chunks keep the
buffers small (15 MB at dim 512) at little cost in GEMM speed."""
LINEARS = ("sab1.attn.to_qkv", "sab1.attn.to_out", "sab1.ff.net.0", "sab1.ff.net.3",
           "sab2.attn.to_qkv", "sab2.attn.to_out", "sab2.ff.net.0", "sab2.ff.net.3",
           "cab.ff.net.0", "cab.ff.net.3")
NORMS = ("sab1.norm1", "sab1.norm2", "sab2.norm1", "sab2.norm2", "cab.norm1", "cab.norm2")


def step_parameters(step: nn.Module) -> list[Tensor]:
    """The focus step's parameters in the order :class:`_Scan` takes them: each linear layer's
    weight and bias (:data:`LINEARS`), then each LayerNorm's weight and bias (:data:`NORMS`)."""
    mods = dict(step.named_modules())
    return [t for name in (*LINEARS, *NORMS) for t in (mods[name].weight, mods[name].bias)]


@dataclass
class _Ctx:
    """Dtype of the linear layers' products, attention heads, LayerNorm eps, and ``acc``: the
    parameters' dtype (float32 unless the model was cast), which the state, the sums, the
    gradients and the attention core use."""

    dtype: torch.dtype
    heads: int
    eps: float
    acc: torch.dtype = torch.float32


class _Linear:
    """One linear layer of the step: its weight cast once, its input at every second (``x [T or
    1, M, N, in]``, written in place by the step) and, in the backward pass, its output gradient
    for a chunk of seconds (``g [S, M, N, out]``), reduced into the weight gradient per chunk.

    On CPU the weight is also handed to oneDNN in its packed layout once per call
    (:func:`_pack`): a matrix product of the step's size (128 rows at batch 8) then runs 1.5-2x
    faster in bf16 and 5-10 % in float32 than ``F.linear``, which repacks it at every call."""

    def __init__(self, weight: Tensor, bias: Tensor, dtype: torch.dtype, slots: int,
                 rows: tuple[int, int]):
        self.w, self.b, self.acc = weight.to(dtype), bias.to(dtype), weight.dtype
        self.rows = rows[0] * rows[1]
        self.x = weight.new_empty(slots, *rows, weight.shape[1], dtype=dtype)
        self.packed = _pack(self.w, self.rows)
        self.packed_t: Tensor | None = None
        self.g: Tensor | None = None
        self.grad_w: Tensor | None = None
        self.grad_b: Tensor | None = None

    def __call__(self, k: int) -> Tensor:
        """The layer's output at slot ``k`` of its input buffer."""
        x = self.x[k]
        if self.packed is None:
            return F.linear(x, self.w, self.b)
        out = torch.ops.mkldnn._linear_pointwise(x.view(-1, x.shape[-1]), self.packed, self.b,
                                                 "none", [], "")
        return out.view(*x.shape[:-1], -1)

    def start_backward(self, chunk: int, rows: tuple[int, int]) -> None:
        """Allocate the output-gradient chunk buffer and pack ``W^T`` (for :meth:`input_grad`)."""
        self.g = self.x.new_empty(chunk, *rows, self.w.shape[0])
        if self.packed is not None:
            self.packed_t = _pack(self.w.t().contiguous(), self.rows)

    def input_grad(self, g: Tensor) -> Tensor:
        """``g @ W`` for an output gradient ``g [..., out]`` in the compute dtype."""
        g2 = g.reshape(-1, g.shape[-1])
        if self.packed_t is None:
            return torch.mm(g2, self.w).view(*g.shape[:-1], -1)
        out = torch.ops.mkldnn._linear_pointwise(g2, self.packed_t, None, "none", [], "")
        return out.view(*g.shape[:-1], -1)

    def flush(self, t0: int, t1: int) -> None:
        """Add ``sum_k g_k^T x_k`` over seconds ``t0 <= k < t1`` (chunk slots ``0..t1-t0-1``)."""
        g = self.g[: t1 - t0].flatten(0, -2)
        x = self.x[t0:t1].flatten(0, -2)
        grad_b = g.sum(dim=0).to(self.acc)  # a bf16 sum accumulates in float32 inside
        if self.grad_w is None:
            self.grad_w, self.grad_b = torch.mm(g.t(), x).to(self.acc), grad_b
        elif g.dtype == self.acc:  # in place: out-of-place addmm first copies grad_w
            self.grad_w.addmm_(g.t(), x)
            self.grad_b += grad_b
        else:
            self.grad_w += torch.mm(g.t(), x)
            self.grad_b += grad_b


def _dense(t: Tensor, dtype: torch.dtype) -> Tensor:
    """A contiguous copy of ``t`` in ``dtype`` (cast and layout in one copy)."""
    return torch.empty(t.shape, dtype=dtype, device=t.device).copy_(t)


def _pack(weight: Tensor, rows: int) -> Tensor | None:
    """``weight [out, in]`` in oneDNN's packed layout for ``rows``-row products, or ``None``
    where that is not available or not measured (not a CPU, neither float32 nor bf16, a build
    without oneDNN), which means ``F.linear``."""
    if (weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.bfloat16)
            or not torch.backends.mkldnn.is_available()):
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight, rows)
    except (AttributeError, RuntimeError):  # an op this build of PyTorch does not have
        return None


def _ln(x: Tensor, w: Tensor, b: Tensor, eps: float, saved: list | None) -> Tensor:
    out, mean, rstd = torch.native_layer_norm(x, (x.shape[-1],), w, b, eps)
    if saved is not None:
        saved.append((x, mean, rstd))
    return out


def _ln_backward(g: Tensor, saved: tuple, w: Tensor, b: Tensor, acc: list[Tensor]) -> Tensor:
    """LayerNorm backward; adds the weight and bias gradients to ``acc[0]``, ``acc[1]``."""
    x, mean, rstd = saved
    gx, gw, gb = torch.ops.aten.native_layer_norm_backward(g, x, (x.shape[-1],), mean, rstd, w,
                                                           b, [True, True, True])
    acc[0] += gw
    acc[1] += gb
    return gx


def _ffn(x: Tensor, l1: _Linear, l2: _Linear, k: int, saved: list | None) -> Tensor:
    """``x + FFN(x)`` (before its LayerNorm) for float32 ``x [M, N, D]`` at slot ``k``."""
    l1.x[k].copy_(x)
    f1 = l1(k)
    torch.ops.aten.gelu.out(f1, out=l2.x[k])
    if saved is not None:
        saved.append(f1)
    return x + l2(k)


def _ffn_backward(g: Tensor, f1: Tensor, l1: _Linear, l2: _Linear, s: int) -> Tensor:
    l2.g[s].copy_(g)
    torch.ops.aten.gelu_backward.grad_input(l2.input_grad(l2.g[s]), f1, grad_input=l1.g[s])
    return g + l1.input_grad(l1.g[s])


def _attention(x: Tensor, qkv_l: _Linear, out_l: _Linear, k: int, c: _Ctx, saved: list | None
               ) -> Tensor:
    """``x + SA(x)`` (fused QKV); the attention core in float32 on keys-first scores
    ``[M*H, N_k, N_q]`` (see the module docstring)."""
    m, n, d = x.shape
    h = c.heads
    qkv_l.x[k].copy_(x)
    qkv = qkv_l(k).view(m, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
    qkv = _dense(qkv, c.acc).view(3, m * h, n, d // h)
    q, key, v = qkv.unbind(0)
    attn_t = torch.softmax(torch.bmm(key, q.transpose(1, 2)).mul_((d // h) ** -0.5), dim=1)
    o = torch.bmm(attn_t.transpose(1, 2), v)
    out_l.x[k].view(m, n, h, d // h).copy_(o.view(m, h, n, d // h).transpose(1, 2))
    if saved is not None:
        saved.append((qkv, attn_t))
    return x + out_l(k)


def _attention_backward(g: Tensor, saved: tuple, qkv_l: _Linear, out_l: _Linear, s: int,
                        c: _Ctx) -> Tensor:
    qkv, attn_t = saved
    m, n, d = g.shape
    h = c.heads
    out_l.g[s].copy_(g)
    go = out_l.input_grad(out_l.g[s]).view(m, n, h, d // h).transpose(1, 2)
    go = _dense(go, c.acc).view(m * h, n, d // h)
    q, key, v = qkv.unbind(0)
    g3 = torch.empty_like(qkv)
    torch.bmm(attn_t, go, out=g3[2])
    gs_t = torch._softmax_backward_data(torch.bmm(v, go.transpose(1, 2)), attn_t, 1, c.acc)
    gs_t.mul_((d // h) ** -0.5)
    torch.bmm(gs_t.transpose(1, 2), key, out=g3[0])
    torch.bmm(gs_t, q, out=g3[1])
    qkv_l.g[s].view(m, n, 3, h, d // h).permute(2, 0, 3, 1, 4).copy_(g3.view(3, m, h, n, -1))
    return g + qkv_l.input_grad(qkv_l.g[s])


def _sab(x: Tensor, lin: list[_Linear], norms: list[Tensor], k: int, c: _Ctx,
         saved: list | None) -> Tensor:
    """SAB: ``LN(y + FFN(y))`` with ``y = LN(x + SA(x))``."""
    x = _ln(_attention(x, lin[0], lin[1], k, c, saved), norms[0], norms[1], c.eps, saved)
    return _ln(_ffn(x, lin[2], lin[3], k, saved), norms[2], norms[3], c.eps, saved)


def _sab_backward(g: Tensor, saved: list, lin: list[_Linear], norms: list[Tensor],
                  acc: list[Tensor], s: int, c: _Ctx) -> Tensor:
    attn, ln1, f1, ln2 = saved
    g = _ln_backward(g, ln2, norms[2], norms[3], acc[2:4])
    g = _ffn_backward(g, f1, lin[2], lin[3], s)
    g = _ln_backward(g, ln1, norms[0], norms[1], acc[0:2])
    return _attention_backward(g, attn, lin[0], lin[1], s, c)


def _step(cls: Tensor, frame: Tensor, attn: Tensor, bias: Tensor, rate: Tensor | None,
          lin: list[_Linear], norms: list[Tensor], k: int, c: _Ctx, saved: list | None
          ) -> Tensor:
    """One second of Eq. 2 (see :class:`~avmaster.models.focus.FocusStep`); ``k``: the slot of
    the linear layers' input buffers."""
    tp1 = cls + frame
    tp2 = _sab(_sab(tp1, lin[0:4], norms[0:4], k, c, saved) + bias, lin[4:8], norms[4:8], k, c,
               saved) + bias
    x = _ln(tp2 + attn, norms[8], norms[9], c.eps, saved)
    new = _ln(_ffn(x, lin[8], lin[9], k, saved), norms[10], norms[11], c.eps, saved)
    if rate is None:
        return new
    if saved is not None:
        saved.append((cls, new))
    return cls + rate * (new - cls)


def _step_backward(g: Tensor, saved: list, rate: Tensor | None, lin: list[_Linear],
                   norms: list[Tensor], acc: list[Tensor], s: int, c: _Ctx
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`_step` backwards from ``g`` = dL/dcls^k: ``(dL/dcls^{k-1}, dL/dtp1, dL/dtp2,
    dL/d(SAB1(tp1) + bias))``. Summed over the templates, dL/dtp1 is the gradient of ``F^k`` and
    dL/dtp2 that of ``project(F^k)``; the last two are the step's bias gradient. ``s``: the
    chunk slot."""
    g_direct = None
    if rate is not None:
        g_direct, g = g * (1 - rate), g * rate
    g = _ln_backward(g, saved[10], norms[10], norms[11], acc[10:12])
    g = _ffn_backward(g, saved[9], lin[8], lin[9], s)
    g_tp2 = _ln_backward(g, saved[8], norms[8], norms[9], acc[8:10])
    g_mid = _sab_backward(g_tp2, saved[4:8], lin[4:8], norms[4:8], acc[4:8], s, c)
    g_tp1 = _sab_backward(g_mid, saved[0:4], lin[0:4], norms[0:4], acc[0:4], s, c)
    g_cls = g_tp1 if g_direct is None else g_tp1 + g_direct
    return g_cls, g_tp1, g_tp2, g_mid


def _forward(x: Tensor, attn: Tensor, cls: Tensor, bias: Tensor, gate: Tensor | None,
             params: list[Tensor], c: _Ctx, saved: list | None
             ) -> tuple[Tensor, Tensor, list[_Linear]]:
    """The recurrence; with ``saved`` (a list) each step's activations are appended to it and
    the linear layers keep their inputs of all T seconds."""
    steps = x.shape[1]
    slots = steps if saved is not None else 1
    pairs = zip(params[0 : 2 * len(LINEARS) : 2], params[1 : 2 * len(LINEARS) : 2], strict=True)
    lin = [_Linear(w, b, c.dtype, slots, cls.shape[:2]) for w, b in pairs]
    norms = list(params[2 * len(LINEARS):])
    rate = None if gate is None else torch.sigmoid(gate)
    moves = []  # ||cls^k - cls^{k-1}|| per step (not the stacked states: 16 MB at batch 8)
    for k in range(steps):
        step_saved = None if saved is None else []
        new = _step(cls, x[:, k : k + 1], attn[:, k : k + 1], bias, rate, lin, norms,
                    k if saved is not None else 0, c, step_saved)
        if saved is not None:
            saved.append(step_saved)
        moves.append(torch.linalg.vector_norm(new - cls, dim=-1))
        cls = new
    moves = torch.stack(moves, dim=-1).float()  # maps are float32, as the autograd scan's
    focus = moves / moves.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(moves.dtype).tiny)
    return cls, focus, lin


class _Scan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, attn: Tensor, cls: Tensor, bias: Tensor,  # type: ignore[override]
                gate: Tensor | None, c: _Ctx, *params: Tensor) -> tuple[Tensor, Tensor]:
        ctx.c, ctx.saved = c, []
        with no_autocast(x.device.type):
            out, focus, ctx.lin = _forward(x, attn, cls, bias, gate, list(params), c, ctx.saved)
        ctx.norms = params[2 * len(LINEARS):]
        ctx.meta = (x.dtype, attn.dtype, bias.shape, gate)
        ctx.mark_non_differentiable(focus)
        return out, focus

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor, _focus_grad: Tensor | None):  # type: ignore[override]
        if ctx.saved is None:
            raise RuntimeError(
                "model.focus_scan=manual frees its activations in its first backward pass; "
                "for retain_graph=True or gradients of gradients set model.focus_scan=autograd")
        c, lin, norms, saved = ctx.c, ctx.lin, ctx.norms, ctx.saved
        ctx.saved = ctx.lin = None  # freed as it goes, as autograd frees a node's tensors
        x_dtype, attn_dtype, bias_shape, gate = ctx.meta
        steps, rows = len(saved), grad.shape[0] * grad.shape[1]
        per_chunk = CHUNK_ROWS_FP32 if lin[0].x.element_size() >= 4 else CHUNK_ROWS
        chunk = min(steps, math.ceil(per_chunk / rows))
        for layer in lin:
            layer.start_backward(chunk, grad.shape[:2])
        acc = [torch.zeros_like(t, dtype=c.acc) for t in norms]
        g_bias = torch.zeros_like(grad, dtype=c.acc)
        g_rate = None if gate is None else torch.zeros_like(gate, dtype=c.acc)
        rate = None if gate is None else torch.sigmoid(gate)
        g_frames, g_attns = [], []
        g = grad.to(c.acc)
        with no_autocast(grad.device.type):
            for k in reversed(range(steps)):
                s, step_saved = k % chunk, saved.pop()
                if rate is not None:
                    prev, new = step_saved[-1]
                    g_rate += (g * (new - prev)).sum(dim=(0, 1))
                g, g_tp1, g_tp2, g_mid = _step_backward(g, step_saved, rate, lin, norms, acc,
                                                        s, c)
                g_frames.append(g_tp1.sum(dim=1, keepdim=True))
                g_attns.append(g_tp2.sum(dim=1, keepdim=True))
                g_bias += g_tp2
                g_bias += g_mid
                if s == 0:
                    for layer in lin:
                        layer.flush(k, min(k + chunk, steps))
        g_params: list[Tensor | None] = []
        for layer in lin:
            g_params += [layer.grad_w, layer.grad_b]
        g_x = torch.cat(g_frames[::-1], dim=1).to(x_dtype)
        g_attn = torch.cat(g_attns[::-1], dim=1).to(attn_dtype)
        g_gate = None if g_rate is None else g_rate * rate * (1 - rate)
        return g_x, g_attn, g, g_bias.sum_to_size(bias_shape), g_gate, None, *g_params, *acc


def scan(x: Tensor, attn: Tensor, cls: Tensor, bias: Tensor, gate: Tensor | None,
         step: nn.Module) -> tuple[Tensor, Tensor]:
    """Run Eq. 2 over ``x [M, T, D]`` (projected seconds; ``attn [M, T, D]``, their
    ``cab.project``) from ``cls [M, N, D]`` with ``bias [M or 1, N, D]``: the final templates
    ``[M, N, D]`` (in the parameters' dtype) and the focus map ``[M, N, T]``; ``gate``: the
    gated update's parameter or ``None``; ``step``: the :class:`~.focus.FocusStep`."""
    device = x.device.type
    params = step_parameters(step)
    acc = params[0].dtype
    low = autocast_dtype(device)
    dtype = acc if low is None else low
    c = _Ctx(dtype, step.sab1.attn.heads, step.sab1.norm1.eps, acc)
    cls = cls.to(acc)
    if torch.is_grad_enabled():
        return _Scan.apply(x, attn, cls, bias, gate, c, *params)
    with no_autocast(device):
        return _forward(x, attn, cls, bias, gate, params, c, None)[:2]
