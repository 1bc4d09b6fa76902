"""Global preference activation path (GPAP, Eq. 4), one branch per modality.

::

    O^g = SAB(F) + CAB(query=F, key/value=F_t^w)     [T, D]
    F^p = MLP(O^g)                                   [T, D]

The SAB models the whole sequence globally; the CAB activates the seconds the question words
prefer (padded words are masked).
"""

from __future__ import annotations

from torch import Tensor, nn

from avmaster.models.blocks import CAB, MLP, SAB


class PreferenceActivation(nn.Module):
    """Eq. 4 for one modality: ``F [B, T, D]``, words ``[B, L, D]`` -> ``F^p [B, T, D]``."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.global_block = SAB(dim, heads, ff_mult, dropout)
        self.question_block = CAB(dim, heads, ff_mult, dropout)
        self.mlp = MLP(dim, dim * ff_mult, dim)

    def forward(self, x: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        return self.mlp(self.global_block(x) + self.question_block(x, words, word_mask))
