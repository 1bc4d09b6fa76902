"""AV-Master losses: answer cross-entropy (Eq. 5, 7) and dual-path contrastive loss (Eq. 6).

``L = qa * L_qa + visual * L_v^p + audio * L_a^p + contrastive * L_c``; a term whose weight is 0
or whose path is ablated is neither computed nor logged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from avmaster.data.vocab import NO_LABEL
from avmaster.models.avmaster import AVMasterOutput
from avmaster.models.config import LossConfig, to_dataclass


def answer_loss(logits: Tensor, label: Tensor, ignore_index: int = NO_LABEL) -> Tensor:
    """Cross-entropy over answers, averaged over labels != ``ignore_index``.

    A batch whose labels are all ignored gives 0 (with a graph), never NaN.
    """
    valid = label != ignore_index
    total = F.cross_entropy(logits.float(), label, ignore_index=ignore_index, reduction="sum")
    return total / valid.sum().clamp_min(1)


def dual_path_contrastive_loss(fused: Tensor, preferences: Sequence[Tensor], tau: float) -> Tensor:
    """Eq. 6 with in-batch negatives.

    ``fused [B, D]`` (F_fu); ``preferences``: the paths' F^p ``[B, T, D]`` (or already pooled
    ``[B, D]``). With ``s_j(i, k) = cos(F_fu(i), mean_T F^p_j(k)) / tau``::

        pos_i = sum_j exp s_j(i, i);  neg_i = sum_j sum_{k != i} exp s_j(i, k)
        L_c   = mean_i -log(pos_i / (pos_i + neg_i))

    computed in log space.
    """
    f = F.normalize(fused.float(), dim=-1)
    pooled = [p.float().mean(dim=1) if p.dim() == 3 else p.float() for p in preferences]
    prefs = F.normalize(torch.stack(pooled), dim=-1)  # [J, B, D]
    sims = torch.einsum("id,jkd->jik", f, prefs) / tau  # [J, B(i), B(k)]
    pos = torch.logsumexp(sims.diagonal(dim1=1, dim2=2), dim=0)  # [B]
    every = torch.logsumexp(rearrange(sims, "j i k -> i (j k)"), dim=-1)  # [B]
    return (every - pos).mean()


class AVMasterLoss(nn.Module):
    """Weighted sum of the losses available in an :class:`AVMasterOutput`.

    Returns ``{"loss": total, "qa": ..., "audio": ..., "visual": ..., "contrastive": ...}`` with
    only the computed terms (unweighted) besides the weighted total.
    """

    def __init__(self, cfg: LossConfig | None = None):
        super().__init__()
        self.cfg = to_dataclass(LossConfig, cfg)

    def forward(self, out: AVMasterOutput, label: Tensor) -> dict[str, Tensor]:
        c = self.cfg
        terms: dict[str, Tensor] = {}
        weights: dict[str, float] = {}
        for name, logits, w in (
            ("qa", out.logits, c.qa),
            ("audio", out.audio_logits, c.audio),
            ("visual", out.visual_logits, c.visual),
        ):
            if logits is not None and w:
                terms[name], weights[name] = answer_loss(logits, label), w
        if out.fused is not None and out.preferences and c.contrastive:
            terms["contrastive"] = dual_path_contrastive_loss(out.fused, out.preferences, c.tau)
            weights["contrastive"] = c.contrastive
        if not terms:
            raise ValueError("no loss term is active: check the loss weights and model paths")
        total = sum(weights[k] * v for k, v in terms.items())
        return {"loss": total, **terms}
