"""What decoding is asked to do (:class:`DecodeSpec`), what it gives back
(:class:`DecodedVideo`), and the problems it may meet with a video (:class:`Problem` and its
kinds)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

# Problem kinds: the first four leave the video without features ("failed").
EMPTY_FILE = "empty_file"
UNREADABLE = "unreadable"
NO_VIDEO_STREAM = "no_video_stream"
NO_FRAMES = "no_frames"
TRUNCATED = "truncated"
VIDEO_DECODE_ERRORS = "video_decode_errors"
AUDIO_DECODE_ERRORS = "audio_decode_errors"
NO_AUDIO_STREAM = "no_audio_stream"
SILENT_AUDIO = "silent_audio"
AUDIO_SHORT = "audio_short"
SHORT_VIDEO = "short_video"
LONG_VIDEO = "long_video"
MISSING_FILE = "missing_file"
DUPLICATE_ID = "duplicate_id"


@dataclass(frozen=True)
class Problem:
    """One problem met with one video: its id, file, kind, a human detail, and whether the
    video was left without features."""

    video_id: str
    file: str
    kind: str
    detail: str = ""
    failed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DecodeSpec:
    """What to decode: picklable, shipped to every worker process."""

    image_size: tuple[int, int] = (336, 336)  # (height, width) the image encoder wants
    resize_mode: str = "shortest"  # open_clip's: shortest (resize + centre crop) | squash | longest
    interpolation: str = "bicubic"
    fill_color: int = 0
    seconds: int | None = 60  # decode at most this many seconds; None = the whole file
    frame_position: float = 0.0  # which instant of each second: 0 = its start, 0.5 = its middle
    visual: bool = True
    audio: bool = True
    silence_peak: float = 1e-4  # |sample| below this everywhere = silent audio (about -80 dBFS)
    decode_threads: int = 1
    gop_skip: bool = True  # skip the tail of each group of pictures after its last needed frame
    fast_decode: bool = False  # lossy: skip deblocking and frames no other frame references
    hwaccel: str | None = None  # e.g. "cuda": decode on the GPU (NVDEC), software if unavailable


@dataclass
class DecodedVideo:
    """A decoded video: ``frames`` uint8 [n, H, W, 3], ``log_mel`` float32 [n, 96, 64]
    (``n`` = whole seconds decoded, before any padding), and the problems met."""

    video_id: str
    path: str
    frames: torch.Tensor | None = None
    log_mel: torch.Tensor | None = None
    n_seconds: int = 0
    duration: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(p.failed for p in self.problems)

