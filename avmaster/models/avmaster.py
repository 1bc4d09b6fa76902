"""AV-Master: temporal dynamic perception path (TDPP) + global preference activation path (GPAP).

::

    inputs    F_v [T, Dv], F_a [T, Da], F_t^w [L, Dq] (+mask), F_t^s [Dq]  -> Linear -> D
    TDPP      ~F_a, ~F_v = AVFC(F_a), AVFC(F_v)              (focus.py, Eq. 2)
              F_fu = KeyFusion(F_a, F_v, F_t^w, ~F_a, ~F_v)  (fusion.py, Eq. 3)
              logits = Decoder(F_t^s, F_fu)
    GPAP      F_a^p = PA_a(F_a, F_t^w); F_v^p = PA_v(F_v, F_t^w)  (preference.py, Eq. 4)
              audio_logits = Decoder_a(F_t^s, F_a^p); visual_logits = Decoder_v(F_t^s, F_v^p)
    predict   argmax of the sum of the paths' softmaxes

Ablations (:class:`~avmaster.models.config.ModelConfig`) remove modules rather than bypass them,
so no parameter exists that would not receive a gradient:

- w/o AVFC: ``~F_a, ~F_v`` are the mean over seconds ``[B, 1, D]`` of the projected features.
- w/o TDPP: no focus, fusion or multimodal decoder; the GPAP decoders answer alone.
- w/o APE / VPE: the audio / visual GPAP branch and its decoder are absent (both: w/o GPAP).
- w/o all: w/o AVFC + w/o GPAP + no L_c: key fusion of mean-pooled features, one decoder.
- question only: a decoder reads the question words with the sentence as query.

Loss weights change no module (paper Table VIII): every decoder the switches build is kept and
votes at inference; modules that no active loss reaches (:func:`resolve_branches`) are frozen
at their random initialisation (``requires_grad=False``), e.g. the preference branches and
their decoders under ``L_qa`` alone. Every trainable parameter therefore receives a gradient,
which also keeps DDP without ``find_unused_parameters`` working.

Inputs (Fig. 5): with ``use_audio`` / ``use_visual`` off, that modality's projected sequence is
zeros of the same shape (no input projection is built for it).

No positional encodings are used (unless ``time_embedding`` asks for one, an option outside the
paper): temporal order reaches the answer only through the AVFC recurrence. No learned modality
weights exist: the paths are combined by summing softmaxes (other rules:
:mod:`avmaster.models.combine`).

Multiple choice (``multiple_choice=True``): every decoder scores the K options of
``batch["options"]`` with an :class:`~avmaster.models.decoders.OptionHead` instead of the C
answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from avmaster.data.batch import Batch
from avmaster.errors import ConfigError
from avmaster.models.combine import combine
from avmaster.models.config import (
    FeatureDims,
    InferenceConfig,
    LossConfig,
    ModelConfig,
    to_dataclass,
)
from avmaster.models.decoders import PathDecoder
from avmaster.models.focus import FocusCapture, FocusOutput
from avmaster.models.fusion import KeyFusion
from avmaster.models.preference import PreferenceActivation
from avmaster.models.time_embedding import TimeEmbedding

DIM_ALIASES = {"question": "text", "word": "text", "words": "text"}


def as_dims(dims: Any) -> FeatureDims:
    """:class:`FeatureDims` from a dataclass, a mapping or an object with
    ``visual``/``audio``/``text`` (``question`` is accepted for ``text``)."""
    if dims is None:
        return FeatureDims()
    if isinstance(dims, FeatureDims):
        return dims
    if is_dataclass(dims) and not isinstance(dims, type):
        dims = asdict(dims)
    elif not isinstance(dims, Mapping):
        dims = {k: getattr(dims, k) for k in ("visual", "audio", "text", "question") if
                hasattr(dims, k)}
    dims = {DIM_ALIASES.get(k, k): int(v) for k, v in dict(dims).items()}
    return to_dataclass(FeatureDims, {k: dims[k] for k in ("visual", "audio", "text") if k in dims})


@dataclass
class AVMasterOutput:
    """Per-path logits and intermediate features (``None`` where the path is ablated).

    ``logits`` / ``audio_logits`` / ``visual_logits``: ``[B, C]`` (or ``[B, K]`` for multiple
    choice) from the multimodal (TDPP; the question-only decoder in that baseline), audio and
    visual preference decoders. ``fused``: F_fu ``[B, D]``. ``audio_preference`` /
    ``visual_preference``: F^p ``[B, T, D]``. ``audio_focus`` / ``visual_focus``: ~F ``[B, N, D]``.
    ``focus_maps``: ``{"audio", "visual"} -> [B, N, T]``, which seconds moved each template.
    """

    logits: Tensor | None = None
    audio_logits: Tensor | None = None
    visual_logits: Tensor | None = None
    fused: Tensor | None = None
    audio_preference: Tensor | None = None
    visual_preference: Tensor | None = None
    audio_focus: Tensor | None = None
    visual_focus: Tensor | None = None
    focus_maps: dict[str, Tensor] = field(default_factory=dict)

    @property
    def path_logits(self) -> list[Tensor]:
        return [x for x in (self.logits, self.audio_logits, self.visual_logits) if x is not None]

    def path_probs(self) -> dict[str, Tensor]:
        """Each voting path's softmax ``[B, C]`` by name (``tdpp``, ``audio``, ``visual``)."""
        named = {"tdpp": self.logits, "audio": self.audio_logits, "visual": self.visual_logits}
        return {k: v.float().softmax(dim=-1) for k, v in named.items() if v is not None}

    @property
    def preferences(self) -> list[Tensor]:
        return [x for x in (self.audio_preference, self.visual_preference) if x is not None]

    def probs(self, inference: InferenceConfig | None = None) -> Tensor:
        """The paths' softmaxes combined ``[B, C]``; by default their mean, whose argmax is the
        paper's sum-then-argmax (see :func:`~avmaster.models.combine.combine`)."""
        return combine(self.path_probs(), inference)

    def pred(self, inference: InferenceConfig | None = None) -> Tensor:
        return self.probs(inference).argmax(dim=-1)


