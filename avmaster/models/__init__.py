"""AV-Master model: configuration, building blocks and the full network.

Names are imported on first use, so that reading a configuration (``avmaster.models.config``)
does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "avmaster": ("AVMaster", "AVMasterOutput", "Branches", "Paths", "as_dims",
                 "count_parameters", "resolve_branches", "resolve_paths"),
    "blocks": ("CAB", "FFN", "MLP", "SAB", "Attention", "SingleKeyCAB"),
    "config": ("FeatureDims", "InferenceConfig", "LossConfig", "ModelConfig", "OptimConfig",
               "to_dataclass"),
    "decoders": ("AnswerDecoder", "ClassHead", "OptionHead", "PathDecoder"),
    "focus": ("FocusCapture", "FocusOutput", "FocusStep"),
    "fusion": ("KeyFusion",),
    "preference": ("PreferenceActivation",),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "CAB",
    "FFN",
    "MLP",
    "SAB",
    "AVMaster",
    "AVMasterOutput",
    "AnswerDecoder",
    "Attention",
    "Branches",
    "ClassHead",
    "FeatureDims",
    "FocusCapture",
    "FocusOutput",
    "FocusStep",
    "InferenceConfig",
    "KeyFusion",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "OptionHead",
    "PathDecoder",
    "Paths",
    "PreferenceActivation",
    "SingleKeyCAB",
    "as_dims",
    "count_parameters",
    "resolve_branches",
    "resolve_paths",
    "to_dataclass",
]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"avmaster.models.{_HOME[name]}"), name)
    raise AttributeError(f"module 'avmaster.models' has no attribute {name!r}")
