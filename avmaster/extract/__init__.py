"""Feature extraction: videos and annotation texts -> the HDF5 caches of :mod:`avmaster.data`.

Library API: :class:`FeatureExtractor` (single videos and texts), :class:`ExtractConfig`,
:func:`feature_paths` (where a configuration's files live). CLI: :func:`main`
(``avmaster extract``). Encoder imports (torch, open_clip) happen on first use.
"""

from __future__ import annotations

from typing import Any

from avmaster.extract.config import (
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    TINY_MODEL,
    ExtractConfig,
    FeaturePaths,
    clip_slug,
    feature_paths,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PRETRAINED",
    "TINY_MODEL",
    "ExtractConfig",
    "FeatureExtractor",
    "FeaturePaths",
    "UndecodableVideoError",
    "clip_slug",
    "feature_paths",
    "main",
]


def __getattr__(name: str) -> Any:
    if name in ("FeatureExtractor", "UndecodableVideoError"):
        from avmaster.extract import extractor

        return getattr(extractor, name)
    if name == "main":
        from avmaster.extract.runner import main

        return main
    raise AttributeError(f"module 'avmaster.extract' has no attribute {name!r}")
