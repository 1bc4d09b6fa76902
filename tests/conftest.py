"""Shared fixtures: the real annotation samples and small feature caches made on the fly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from avmaster.data.dataset import required_texts
from avmaster.data.records import QARecord
from avmaster.data.store import write_text_features, write_video_features

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def single_thread():
    """Tiny tensors: one intra-op thread is fastest and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


def make_features(root: Path, records: Sequence[QARecord], seconds: int = 6,
                  dims: tuple[int, int, int] = (16, 8, 12), seed: int = 0,
                  lengths: dict[str, int] | None = None) -> dict[str, Path]:
    """Write visual/audio/text feature files covering ``records``; returns their paths.

    ``lengths`` gives some videos another number of stored seconds (to test pad/trim).
    """
    rng = np.random.default_rng(seed)
    videos = sorted({r.video_id for r in records})
    lengths = lengths or {}
    paths = {"visual": root / "visual.h5", "audio": root / "audio.h5", "text": root / "text.h5"}
    for name, dim in (("visual", dims[0]), ("audio", dims[1])):
        feats = {v: rng.standard_normal((lengths.get(v, seconds), dim)).astype(np.float32)
                 for v in videos}
        write_video_features(paths[name], feats, modality=name, encoder="random", seconds=seconds)
    texts = required_texts(records)
    tokens = [rng.standard_normal((3 + len(t) % 5, dims[2])).astype(np.float32) for t in texts]
    sentence = rng.standard_normal((len(texts), dims[2])).astype(np.float32)
    write_text_features(paths["text"], texts, sentence, tokens, encoder="random")
    return paths
