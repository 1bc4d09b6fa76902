"""Optional time embedding: a fixed sinusoidal code of each second's index, added to the
projected per-second features (``model.time_embedding``; off by default, as in the paper).

The paper has no positional encoding: temporal order reaches the answer only through the focus
recurrence (Eq. 2). This option gives every second its index explicitly, the smallest change that
makes order visible to attention. Chosen: the fixed sinusoids of Vaswani et al. (2017), because
they add no parameter and work for any number of seconds.

- ``none``: the paper's model (default).
- ``focus``: only the focus capture's input carries the code; the key fusion and the preference
  paths read the features as before.
- ``all``: every path reads the coded features.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

BASE = 10000.0  # the wavelength base of Vaswani et al.


def sinusoids(seconds: int, dim: int, device: torch.device | None = None) -> Tensor:
    """``[seconds, dim]``: sin on even, cos on odd channels, wavelengths 2 pi .. 2 pi BASE."""
    pos = torch.arange(seconds, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device)
                     * (-math.log(BASE) / dim))
    out = torch.zeros(seconds, dim, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out


class TimeEmbedding(nn.Module):
    """``x [B, T, D] -> x + sinusoids(T, D)`` (no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        return x + sinusoids(x.shape[1], x.shape[2], x.device).to(x.dtype)