@dataclass(frozen=True)
class Branches:
    """A set of modules (branches of the two paths; see :func:`resolve_branches`)."""

    focus: bool
    fusion: bool
    decoder: bool
    audio_pref: bool
    audio_decoder: bool
    visual_pref: bool
    visual_decoder: bool

    @property
    def audio(self) -> bool:
        return self.fusion or self.audio_pref

    @property
    def visual(self) -> bool:
        return self.fusion or self.visual_pref


def resolve_branches(cfg: ModelConfig, loss: LossConfig) -> tuple[Branches, Branches]:
    """``(built, trained)``: the modules the model switches build, and those of them that the
    active (weight > 0) losses reach. Built but untrained modules are frozen, not removed."""
    if cfg.question_only:
        if loss.qa <= 0:
            raise ConfigError("the question-only model needs loss.qa > 0")
        only = Branches(False, False, True, False, False, False, False)
        return only, only
    ape, vpe, tdpp = cfg.audio_preference, cfg.visual_preference, cfg.use_tdpp
    built = Branches(focus=tdpp and cfg.use_focus, fusion=tdpp, decoder=tdpp, audio_pref=ape,
                     audio_decoder=ape, visual_pref=vpe, visual_decoder=vpe)
    contrastive = tdpp and (ape or vpe) and loss.contrastive > 0
    decoder = tdpp and loss.qa > 0
    audio_decoder, visual_decoder = ape and loss.audio > 0, vpe and loss.visual > 0
    if not (decoder or audio_decoder or visual_decoder):
        raise ConfigError("no answer decoder is trained: check model paths and loss weights "
                          "(loss.qa, loss.audio, loss.visual)")
    fusion = decoder or contrastive
    trained = Branches(
        focus=fusion and cfg.use_focus,
        fusion=fusion,
        decoder=decoder,
        audio_pref=audio_decoder or (ape and contrastive),
        audio_decoder=audio_decoder,
        visual_pref=visual_decoder or (vpe and contrastive),
        visual_decoder=visual_decoder,
    )
    return built, trained


