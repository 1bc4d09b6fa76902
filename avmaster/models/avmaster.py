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

Loss ablations prune too (:func:`resolve_branches`): a decoder whose answer loss has weight 0 is not
built (it would stay untrained yet vote), and a preference branch or the key fusion exists only
while some active loss reads it (e.g. ``L_qa + L_c``: GPAP branches are trained by L_c alone and
have no decoder). Every built parameter therefore receives a gradient, which also keeps DDP
without ``find_unused_parameters`` working.

No positional encodings are used: temporal order reaches the answer only through the AVFC
recurrence. No learned modality weights exist: the paths are combined by summing softmaxes.

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
from avmaster.models.config import FeatureDims, LossConfig, ModelConfig, to_dataclass
from avmaster.models.decoders import PathDecoder
from avmaster.models.focus import FocusCapture
from avmaster.models.fusion import KeyFusion
from avmaster.models.preference import PreferenceActivation

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

    @property
    def preferences(self) -> list[Tensor]:
        return [x for x in (self.audio_preference, self.visual_preference) if x is not None]

    def probs(self) -> Tensor:
        """Mean of the paths' softmaxes ``[B, C]``; its argmax is the paper's sum-then-argmax."""
        paths = self.path_logits
        return torch.stack([x.float().softmax(dim=-1) for x in paths]).mean(dim=0)

    def pred(self) -> Tensor:
        return self.probs().argmax(dim=-1)


@dataclass(frozen=True)
class Branches:
    """Which modules (branches of the two paths) a model builds (see
    :func:`resolve_branches`)."""

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


def resolve_branches(cfg: ModelConfig, loss: LossConfig) -> Branches:
    """The modules that the model switches and the active (weight > 0) losses can train."""
    if cfg.question_only:
        if loss.qa <= 0:
            raise ValueError("the question-only model needs loss.qa > 0")
        return Branches(False, False, True, False, False, False, False)
    ape, vpe, tdpp = cfg.audio_preference, cfg.visual_preference, cfg.use_tdpp
    contrastive = tdpp and (ape or vpe) and loss.contrastive > 0
    decoder = tdpp and loss.qa > 0
    audio_decoder, visual_decoder = ape and loss.audio > 0, vpe and loss.visual > 0
    if not (decoder or audio_decoder or visual_decoder):
        raise ValueError("no answer decoder is trained: check model paths and loss weights")
    fusion = decoder or contrastive
    return Branches(
        focus=fusion and cfg.use_focus,
        fusion=fusion,
        decoder=decoder,
        audio_pref=audio_decoder or (ape and contrastive),
        audio_decoder=audio_decoder,
        visual_pref=visual_decoder or (vpe and contrastive),
        visual_decoder=visual_decoder,
    )


# The earlier names (they read like file paths), kept importable.
Paths = Branches
resolve_paths = resolve_branches


class AVMaster(nn.Module):
    """AV-Master over precomputed features.

    ``cfg``: :class:`ModelConfig` (or mapping); ``dims``: input feature sizes (``visual``,
    ``audio``, ``text``); ``num_answers``: C; ``multiple_choice``: score ``batch["options"]``;
    ``loss_cfg``: the training losses, whose zero weights prune untrainable modules (default:
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
        branches = resolve_branches(cfg, to_dataclass(LossConfig, loss_cfg))
        self.cfg, self.dims, self.branches = cfg, dims, branches
        self.num_answers, self.multiple_choice = num_answers, multiple_choice
        dim, heads, ff, drop = cfg.dim, cfg.heads, cfg.ff_mult, cfg.dropout

        def decoder() -> PathDecoder:
            depth = cfg.decoder_depth
            return PathDecoder(dim, heads, depth, ff, drop, num_answers, multiple_choice)

        self.proj_question = nn.Linear(dims.text, dim)
        self.proj_words = nn.Linear(dims.text, dim)
        self.proj_option = nn.Linear(dims.text, dim) if multiple_choice else None

        self.proj_audio = nn.Linear(dims.audio, dim) if branches.audio else None
        self.proj_visual = nn.Linear(dims.visual, dim) if branches.visual else None
        self.focus = (
            FocusCapture(
                dim, heads, cfg.template_len, ff, drop, cfg.share_attention, cfg.share_bias,
                cfg.deferred_weight_grads,
            )
            if branches.focus
            else None
        )
        self.fusion = KeyFusion(dim, heads, ff, drop) if branches.fusion else None
        self.decoder = decoder() if branches.decoder else None

        def preference() -> PreferenceActivation:
            return PreferenceActivation(dim, heads, ff, drop)

        self.audio_pref = preference() if branches.audio_pref else None
        self.audio_decoder = decoder() if branches.audio_decoder else None
        self.visual_pref = preference() if branches.visual_pref else None
        self.visual_decoder = decoder() if branches.visual_decoder else None

    def forward(self, batch: Batch) -> AVMasterOutput:
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

        audio = self.proj_audio(batch["audio"]) if self.proj_audio is not None else None
        visual = self.proj_visual(batch["visual"]) if self.proj_visual is not None else None
        out = AVMasterOutput()
        if self.fusion is not None:
            if self.focus is not None:
                focus = self.focus(audio, visual)
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

    def compile_blocks(self, **kwargs: Any) -> None:
        """``torch.compile`` each block in place (regional compilation): the focus step is
        compiled once and reused for all T seconds instead of unrolling the recurrence."""
        steps = self.focus.steps if self.focus is not None else []
        for block in (*steps, self.fusion, self.decoder, self.audio_pref, self.audio_decoder,
                      self.visual_pref, self.visual_decoder):
            if block is not None:
                block.compile(**kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
