"""Which seconds an answer depends on: per-second occlusion of the audio and visual features.

For each modality and each second t, the features of t are replaced and the model is run
again; the attribution of t is the drop of the predicted answer's probability. Positive: the
answer needed that second; about zero: it did not; negative: the second spoke against it.
"""

from __future__ import annotations

import torch

from avmaster.models.avmaster import AVMaster

MODALITIES = ("audio", "visual")


@torch.no_grad()
def occlusion(model: AVMaster, batch: dict[str, torch.Tensor], target: int
              ) -> dict[str, torch.Tensor]:
    """``{modality: [T] drop of P(target)}`` for a batch of one question.

    The replacement is the clip's own mean feature of that modality, not zeros: CLIP and VGGish
    outputs are not centred, so a zero row is unlike anything the model saw in training and
    would measure its reaction to an impossible input rather than the content removed.
    """
    full = model(batch).probs()[0, target].float()
    out: dict[str, torch.Tensor] = {}
    for name in MODALITIES:
        x = batch[name]  # [1, T, D]
        steps = x.shape[1]
        occluded = x.expand(steps, -1, -1).clone()
        seconds = torch.arange(steps, device=x.device)
        occluded[seconds, seconds] = x.mean(1).to(x.dtype)
        many = {k: v.expand(steps, *v.shape[1:]) for k, v in batch.items()}
        many[name] = occluded
        probs = model(many).probs()[:, target].float()
        out[name] = (full - probs).cpu()
    return out
