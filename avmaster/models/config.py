"""Model, loss and optimiser configuration (OmegaConf structured-config friendly dataclasses).

Defaults follow the paper (D=512, template length 8, attention shared between audio and visual
with per-modality biases, all four losses with weight 1, tau=0.1, Adam 1e-4, StepLR x0.1 every
8 epochs). Ablations of the paper's Tables VII-XI are plain field values that the YAML presets in
``configs/ablations/`` set; the inference-time variants (Tables XII, XIII, Fig. 6) are
:class:`InferenceConfig` values (``configs/variants/``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

Share = Literal["none", "attention", "bias", "both"]
FOCUS_UPDATES: tuple[str, ...] = ("replace", "gated")
TIME_EMBEDDINGS: tuple[str, ...] = ("none", "focus", "all")  # see models/time_embedding.py
FOCUS_SCANS: tuple[str, ...] = ("autograd", "manual")  # see models/focus_scan.py
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
    - ``use_audio`` / ``use_visual`` (Fig. 5, A+Q and V+Q): off = that modality's projected
      sequence is all zeros (no information; every other module is kept, so the figure measures
      the input, not the capacity); its preference branch must be off too.
    - ``share``: which focus-capture weights audio and visual share (paper Table X): ``none``,
      ``attention`` (SAB/CAB blocks, default), ``bias`` (the learned bias), ``both``.
    - ``ff_mult``: FFN hidden width = ``ff_mult * dim`` in every transformer block.
    - ``time_embedding``: not in the paper; ``none`` (default, faithful), ``focus`` or ``all``
      adds a sinusoidal code of each second's index to the focus capture's input or to every
      path's (:mod:`~avmaster.models.time_embedding`).
    - ``focus_update``: not in the paper; ``replace`` (default, faithful: each step's output is
      the new state) or ``gated`` (a learned leaky update that can keep earlier seconds;
      :class:`~avmaster.models.focus.FocusStep`).
    - ``focus_scan`` (speed only, same math up to float rounding): ``manual`` (default) runs the
      focus recurrence as one autograd node with a written-out backward
      (:mod:`~avmaster.models.focus_scan`); ``autograd`` records every operation of every second
      (the reference it is tested against).
    - ``deferred_weight_grads`` (speed only, ``focus_scan=autograd`` only; the manual scan always
      defers): the recurrence's weight gradients in one GEMM over all T seconds; false
      (default), which was as fast or faster at 2 threads on a quiet CPU and uses less memory.
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
    use_audio: bool = True
    use_visual: bool = True
    time_embedding: str = "none"
    focus_update: str = "replace"
    deferred_weight_grads: bool = False
    focus_scan: str = "manual"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name, choices in (("share", SHARE_OPTIONS), ("focus_update", FOCUS_UPDATES),
                              ("time_embedding", TIME_EMBEDDINGS), ("focus_scan", FOCUS_SCANS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"model.{name} must be one of {choices}, got "
                                 f"{getattr(self, name)!r}")
        if self.dim % self.heads:
            raise ValueError(f"model.dim ({self.dim}) must be divisible by heads ({self.heads})")
        for name in ("dim", "heads", "ff_mult", "template_len", "decoder_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1")
        if not (self.use_audio or self.use_visual):
            raise ValueError("model: use_audio=false and use_visual=false leave no input; use "
                             "question_only=true for a question-only model")
        for modality in ("audio", "visual"):
            if not getattr(self, f"use_{modality}") and getattr(self, f"{modality}_preference"):
                raise ValueError(f"model: use_{modality}=false needs "
                                 f"{modality}_preference=false (its branch would see no input)")
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

    A weight of 0 switches its loss off (w/o DPCL: ``contrastive=0``; Table VIII's subsets). As
    in the paper, this changes no module: every decoder the model switches build is kept and
    votes at inference; the modules that no active loss reaches are frozen at their random
    initialisation (see :func:`~avmaster.models.avmaster.resolve_branches`).
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


Combine = Literal["add", "mul", "w_add"]
COMBINE_RULES: tuple[str, ...] = ("add", "mul", "w_add")
PATH_NAMES: tuple[str, ...] = ("tdpp", "audio", "visual")


@dataclass
class InferenceConfig:
    """How a trained model answers (no effect on training; paper Tables XII, XIII, Fig. 6).

    - ``combine``: how the paths' softmaxes become one distribution (Table XIII): ``add`` (the
      paper's default), ``mul`` (element-wise product), ``w_add`` (weighted sum, weights from
      each path's own accuracy; see :mod:`avmaster.models.combine`).
    - ``drop``: paths whose vote is left out (Table XII): ``audio`` (w/o APE), ``visual``
      (w/o VPE), both (w/o AVPE); ``tdpp`` is accepted too.
    - ``readout_step``: read the focus templates out after step k (0-based) of the recurrence
      instead of after the last second (Fig. 6); ``None`` = after the last.
    - ``weights``: per-path weights for ``w_add`` (``{path: weight}``); filled in by
      ``avmaster eval`` from each path's accuracy when empty.
    """

    combine: Combine = "add"
    drop: list[str] = field(default_factory=list)
    readout_step: int | None = None
    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.combine not in COMBINE_RULES:
            raise ValueError(f"inference.combine must be one of {COMBINE_RULES}, "
                             f"got {self.combine!r}")
        for name in (*self.drop, *self.weights):
            if name not in PATH_NAMES:
                raise ValueError(f"inference: unknown path {name!r}; paths are {PATH_NAMES}")
        if self.readout_step is not None and self.readout_step < 0:
            raise ValueError("inference.readout_step must be >= 0 (or null for the last step)")


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
