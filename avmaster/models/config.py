"""Model, loss and optimiser configuration (OmegaConf structured-config friendly dataclasses).

Defaults follow the paper (D=512, template length 8, attention shared between audio and visual
with per-modality biases, all four losses with weight 1, tau=0.1, Adam 1e-4, StepLR x0.1 every
8 epochs). Ablations of the paper's Tables VII-XII are plain field values; :data:`ABLATIONS`
names the presets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

Share = Literal["none", "attention", "bias", "both"]
SHARE_OPTIONS: tuple[str, ...] = ("none", "attention", "bias", "both")


@dataclass
class FeatureDims:
    """Input feature sizes: per-second visual and audio features, question token/sentence text."""

    visual: int = 768
    audio: int = 128
    text: int = 768


@dataclass
class ModelConfig:
    """AV-Master architecture and ablation switches.

    - ``use_focus`` (AVFC, Eq. 2): off = one mean-pooled feature per modality replaces the
      recurrent templates in the key fusion; no template/bias/focus-block parameters exist.
    - ``use_tdpp`` (TDPP): off = no focus, key fusion or multimodal decoder; answers come from
      the preference (GPAP) decoders only, and L_qa / L_c are not computed.
    - ``audio_preference`` / ``visual_preference`` (APE / VPE): the audio / visual branch of the
      global preference activation path (Eq. 4) with its decoder, its loss and its term in L_c.
      Both off = w/o AVPE = w/o GPAP.
    - ``question_only``: a reference that sees only the question (token + sentence features).
    - ``share``: which focus-capture weights audio and visual share (paper Table X): ``none``,
      ``attention`` (SAB/CAB blocks, default), ``bias`` (the learned bias), ``both``.
    - ``ff_mult``: FFN hidden width = ``ff_mult * dim`` in every transformer block.
    - ``deferred_weight_grads`` (speed only, same math up to float summation order): the focus
      recurrence's weight gradients in one GEMM over all T seconds; false = plain autograd.
    """

    dim: int = 512
    heads: int = 8
    ff_mult: int = 1
    dropout: float = 0.1
    template_len: int = 8
    share: Share = "attention"
    decoder_depth: int = 2
    use_focus: bool = True
    use_tdpp: bool = True
    audio_preference: bool = True
    visual_preference: bool = True
    question_only: bool = False
    deferred_weight_grads: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.share not in SHARE_OPTIONS:
            raise ValueError(f"model.share must be one of {SHARE_OPTIONS}, got {self.share!r}")
        if self.dim % self.heads:
            raise ValueError(f"model.dim ({self.dim}) must be divisible by heads ({self.heads})")
        for name in ("dim", "heads", "ff_mult", "template_len", "decoder_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1")
        if not (self.question_only or self.use_tdpp or self.has_preference):
            raise ValueError("model: use_tdpp=false needs audio_preference or visual_preference")

    @property
    def has_preference(self) -> bool:
        return self.audio_preference or self.visual_preference

    @property
    def share_attention(self) -> bool:
        return self.share in ("attention", "both")

    @property
    def share_bias(self) -> bool:
        return self.share in ("bias", "both")


@dataclass
class LossConfig:
    """Weights of L = qa*L_qa + visual*L_v^p + audio*L_a^p + contrastive*L_c, and L_c's tau.

    A weight of 0 switches its loss off (w/o DPCL: ``contrastive=0``); the model then omits the
    modules that only that loss would train (a decoder with no answer loss does not vote).
    """

    qa: float = 1.0
    audio: float = 1.0
    visual: float = 1.0
    contrastive: float = 1.0
    tau: float = 0.1


@dataclass
class OptimConfig:
    """Adam with a StepLR schedule (stepped once per epoch)."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_step_size: int = 8
    lr_gamma: float = 0.1


ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {},
    "wo_avfc": {"model": {"use_focus": False}},
    "wo_dpcl": {"loss": {"contrastive": 0.0}},
    "wo_gpap": {"model": {"audio_preference": False, "visual_preference": False}},
    "wo_tdpp": {"model": {"use_tdpp": False, "use_focus": False}},
    # w/o all: no AVFC, no GPAP, no L_c; key fusion over mean-pooled features + its decoder.
    "wo_all": {
        "model": {"use_focus": False, "audio_preference": False, "visual_preference": False},
        "loss": {"contrastive": 0.0},
    },
    "wo_ape": {"model": {"audio_preference": False}},
    "wo_vpe": {"model": {"visual_preference": False}},
    "wo_avpe": {"model": {"audio_preference": False, "visual_preference": False}},
    "question_only": {"model": {"question_only": True}},
    # Table VIII: subsets of the four losses
    "loss_qa": {"loss": {"audio": 0.0, "visual": 0.0, "contrastive": 0.0}},
    "loss_qa_c": {"loss": {"audio": 0.0, "visual": 0.0}},
    "loss_qa_c_a": {"loss": {"visual": 0.0}},
    "loss_qa_c_v": {"loss": {"audio": 0.0}},
    "loss_qa_a_v": {"loss": {"contrastive": 0.0}},
}
"""Paper ablations as overrides of the ``model`` / ``loss`` sections (Tables VII, VIII, XII);
template length and sharing (Tables IX, X) are single ``model`` fields."""

T = TypeVar("T")


def to_dataclass(cls: type[T], value: Any) -> T:
    """``cls`` from an instance, a mapping, an OmegaConf config or ``None`` (defaults).

    Unknown keys are an error, never ignored.
    """
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if not isinstance(value, Mapping):
        from omegaconf import OmegaConf

        value = OmegaConf.to_container(value, resolve=True)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(value) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}; known: {sorted(names)}")
    return cls(**dict(value))


def ablation(
    name: str, model: ModelConfig | None = None, loss: LossConfig | None = None
) -> tuple[ModelConfig, LossConfig]:
    """Apply the preset ``name`` of :data:`ABLATIONS` to ``model`` / ``loss`` (defaults)."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; choose one of {sorted(ABLATIONS)}")
    preset = ABLATIONS[name]
    model = dataclasses.replace(model or ModelConfig(), **preset.get("model", {}))
    loss = dataclasses.replace(loss or LossConfig(), **preset.get("loss", {}))
    return model, loss
