"""Audio-visual focus capture (AVFC, Eq. 2): recurrent dynamic adaptive focus sampling.

Learnable templates ``A_cls, V_cls [N, D]`` are updated once per second k = 0..T-1::

    tp1   = repeat(F^k) + cls^{k-1}
    tp2   = SAB2(SAB1(tp1) + bias) + bias
    cls^k = CAB(query=tp2, key/value=F^k)

and the template after the last step is the focus feature ``~F [N, D]``. Temporal order enters
the model only through this recurrence (no positional encodings anywhere).

Speed without changing the math: with attention shared (``share`` = attention/both) audio and
visual run as one batch ``[2B, ...]`` through the shared blocks; the CAB's key/value is one
token, so its attention output (``to_out(to_v(F^k))``) is computed for all k in one matmul
before the loop (see :class:`~avmaster.models.blocks.SingleKeyCAB`). ``scan="manual"`` (the
default) runs the T steps as one autograd node with a written-out backward
(:mod:`avmaster.models.focus_scan`); ``scan="autograd"`` calls this module once per second and
lets autograd record every operation (the reference the manual scan is tested against; on CPU
its N-token self-attention uses SDPA's math backend, see
:func:`~avmaster.models.blocks.cpu_attention_backend`). With ``deferred_weight_grads=True`` the
autograd scan computes the step's weight gradients once over all T steps after the recurrence
(:mod:`avmaster.models.deferred`); on a quiet 2-core CPU it was no faster.

Dropout is applied to the recurrence's inputs (all seconds at once) and to its output, not
inside the T steps: per-step masks would dominate a CPU step (the RNG costs ~10-20 ns per
element) and a deterministic recurrence is easier to train.

Focus maps: ``[B, N, T]``, how far second k moved each template, ``||cls^k - cls^{k-1}||``,
normalised over T (computed without gradient; for visualisation only).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from einops import repeat
from torch import Tensor, nn

from avmaster.models.blocks import SAB, Dropout, SingleKeyCAB, cpu_attention_backend
from avmaster.models.deferred import deferred_linears, make_deferrable
from avmaster.models.focus_scan import scan as manual_scan


class FocusStep(nn.Module):
    """One step of Eq. 2: ``cls^{k-1}, F^k -> cls^k`` (deterministic: no dropout inside).

    ``deferred_weight_grads``, ``scan``: see :class:`FocusCapture`. ``update``: ``replace`` (the
    paper: ``cls^k`` is the step's output) or ``gated`` (not in the paper: a leaky update
    ``cls^k = cls^{k-1} + g * (step - cls^{k-1})`` with a learned per-channel rate
    ``g = sigmoid(gate)`` starting at 0.5, so the state can keep earlier seconds).
    """

    def __init__(self, dim: int, heads: int, ff_mult: int = 4, deferred_weight_grads: bool = False,
                 update: str = "replace", scan: str = "manual"):
        super().__init__()
        self.scan_impl = scan
        self.sab1 = SAB(dim, heads, ff_mult)
        self.sab2 = SAB(dim, heads, ff_mult)
        self.cab = SingleKeyCAB(dim, ff_mult)
        make_deferrable(self)
        self.deferred_weight_grads = deferred_weight_grads
        self.gate = nn.Parameter(torch.zeros(dim)) if update == "gated" else None

    def forward(self, cls: Tensor, frame: Tensor, frame_attn: Tensor, bias: Tensor) -> Tensor:
        """``cls [B, N, D]``, ``frame [B, 1, D]`` = F^k, ``frame_attn [B, 1, D]`` =
        ``cab.project(F^k)``, ``bias [B or 1, N, D]`` -> ``cls^k [B, N, D]``."""
        tp1 = cls + frame
        tp2 = self.sab2(self.sab1(tp1) + bias) + bias
        return self.cab(tp2, frame_attn)

    def scan(self, x: Tensor, cls: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """Run the recurrence over ``x [B, T, D]`` from ``cls [B, N, D]``.

        Returns the final templates ``[B, N, D]`` and the focus map ``[B, N, T]``.
        """
        if self.scan_impl == "manual":
            return manual_scan(x, self.cab.project(x), cls, bias, self.gate, self)
        frames = x.unsqueeze(2).unbind(dim=1)
        frame_attn = self.cab.project(x).unsqueeze(2).unbind(dim=1)
        states = [cls.detach()]
        defer = deferred_linears(self) if self.deferred_weight_grads else contextlib.nullcontext()
        with cpu_attention_backend(x, few_tokens=True), defer:
            rate = None if self.gate is None else torch.sigmoid(self.gate)
            for frame, attn in zip(frames, frame_attn, strict=True):
                new = self(cls, frame, attn, bias)
                cls = new if rate is None else cls + rate * (new - cls)
                states.append(cls.detach())
        with torch.no_grad():
            moves = torch.stack(states, dim=-2).float().diff(dim=-2).norm(dim=-1)
            focus = moves / moves.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(moves.dtype).tiny)
        return cls, focus


@dataclass
class FocusOutput:
    """Focus features ``~F_a, ~F_v [B, N, D]`` and focus maps ``[B, N, T]``."""

    audio: Tensor
    visual: Tensor
    audio_map: Tensor
    visual_map: Tensor


class FocusCapture(nn.Module):
    """AVFC over audio and visual sequences with the paper's weight-sharing options (Table X).

    ``share``: ``attention`` = one :class:`FocusStep` for both modalities, one bias each
    (default); ``bias`` = a step each, one shared bias; ``both`` / ``none`` accordingly. The
    initial templates are always per modality.

    ``scan`` (speed only, same math): ``manual`` (default) = :mod:`avmaster.models.focus_scan`,
    ``autograd`` = this step called T times under autograd, the reference implementation.
    ``deferred_weight_grads`` (speed only, ``scan="autograd"`` only): the focus step's weight
    gradients in one GEMM per weight over all T seconds after the recurrence instead of one
    small GEMM per second.
    ``update``: see :class:`FocusStep` (``replace``, the paper's, by default).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        template_len: int,
        ff_mult: int = 4,
        dropout: float = 0.0,
        share_attention: bool = True,
        share_bias: bool = False,
        deferred_weight_grads: bool = False,
        update: str = "replace",
        scan: str = "manual",
    ):
        super().__init__()
        self.templates = nn.Parameter(torch.randn(2, template_len, dim))  # audio, visual
        self.bias = nn.Parameter(0.02 * torch.randn(1 if share_bias else 2, template_len, dim))
        n_steps = 1 if share_attention else 2
        self.steps = nn.ModuleList(
            FocusStep(dim, heads, ff_mult, deferred_weight_grads, update, scan)
            for _ in range(n_steps)
        )
        self.drop = Dropout(dropout)

    def forward(self, audio: Tensor, visual: Tensor, steps: int | None = None) -> FocusOutput:
        """``audio, visual [B, T, D]`` (projected) -> :class:`FocusOutput`; ``steps``: stop
        the recurrence after the first ``steps`` seconds (templates read out early, Fig. 6)."""
        if steps is not None:
            audio, visual = audio[:, :steps], visual[:, :steps]
        b = audio.shape[0]
        audio, visual = self.drop(audio), self.drop(visual)
        bias = self.bias.expand(2, -1, -1)
        if len(self.steps) == 1:
            x = torch.cat((audio, visual), dim=0)
            cls = repeat(self.templates, "m n d -> (m b) n d", b=b)
            out, maps = self.steps[0].scan(x, cls, repeat(bias, "m n d -> (m b) n d", b=b))
            (fa, fv), (ma, mv) = out.chunk(2), maps.chunk(2)
        else:
            fa, ma = self.steps[0].scan(audio, self._init(0, b), bias[0:1])
            fv, mv = self.steps[1].scan(visual, self._init(1, b), bias[1:2])
        return FocusOutput(self.drop(fa), self.drop(fv), ma, mv)

    def _init(self, modality: int, b: int) -> Tensor:
        return repeat(self.templates[modality], "n d -> b n d", b=b)
