"""AV-Master model: configuration, building blocks and the full network."""

from avmaster.models.avmaster import (
    AVMaster,
    AVMasterOutput,
    Branches,
    Paths,
    as_dims,
    count_parameters,
    resolve_branches,
    resolve_paths,
)
from avmaster.models.blocks import CAB, FFN, MLP, SAB, Attention, SingleKeyCAB
from avmaster.models.config import (
    ABLATIONS,
    FeatureDims,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ablation,
    to_dataclass,
)
from avmaster.models.decoders import AnswerDecoder, ClassHead, OptionHead, PathDecoder
from avmaster.models.focus import FocusCapture, FocusOutput, FocusStep
from avmaster.models.fusion import KeyFusion
from avmaster.models.preference import PreferenceActivation

__all__ = [
    "ABLATIONS",
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
    "KeyFusion",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "OptionHead",
    "PathDecoder",
    "Paths",
    "PreferenceActivation",
    "SingleKeyCAB",
    "ablation",
    "as_dims",
    "count_parameters",
    "resolve_branches",
    "resolve_paths",
    "to_dataclass",
]
