"""Audio-visual key fusion (Eq. 3).

::

    F_c  = SAB(concat_seq(F_a, F_v, F_t^w))                       [S = 2T + L, D]
    O_a  = SAB(F_c + sum_n alpha_{s,n} Linear(~F_a)_n)            [S, D]
    F_fu = max_seq(Linear(concat_feat(O_a, O_v, F_c)))            [D]

Choices where the paper's shapes do not close:

- ``Linear(~F_a) + F_c`` adds an ``[N, D]`` template set to an ``[S, D]`` sequence. We align the
  templates to each F_c position: position s receives the attention-weighted sum over the N
  templates, ``alpha_{s,n} = softmax_n(<F_c[s], t_n> / sqrt(D))`` (this is the "sum over the
  template sequence"); the SAB then runs over the S positions, so O_a keeps F_c's sequence and can
  be concatenated feature-wise with F_c. Summing inside the alignment rather than after a per
  (s, n) SAB keeps the cost at one S-token SAB per modality instead of S*N tokens.
- The final max is over the sequence (the paper's prose says "feature dimension"; only the
  sequence gives the stated ``[1, D]``).

Padded question tokens are masked as keys in every attention and excluded from the max.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avmaster.models.blocks import SAB, cpu_attention_backend, masked_max


def align(templates: Tensor, seq: Tensor) -> Tensor:
    """For each ``seq [B, S, D]`` position, the softmax(dot)-weighted sum of ``templates
    [B, N, D]`` -> ``[B, S, D]``."""
    with cpu_attention_backend(seq):
        return F.scaled_dot_product_attention(seq, templates, templates)


class KeyFusion(nn.Module):
    """Eq. 3: fuses audio, visual, word tokens and the focus templates into ``F_fu [B, D]``."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.context = SAB(dim, heads, ff_mult, dropout)
        self.proj_audio = nn.Linear(dim, dim)
        self.proj_visual = nn.Linear(dim, dim)
        self.refine_audio = SAB(dim, heads, ff_mult, dropout)
        self.refine_visual = SAB(dim, heads, ff_mult, dropout)
        self.out = nn.Linear(dim * 3, dim)

    def forward(
        self,
        audio: Tensor,
        visual: Tensor,
        words: Tensor,
        word_mask: Tensor,
        focus_audio: Tensor,
        focus_visual: Tensor,
    ) -> Tensor:
        """``audio, visual [B, T, D]``, ``words [B, L, D]`` with ``word_mask [B, L]``,
        ``focus_* [B, N, D]`` -> ``F_fu [B, D]``."""
        tokens = torch.cat((audio, visual, words), dim=1)
        av_mask = word_mask.new_ones(audio.shape[0], audio.shape[1] + visual.shape[1])
        mask = torch.cat((av_mask, word_mask), dim=1)
        ctx = self.context(tokens, mask)
        o_a = self.refine_audio(ctx + align(self.proj_audio(focus_audio), ctx), mask)
        o_v = self.refine_visual(ctx + align(self.proj_visual(focus_visual), ctx), mask)
        return masked_max(self.out(torch.cat((o_a, o_v, ctx), dim=-1)), mask)

