"""Synthetic audio-visual clips written with PyAV: coloured shapes and tones, for tests and demos.

Every second of a clip made by :func:`synthetic_clip` has its own background colour
(:func:`second_colour`) and its own tone, so a test can tell which second a decoded frame or an
audio example came from.
"""

from __future__ import annotations

import colorsys
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import av
import numpy as np

from avmaster.atomic import atomic_path

T = TypeVar("T")
AUDIO_FRAME_SAMPLES = 1024  # samples per audio frame handed to the encoder
DEFAULT_CODECS = {".webm": ("libvpx", "libopus")}  # (video, audio) per suffix; else below
FALLBACK_CODECS = ("libx264", "aac")
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
FPS_DENOMINATOR_LIMIT = 1001  # enough for NTSC rates such as 30000/1001
X264_DEFAULTS = {"x264-params": "mbtree=0"}
"""x264's macroblock-tree rate control reads uninitialised memory on small flat frames such as
the demo's (the output changes with glibc's ``MALLOC_PERTURB_``), so the same frames encoded to
different pixels in different processes; without it every file is reproducible."""


@dataclass(frozen=True)
class ClipSpec:
    """Shape of a synthetic clip; the defaults make a tiny clip that encodes in milliseconds."""

    seconds: float = 4.0
    fps: float = 10.0
    width: int = 64
    height: int = 48
    sample_rate: int = 16000
    channels: int = 1
    audio: bool = True
    silent: bool = False
    amplitude: float = 0.3
    base_tone_hz: float = 220.0
    texture: float = 0.0  # 0..1: blend of a scrolling noise texture (realistic bit rates)
    seed: int = 0


def second_colour(k: int) -> tuple[int, int, int]:
    """The background colour of second ``k``: well-separated hues (golden-ratio steps)."""
    hue = (k * 0.618034) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def second_tone(k: int, base_hz: float) -> float:
    """The tone of second ``k``: one of four harmonics of ``base_hz``."""
    return base_hz * (1 + k % 4)


