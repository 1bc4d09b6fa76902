"""Answer decoders (Eq. 5) and answer heads.

A decoder reads a memory of features with the question sentence as its query: ``depth`` CAB
layers whose key/value is ``[query; memory]`` (the query token sees itself and the features, as a
CLS token would; this also keeps attention non-trivial when the memory is the single fused token
F_fu), then ``Linear -> GELU -> LayerNorm`` gives the decoder state ``h [B, D]``.

Heads map ``h`` to scores: :class:`ClassHead` over the C answers of the vocabulary, or
:class:`OptionHead` over the K options of a multiple-choice question (bilinear
``<W h, o_k> / sqrt(D)`` with projected option sentence features ``o_k``).
"""

from __future__ import annotations

import torch
from einops import einsum, rearrange
from torch import Tensor, nn

from avmaster.models.blocks import CAB


class AnswerDecoder(nn.Module):
    """Question-queried decoder: ``query [B, D]``, ``memory [B, M, D]`` -> state ``[B, D]``."""

    def __init__(self, dim: int, heads: int, depth: int, ff_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(CAB(dim, heads, ff_mult, dropout) for _ in range(depth))
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))

    def forward(self, query: Tensor, memory: Tensor, mask: Tensor | None = None) -> Tensor:
        q = rearrange(query, "b d -> b 1 d")
        if mask is not None:
            mask = torch.cat((mask.new_ones(mask.shape[0], 1), mask), dim=1)
        for layer in self.layers:
            q = layer(q, torch.cat((q, memory), dim=1), mask)
        return self.out(rearrange(q, "b 1 d -> b d"))


class ClassHead(nn.Module):
    """Answer-vocabulary logits ``[B, C]``."""

    def __init__(self, dim: int, num_answers: int):
        super().__init__()
        self.proj = nn.Linear(dim, num_answers)

    def forward(self, h: Tensor, options: Tensor | None = None) -> Tensor:
        return self.proj(h)


class OptionHead(nn.Module):
    """Multiple-choice logits ``[B, K]``: ``<W h, o_k> / sqrt(D)`` for options ``o [B, K, D]``."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.scale = dim**-0.5

    def forward(self, h: Tensor, options: Tensor | None = None) -> Tensor:
        if options is None:
            raise ValueError("a multiple-choice model needs batch['options'] [B, K, Dq]")
        return einsum(self.proj(h), options, "b d, b k d -> b k") * self.scale


class PathDecoder(nn.Module):
    """A decoder and its head: ``(query, memory, mask, options) -> logits``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        depth: int,
        ff_mult: int,
        dropout: float,
        num_answers: int,
        multiple_choice: bool,
    ):
        super().__init__()
        self.decoder = AnswerDecoder(dim, heads, depth, ff_mult, dropout)
        self.head = OptionHead(dim) if multiple_choice else ClassHead(dim, num_answers)

    def forward(
        self,
        query: Tensor,
        memory: Tensor,
        mask: Tensor | None = None,
        options: Tensor | None = None,
    ) -> Tensor:
        return self.head(self.decoder(query, memory, mask), options)
