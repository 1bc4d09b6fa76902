"""Transformer building blocks with key-padding masks.

Masks are boolean ``[B, L]`` with True = real token. Blocks are post-norm (attention, residual,
LayerNorm, FFN, residual, LayerNorm), so every block output has unit LayerNorm scale, which keeps
the 60-step focus recurrence bounded.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel


def cpu_attention_backend(q: Tensor, few_tokens: bool = False) -> contextlib.AbstractContextManager:
    """SDPA's math backend on CPU where it is the faster kernel, else the default. Measured at 2
    threads: for several bf16/fp16 queries (8 x 8 heads of 64, T = 60) the CPU flash kernel's
    fwd+bwd takes 3.6-7.6 ms where the math backend takes 1.6-3.5 ms; in fp32 and for one query
    flash is faster, except over a handful of tokens (``few_tokens``, e.g. the 8 focus
    templates), where the flash kernel's blocking costs several times more in any dtype."""
    low = q.dtype in (torch.bfloat16, torch.float16)
    if q.device.type == "cpu" and (few_tokens or (low and q.shape[-2] > 1)):
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def masked_max(x: Tensor, mask: Tensor | None, dim: int = 1) -> Tensor:
    """Max over ``dim`` of ``x [B, L, D]`` ignoring positions where ``mask [B, L]`` is False."""
    if mask is not None:
        x = x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min)
    return x.amax(dim=dim)


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU mask is drawn from 31-bit random integers: an element is kept
    when its integer is at least ``round(p * 2^31)``, so P(keep) = 1 - p to within 2^-31.
    Forward and backward take about 60 % of ``F.dropout``'s time on CPU, whose per-element
    Bernoulli draws cost ~5 ns. Other devices use ``F.dropout``."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or x.device.type != "cpu" or not 0 < self.p < 1:
            return super().forward(x)
        draws = torch.empty(x.shape, dtype=torch.int32, device=x.device).random_()
        mask = (draws >= round(self.p * 2**31)).to(x.dtype).mul_(1 / (1 - self.p))
        return x * mask


class FFN(nn.Module):
    """Position-wise feed-forward: Linear, GELU, dropout, Linear."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, dim * mult), nn.GELU(), Dropout(dropout), nn.Linear(dim * mult, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLP(nn.Module):
    """Two-layer perceptron ``dim_in -> dim_hidden -> dim_out`` with GELU."""

    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_in, dim_hidden), nn.GELU(), nn.Linear(dim_hidden, dim_out)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Multi-head attention on ``F.scaled_dot_product_attention``.

    Self-attention uses one fused QKV projection; cross-attention a query and a fused KV
    projection. ``mask [B, Lk]`` marks the keys that may be attended.
    """

    def __init__(self, dim: int, heads: int, cross: bool = False):
        super().__init__()
        self.heads = heads
        self.cross = cross
        if cross:
            self.to_q = nn.Linear(dim, dim)
            self.to_kv = nn.Linear(dim, dim * 2)
        else:
            self.to_qkv = nn.Linear(dim, dim * 3)
        self.to_out = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None
    ) -> Tensor:
        if self.cross:
            if context is None:
                raise ValueError("cross-attention needs a context")
            q, (k, v) = self.to_q(x), self.to_kv(context).chunk(2, dim=-1)
        else:
            q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        attn_mask = None if mask is None else rearrange(mask, "b j -> b 1 1 j")
        with cpu_attention_backend(q):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class SAB(nn.Module):
    """Self-attention block: ``x = LN(x + SA(x)); x = LN(x + FFN(x))``."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.attn = Attention(dim, heads)
        self.ff = FFN(dim, ff_mult, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.norm1(x + self.drop(self.attn(x, mask=mask)))
        return self.norm2(x + self.drop(self.ff(x)))


class CAB(nn.Module):
    """Cross-attention block: ``x = LN(x + CA(x, ctx)); x = LN(x + FFN(x))``."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.attn = Attention(dim, heads, cross=True)
        self.ff = FFN(dim, ff_mult, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.norm1(x + self.drop(self.attn(x, context, mask)))
        return self.norm2(x + self.drop(self.ff(x)))


class SingleKeyCAB(nn.Module):
    """A :class:`CAB` whose context is one token.

    With a single key the attention softmax is identically 1, so cross-attention equals
    ``to_out(to_v(context))`` for every query, exactly. Query/key projections would receive no
    gradient and are therefore not created; :meth:`project` maps all contexts at once so a
    recurrence can precompute them.
    """

    def __init__(self, dim: int, ff_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.ff = FFN(dim, ff_mult, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = Dropout(dropout)

    def project(self, context: Tensor) -> Tensor:
        """Attention output for each context token ``[..., D]`` (precomputable)."""
        return self.to_out(self.to_v(context))

    def forward(self, x: Tensor, projected: Tensor) -> Tensor:
        """``x [B, N, D]`` queries; ``projected [B, 1, D]`` = :meth:`project` of the context."""
        x = self.norm1(x + self.drop(projected))
        return self.norm2(x + self.drop(self.ff(x)))
