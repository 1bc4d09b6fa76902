"""Combining the paths' answer distributions into one (paper Table XIII; Table XII drops votes).

With ``p_j`` the softmax of path j (TDPP, audio preference, visual preference)::

    ADD    p = sum_j p_j / J            (the paper's default; argmax as sum-then-argmax)
    MUL    p = prod_j p_j, renormalised (computed as softmax of sum_j log p_j)
    W-ADD  p = sum_j w_j p_j,  w_j = s_j / sum_k s_k

The paper's W-ADD "first computes a weighted ratio based on the initial overall scores" of the
paths: we read s_j as path j's own overall accuracy when it answers alone (measured by
``avmaster eval`` on the validation split), so a path that answers better alone weighs more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from avmaster.errors import ConfigError
from avmaster.models.config import InferenceConfig

TINY = 1e-12  # floor of a probability before its log (MUL)


def top_answers(probs: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` most probable answers of ``probs [..., C]``: ``(values, indices)``, ties in
    index order, so the first is always ``argmax`` (``topk`` leaves the order of ties open,
    which under bf16, where equal probabilities are common, can name another answer)."""
    values, indices = probs.sort(dim=-1, descending=True, stable=True)
    return values[..., :k], indices[..., :k]


def combine(probs: Mapping[str, Tensor], cfg: InferenceConfig | None = None) -> Tensor:
    """``probs``: ``{path: [B, C] softmax}`` -> ``[B, C]`` under ``cfg`` (drop, rule, weights).

    Dropping every path the model has is an error: nothing would answer."""
    cfg = cfg or InferenceConfig()
    kept = {k: v.float() for k, v in probs.items() if k not in cfg.drop}
    if not kept:
        raise ConfigError(f"inference.drop={cfg.drop} leaves none of the model's paths "
                          f"{sorted(probs)} to answer")
    stacked = torch.stack(list(kept.values()))
    if cfg.combine == "add":
        return stacked.mean(dim=0)
    if cfg.combine == "mul":
        return stacked.clamp_min(TINY).log().sum(dim=0).softmax(dim=-1)
    weights = path_weights(kept, cfg.weights)
    return torch.einsum("j,jbc->bc", weights.to(stacked), stacked)


def path_weights(paths: Iterable[str], scores: Mapping[str, float]) -> Tensor:
    """W-ADD weights ``s_j / sum_k s_k`` of ``paths`` from ``scores``; every path needs one."""
    names = list(paths)
    missing = [n for n in names if n not in scores]
    if missing:
        raise ConfigError(f"inference.combine=w_add needs inference.weights for {missing}: set "
                          "inference.weights.PATH=SCORE for each, or run variants=table13, "
                          "which measures them on data.val")
    s = torch.tensor([float(scores[n]) for n in names])
    if (s < 0).any() or s.sum() <= 0:
        raise ConfigError(f"inference.weights must be >= 0 and not all 0, got {dict(scores)}")
    return s / s.sum()