# The earlier names (they read like file paths), kept importable.
Paths = Branches
resolve_paths = resolve_branches


class AVMaster(nn.Module):
    """AV-Master over precomputed features.

    ``cfg``: :class:`ModelConfig` (or mapping); ``dims``: input feature sizes (``visual``,
    ``audio``, ``text``); ``num_answers``: C; ``multiple_choice``: score ``batch["options"]``;
    ``loss_cfg``: the training losses; modules that no active loss reaches are frozen (default:
    all losses on).
    ``forward(batch)`` reads ``visual [B, T, Dv]``, ``audio [B, T, Da]``, ``question_tokens
    [B, L, Dq]``, ``question_mask [B, L]`` (optional, True = token), ``question [B, Dq]`` and,
    for multiple choice, ``options [B, K, Dq]``; returns :class:`AVMasterOutput`.
    """

    def __init__(
        self,
        cfg: ModelConfig | Mapping[str, Any] | None = None,
        dims: FeatureDims | Mapping[str, int] | None = None,
        num_answers: int = 0,
        multiple_choice: bool = False,
        loss_cfg: LossConfig | Mapping[str, Any] | None = None,
    ):
        super().__init__()
        cfg = to_dataclass(ModelConfig, cfg)
        cfg.validate()
        dims = as_dims(dims)
        if not multiple_choice and num_answers < 1:
            raise ValueError("num_answers must be >= 1 unless multiple_choice=True")
        branches, trained = resolve_branches(cfg, to_dataclass(LossConfig, loss_cfg))
        self.cfg, self.dims, self.branches, self.trained = cfg, dims, branches, trained
        self.num_answers, self.multiple_choice = num_answers, multiple_choice
        dim, heads, ff, drop = cfg.dim, cfg.heads, cfg.ff_mult, cfg.dropout

        def decoder() -> PathDecoder:
            depth = cfg.decoder_depth
            return PathDecoder(dim, heads, depth, ff, drop, num_answers, multiple_choice)

        self.proj_question = nn.Linear(dims.text, dim)
        self.proj_words = nn.Linear(dims.text, dim)
        self.proj_option = nn.Linear(dims.text, dim) if multiple_choice else None

        self.proj_audio = (nn.Linear(dims.audio, dim) if branches.audio and cfg.use_audio
                           else None)
        self.proj_visual = (nn.Linear(dims.visual, dim) if branches.visual and cfg.use_visual
                            else None)
        self.focus = (
            FocusCapture(
                dim, heads, cfg.template_len, ff, drop, cfg.share_attention, cfg.share_bias,
                cfg.deferred_weight_grads, cfg.focus_update, cfg.focus_scan,
            )
            if branches.focus
            else None
        )
        self.fusion = KeyFusion(dim, heads, ff, drop) if branches.fusion else None
        self.time = TimeEmbedding() if cfg.time_embedding != "none" else None
        self.decoder = decoder() if branches.decoder else None

        def preference() -> PreferenceActivation:
            return PreferenceActivation(dim, heads, ff, drop)

        self.audio_pref = preference() if branches.audio_pref else None
        self.audio_decoder = decoder() if branches.audio_decoder else None
        self.visual_pref = preference() if branches.visual_pref else None
        self.visual_decoder = decoder() if branches.visual_decoder else None
        for name in self.frozen_modules:
            getattr(self, name).requires_grad_(False)

    @property
    def frozen_modules(self) -> list[str]:
        """Built modules that no active loss trains (paper Table VIII: kept, and they vote)."""
        names = ("focus", "fusion", "decoder", "audio_pref", "audio_decoder", "visual_pref",
                 "visual_decoder")
        frozen = [n for n in names if getattr(self.branches, n) and not getattr(self.trained, n)]
        if not self.trained.audio and self.proj_audio is not None:
            frozen.append("proj_audio")
        if not self.trained.visual and self.proj_visual is not None:
            frozen.append("proj_visual")
        return frozen

    def project(self, batch: Batch) -> tuple[Tensor | None, Tensor | None]:
        """Projected ``audio, visual [B, T, D]``: zeros for a switched-off input (Fig. 5),
        ``None`` where no module reads it."""
        out = []
        for name, proj, used in (("audio", self.proj_audio, self.branches.audio),
                                 ("visual", self.proj_visual, self.branches.visual)):
            x = batch[name]
            if proj is not None:
                out.append(proj(x))
            elif used:
                out.append(x.new_zeros(*x.shape[:2], self.cfg.dim))
            else:
                out.append(None)
        return out[0], out[1]

    def forward(self, batch: Batch, readout_step: int | None = None
                ) -> AVMasterOutput:
        """``readout_step``: read the focus templates out after step k of the recurrence
        (0-based; paper Fig. 6) instead of after the last second."""
        tokens = batch["question_tokens"]
        mask = batch.get("question_mask")
        mask = tokens.new_ones(tokens.shape[:2], dtype=torch.bool) if mask is None else mask.bool()
        words = self.proj_words(torch.where(mask.unsqueeze(-1), tokens, 0.0))
        query = self.proj_question(batch["question"])
        options = None
        if self.proj_option is not None:
            if "options" not in batch:
                raise ValueError("a multiple-choice model needs batch['options'] [B, K, Dq]")
            options = self.proj_option(batch["options"])
        if self.cfg.question_only:
            return AVMasterOutput(logits=self.decoder(query, words, mask, options))

        audio, visual = self.project(batch)
        if self.time is not None and self.cfg.time_embedding == "all":
            audio = audio if audio is None else self.time(audio)
            visual = visual if visual is None else self.time(visual)
        out = AVMasterOutput()
        if self.fusion is not None:
            if self.focus is not None:
                steps = None if readout_step is None else readout_step + 1
                focus = self.capture(audio, visual, steps=steps)
                fa, fv = focus.audio, focus.visual
                out.audio_focus, out.visual_focus = fa, fv
                out.focus_maps = {"audio": focus.audio_map, "visual": focus.visual_map}
            else:  # w/o AVFC: one mean-pooled "template" per modality
                fa, fv = audio.mean(dim=1, keepdim=True), visual.mean(dim=1, keepdim=True)
            out.fused = self.fusion(audio, visual, words, mask, fa, fv)
            if self.decoder is not None:
                memory = rearrange(out.fused, "b d -> b 1 d")
                out.logits = self.decoder(query, memory, None, options)
        if self.audio_pref is not None:
            out.audio_preference = self.audio_pref(audio, words, mask)
            if self.audio_decoder is not None:
                out.audio_logits = self.audio_decoder(query, out.audio_preference, None, options)
        if self.visual_pref is not None:
            out.visual_preference = self.visual_pref(visual, words, mask)
            if self.visual_decoder is not None:
                out.visual_logits = self.visual_decoder(
                    query, out.visual_preference, None, options
                )
        return out

    def capture(self, audio: Tensor, visual: Tensor, steps: int | None = None) -> FocusOutput:
        """AVFC (Eq. 2) over projected features, stopped after ``steps`` seconds when given; with
        ``time_embedding=focus`` its input carries each second's index."""
        if self.time is not None and self.cfg.time_embedding == "focus":
            audio, visual = self.time(audio), self.time(visual)
        return self.focus(audio, visual, steps=steps)

    def compile_blocks(self, **kwargs: Any) -> None:
        """``torch.compile`` each block in place (regional compilation). With
        ``focus_scan=autograd`` the focus step is compiled once and reused for all T seconds
        instead of unrolling the recurrence; the manual scan (the default) runs its own loop
        and is not compiled."""
        autograd_scan = self.focus is not None and self.cfg.focus_scan == "autograd"
        steps = self.focus.steps if autograd_scan else []
        for block in (*steps, self.fusion, self.decoder, self.audio_pref, self.audio_decoder,
                      self.visual_pref, self.visual_decoder):
            if block is not None:
                block.compile(**kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
