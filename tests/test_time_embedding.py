"""The optional time embedding: a fixed code per second, off by default, that makes the
otherwise order-blind paths see order."""

from __future__ import annotations

import math

import pytest
import torch

from avmaster.config import preset_configs
from avmaster.models import AVMaster, ModelConfig
from avmaster.models.time_embedding import sinusoids

DIMS = {"visual": 6, "audio": 5, "text": 7}
pytestmark = pytest.mark.usefixtures("single_thread")


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"visual": torch.randn(3, 5, 6, generator=g), "audio": torch.randn(3, 5, 5, generator=g),
            "question_tokens": torch.randn(3, 4, 7, generator=g),
            "question": torch.randn(3, 7, generator=g)}


def model(preset: str, time_embedding: str) -> AVMaster:
    base = ModelConfig(dim=16, heads=2, template_len=2, decoder_depth=1, dropout=0.0,
                       time_embedding=time_embedding)
    cfg, loss = preset_configs(preset, base)
    torch.manual_seed(0)
    return AVMaster(cfg, DIMS, 4, loss_cfg=loss).eval()


def probs(m: AVMaster, b: dict[str, torch.Tensor], reverse: bool = False) -> torch.Tensor:
    if reverse:
        b = {**b, "audio": b["audio"].flip(1), "visual": b["visual"].flip(1)}
    with torch.no_grad():
        return m(b).probs()


def test_sinusoids() -> None:
    pe = sinusoids(4, 6)
    assert pe.shape == (4, 6)
    assert torch.equal(pe[0, 0::2], torch.zeros(3)) and torch.equal(pe[0, 1::2], torch.ones(3))
    assert pe[1, 0].item() == pytest.approx(math.sin(1.0))
    assert pe[2, 3].item() == pytest.approx(math.cos(2 / 10000 ** (2 / 6)))


def test_off_by_default_and_order_blind_paths_see_order_with_it() -> None:
    assert ModelConfig().time_embedding == "none"
    b = batch()
    blind = model("wo_tdpp", "none")  # preference paths only: no order without the code
    assert torch.allclose(probs(blind, b), probs(blind, b, reverse=True), atol=1e-6)
    coded = model("wo_tdpp", "all")
    assert not torch.allclose(probs(coded, b), probs(coded, b, reverse=True), atol=1e-4)
    # "focus" changes only the focus capture's input: same weights, other templates
    full, focus = model("full", "none"), model("full", "focus")
    assert sum(p.numel() for p in full.parameters()) == sum(p.numel() for p in focus.parameters())
    with torch.no_grad():
        a, v = full.project(b)
        assert not torch.allclose(full.capture(a, v).audio, focus.capture(a, v).audio)
    with pytest.raises(ValueError, match="time_embedding"):
        ModelConfig(time_embedding="learned")