def synthetic_frames(spec: ClipSpec) -> Iterator[np.ndarray]:
    """Yield ``round(seconds * fps)`` RGB frames [H, W, 3]: per-second colour + a moving square."""
    n = round(spec.seconds * spec.fps)
    side = max(2, min(spec.width, spec.height) // 4)
    texture = None
    if spec.texture > 0:
        rng = np.random.default_rng(spec.seed)
        texture = rng.integers(0, 256, (spec.height, 2 * spec.width, 3)).astype(np.float32)
    for i in range(n):
        t = i / spec.fps
        frame = np.empty((spec.height, spec.width, 3), np.uint8)
        frame[:] = second_colour(int(t))
        if texture is not None:
            shift = i % spec.width
            layer = texture[:, shift : shift + spec.width]
            frame[:] = ((1 - spec.texture) * frame + spec.texture * layer).astype(np.uint8)
        x = int((spec.width - side) * ((t * 0.37) % 1.0))
        y = (spec.height - side) // 2
        frame[y : y + side, x : x + side] = 255
        yield frame


def synthetic_audio(spec: ClipSpec) -> np.ndarray | None:
    """Float32 [S, C] in [-1, 1]: one tone per second (zeros when ``silent``), or ``None``."""
    if not spec.audio:
        return None
    n = round(spec.seconds * spec.sample_rate)
    t = np.arange(n) / spec.sample_rate
    if spec.silent:
        return np.zeros((n, spec.channels), np.float32)
    freq = np.array([second_tone(int(s), spec.base_tone_hz) for s in t])
    phase = 2 * np.pi * np.cumsum(freq) / spec.sample_rate
    rng = np.random.default_rng(spec.seed)
    chans = [spec.amplitude * np.sin(phase + c * np.pi / 3) + 0.01 * rng.standard_normal(n)
             for c in range(spec.channels)]
    return np.clip(np.stack(chans, axis=1), -1, 1).astype(np.float32)


def synthetic_clip(path: Path | str, spec: ClipSpec | None = None,
                   options: dict[str, str] | None = None, **kw: object) -> Path:
    """Write a synthetic clip (H.264 + AAC in the container the suffix names) and return its path.

    ``kw`` overrides fields of ``spec`` (e.g. ``seconds=3, fps=29.97, channels=2``);
    ``options`` go to the video encoder (see :func:`write_video`).
    """
    spec = ClipSpec(**{**(spec.__dict__ if spec else {}), **kw})  # type: ignore[arg-type]
    return write_video(path, synthetic_frames(spec), spec.fps, synthetic_audio(spec),
                       spec.sample_rate, options=options)


def synthetic_clips(jobs: Sequence[tuple[Path, ClipSpec]], options: dict[str, str] | None = None,
                    workers: int = 1) -> list[Path]:
    """Write each ``(path, spec)`` clip with :func:`synthetic_clip`, ``workers`` processes at a
    time, each through :func:`~avmaster.atomic.atomic_path` (a killed run leaves no partial
    file under a clip's name)."""
    in_processes(_write_atomic, [(Path(path), spec, options) for path, spec in jobs], workers)
    return [Path(path) for path, _ in jobs]


def _write_atomic(job: tuple[Path, ClipSpec, dict[str, str] | None]) -> None:
    path, spec, options = job
    with atomic_path(path) as tmp:
        synthetic_clip(tmp, spec, options=options)


def in_processes(fn: Callable[[T], object], jobs: Sequence[T], workers: int,
                 chunksize: int = 1) -> None:
    """``fn(job)`` for every job, in up to ``workers`` spawned processes (spawned: the caller
    may hold CUDA or threads), or in this process for one worker or one job."""
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            for _ in pool.imap_unordered(fn, jobs, chunksize=chunksize):
                pass
    else:
        for job in jobs:
            fn(job)


def _rate(fps: float | Fraction) -> Fraction:
    return Fraction(fps).limit_denominator(FPS_DENOMINATOR_LIMIT)


def write_video(
    path: Path | str,
    frames_rgb: np.ndarray | Iterable[np.ndarray],
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int = 48000,
    *,
    video_codec: str | None = None,
    audio_codec: str | None = None,
    pix_fmt: str | None = None,
    bit_rate: int | None = None,
    options: dict[str, str] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write frames (uint8 [N, H, W, 3] or an iterable of [H, W, 3]) and optional audio
    (float [S, C] in [-1, 1], C = 1 or 2) to ``path``; the suffix picks the container.

    Codecs default to H.264 + AAC (VP8 + Opus for ``.webm``, whose rates Opus limits).
    Odd frame sizes use ``yuv444p`` (4:2:0 needs even sizes). ``options`` go to the video
    encoder (e.g. ``{"preset": "ultrafast", "g": "250", "bf": "3"}``); for libx264 they are
    added to :data:`X264_DEFAULTS` (an ``x264-params`` of their own replaces it).
    ``metadata``: the container's tags (e.g. ``{"title": ...}``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    default_v, default_a = DEFAULT_CODECS.get(path.suffix.lower(), FALLBACK_CODECS)
    video_codec, audio_codec = video_codec or default_v, audio_codec or default_a
    if audio is not None and audio_codec == "libopus" and sample_rate not in OPUS_RATES:
        raise ValueError(f"Opus audio ({path.suffix}) takes {OPUS_RATES} Hz, not {sample_rate}")
    frames = iter(frames_rgb)
    first = next(frames, None)
    if first is None:
        raise ValueError("write_video needs at least one frame")
    height, width = first.shape[:2]
    if video_codec == "libx264":
        options = {**X264_DEFAULTS, **(options or {})}
    with av.open(str(path), "w") as out:
        out.metadata.update(metadata or {})
        vs = out.add_stream(video_codec, rate=_rate(fps), options=options or {})
        vs.width, vs.height = width, height
        vs.pix_fmt = pix_fmt or ("yuv444p" if width % 2 or height % 2 else "yuv420p")
        if bit_rate:
            vs.bit_rate = bit_rate
        aus = None
        if audio is not None:
            audio = np.asarray(audio, np.float32)
            audio = audio[:, None] if audio.ndim == 1 else audio
            layout = {1: "mono", 2: "stereo"}[audio.shape[1]]
            aus = out.add_stream(audio_codec, rate=sample_rate, layout=layout)
        for img in _chain(first, frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
        if aus is not None and audio is not None:
            planar = np.ascontiguousarray(audio.T)
            pts = 0
            for s in range(0, planar.shape[1], AUDIO_FRAME_SAMPLES):
                chunk = np.ascontiguousarray(planar[:, s : s + AUDIO_FRAME_SAMPLES])
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=aus.layout.name)
                af.sample_rate, af.pts = sample_rate, pts
                pts += chunk.shape[1]
                out.mux(aus.encode(af))
            out.mux(aus.encode(None))
    return path


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest
