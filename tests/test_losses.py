"""Losses of Eq. 5-7: answer cross-entropy with ignored labels, dual-path contrastive loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avmaster.data.vocab import NO_LABEL
from avmaster.losses import AVMasterLoss, answer_loss, dual_path_contrastive_loss
from avmaster.models import AVMasterOutput, LossConfig


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _mean_rows(rows: list[list[float]]) -> list[float]:
    return [sum(col) / len(rows) for col in zip(*rows, strict=True)]


def contrastive_by_hand(fused: torch.Tensor, prefs: list[torch.Tensor], tau: float) -> float:
    """Eq. 6 with explicit loops over samples i, modalities j and in-batch negatives k != i."""
    f = fused.tolist()
    pooled = [[_mean_rows(p[k].tolist()) for k in range(p.shape[0])] for p in prefs]
    n = len(f)
    total = 0.0
    for i in range(n):
        pos = sum(math.exp(_cos(f[i], pj[i]) / tau) for pj in pooled)
        neg = sum(math.exp(_cos(f[i], pj[k]) / tau) for pj in pooled for k in range(n) if k != i)
        total += -math.log(pos / (pos + neg))
    return total / n


def test_contrastive_matches_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    fused = torch.randn(4, 5, generator=g, dtype=torch.float64)
    audio = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    visual = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    for tau in (0.1, 0.5):
        got = dual_path_contrastive_loss(fused, [audio, visual], tau).item()
        assert got == pytest.approx(contrastive_by_hand(fused, [audio, visual], tau), rel=1e-5)
    # one preference path only (w/o APE or w/o VPE)
    got = dual_path_contrastive_loss(fused, [visual], 0.1).item()
    assert got == pytest.approx(contrastive_by_hand(fused, [visual], 0.1), rel=1e-5)


def test_contrastive_tiny_case_exact_values() -> None:
    """Two samples in 2-D where every cosine is 0 or +-1, so the loss has a closed form."""
    fused = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    audio = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # aligned with its own sample
    visual = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])  # aligned with the other sample
    tau = 0.5
    e = math.exp
    # sample 0: pos = e(1/tau) + e(0); neg = e(0) + e(1/tau); same for sample 1 by symmetry
    pos, neg = e(1 / tau) + e(0), e(0) + e(1 / tau)
    expected = -math.log(pos / (pos + neg))
    assert dual_path_contrastive_loss(fused, [audio, visual], tau).item() == pytest.approx(expected)
    # perfectly separated: audio and visual both match their own sample
    loss_aligned = dual_path_contrastive_loss(fused, [audio, audio], tau).item()
    assert loss_aligned < expected


def test_contrastive_single_sample_has_no_negatives() -> None:
    loss = dual_path_contrastive_loss(torch.randn(1, 8), [torch.randn(1, 3, 8)], 0.1)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_answer_loss_ignores_out_of_vocabulary_labels() -> None:
    logits = torch.randn(5, 7, requires_grad=True)
    label = torch.tensor([0, -1, 3, -1, 6])
    keep = label != NO_LABEL
    expected = F.cross_entropy(logits[keep], label[keep])
    assert answer_loss(logits, label).item() == pytest.approx(expected.item(), rel=1e-6)
    all_ignored = answer_loss(logits, torch.full((5,), -1))
    assert all_ignored.item() == 0.0 and torch.isfinite(all_ignored)
    all_ignored.backward()  # a graph exists and gives zero gradients, never NaN
    assert logits.grad is not None and torch.all(logits.grad == 0)


def _output(b: int = 4, c: int = 6, d: int = 8, t: int = 3, **drop: bool) -> AVMasterOutput:
    out = AVMasterOutput(
        logits=torch.randn(b, c),
        audio_logits=torch.randn(b, c),
        visual_logits=torch.randn(b, c),
        fused=torch.randn(b, d),
        audio_preference=torch.randn(b, t, d),
        visual_preference=torch.randn(b, t, d),
    )
    for name, gone in drop.items():
        if gone:
            setattr(out, name, None)
    return out


def test_total_loss_is_weighted_sum() -> None:
    torch.manual_seed(0)
    out, label = _output(), torch.tensor([0, 1, -1, 5])
    cfg = LossConfig(qa=1.0, audio=0.5, visual=0.25, contrastive=2.0, tau=0.1)
    losses = AVMasterLoss(cfg)(out, label)
    assert set(losses) == {"loss", "qa", "audio", "visual", "contrastive"}
    expected = (
        answer_loss(out.logits, label)
        + 0.5 * answer_loss(out.audio_logits, label)
        + 0.25 * answer_loss(out.visual_logits, label)
        + 2.0 * dual_path_contrastive_loss(out.fused, out.preferences, 0.1)
    )
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_zero_weight_and_missing_paths_are_skipped() -> None:
    label = torch.tensor([0, 1, 2, 3])
    no_dpcl = AVMasterLoss(LossConfig(contrastive=0.0))(_output(), label)
    assert "contrastive" not in no_dpcl
    no_tdpp = AVMasterLoss()(_output(logits=True, fused=True), label)
    assert set(no_tdpp) == {"loss", "audio", "visual"}
    no_gpap = AVMasterLoss()(
        _output(audio_logits=True, visual_logits=True, audio_preference=True,
                visual_preference=True),
        label,
    )
    assert set(no_gpap) == {"loss", "qa"}
    with pytest.raises(ValueError):
        AVMasterLoss(LossConfig(qa=0.0, contrastive=0.0))(
            _output(audio_logits=True, visual_logits=True), label
        )
