"""Fewer one-second segments per video (paper Fig. 4: segment lengths 12, 24, 36, 48, 60).

The paper varies the number of segments the model sees without saying how they are picked. We
keep the whole video's span: S seconds evenly spaced over the T stored ones (the centre of each
of S equal windows), because MUSIC-AVQA's questions (counting, temporal order) refer to the whole
clip; the first S seconds would drop every later event.
"""

from __future__ import annotations

import numpy as np


def segment_seconds(total: int, segments: int | None) -> np.ndarray | None:
    """Indices of the ``segments`` seconds kept out of ``total`` (``None``: all of them)."""
    if segments is None or segments == total:
        return None
    if not 1 <= segments <= total:
        raise ValueError(f"data.segments={segments} must be between 1 and data.seconds={total}")
    return ((np.arange(segments) + 0.5) * total / segments).astype(np.int64)
