"""Synthetic scenes as media: every on-screen instrument drawn as its class's shape (bright
while it sounds, dimmed while silent), every sounding one heard with its class's timbre, written
as one video file per scene."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from avmaster.demo.scene import INSTRUMENTS, POSITIONS, Instrument, Scene, SynthConfig
from avmaster.extract.synth_media import write_video

FADE_SECONDS = 0.01  # onset/offset ramps: no clicks at interval edges

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]
SHAPES: dict[str, Mask] = {  # u, v in [-1, 1] across the shape's box
    "square": lambda u, v: (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8),
    "circle": lambda u, v: u**2 + v**2 <= 0.85,
    "triangle": lambda u, v: (v >= -0.9) & (v <= 0.9) & (np.abs(u) <= (v + 0.9) / 1.8),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.0,
    "cross": lambda u, v: (np.abs(u) <= 0.3) | (np.abs(v) <= 0.3),
    "ring": lambda u, v: (u**2 + v**2 <= 0.9) & (u**2 + v**2 >= 0.3),
    "bars": lambda u, v: np.cos(v * 2.5 * np.pi) > 0,
    "hourglass": lambda u, v: np.abs(u) <= np.abs(v),
}


@lru_cache(maxsize=256)
def shape_mask(size: int, margin: int, position: str, shape: str) -> np.ndarray:
    """Boolean [size, size] mask of ``shape`` in ``position``'s third of the frame."""
    slot = size // len(POSITIONS)
    box_w, box_h = slot - 2 * margin, size - 2 * margin
    v, u = np.meshgrid(np.linspace(-1, 1, box_h), np.linspace(-1, 1, box_w), indexing="ij")
    left = POSITIONS.index(position) * slot + (size - slot * len(POSITIONS)) // 2
    left += (slot - box_w) // 2
    top = (size - box_h) // 2
    m = np.zeros((size, size), bool)
    m[top: top + box_h, left: left + box_w] = SHAPES[shape](u, v)
    m.flags.writeable = False
    return m


def render_frames(scene: Scene, cfg: SynthConfig) -> np.ndarray:
    """uint8 [seconds * fps, size, size, 3]: every second's picture, repeated ``fps`` times.

    Each on-screen instrument is its class's shape and colour, bright while it sounds and
    dimmed (``cfg.dim``) while it is silent."""
    seconds = np.empty((scene.seconds, cfg.size, cfg.size, 3), np.uint8)
    for s in range(scene.seconds):
        img = np.empty((cfg.size, cfg.size, 3), np.uint8)
        img[:] = cfg.background
        for inst in scene.visible:
            look = INSTRUMENTS[inst.name][0]
            gain = 1.0 if inst.sounds_at(s) else cfg.dim
            mask = shape_mask(cfg.size, cfg.shape_margin, inst.position, look.shape)
            img[mask] = (np.array(look.colour) * gain).astype(np.uint8)
        seconds[s] = img
    return np.repeat(seconds, cfg.fps, axis=0)


def instrument_wave(inst: Instrument, cfg: SynthConfig, n_samples: int,
                    rng: np.random.Generator) -> np.ndarray:
    """The instrument's unit-RMS timbre times its loudness, sounding in ``[start, end)``."""
    t = np.arange(n_samples) / cfg.sample_rate
    timbre = INSTRUMENTS[inst.name][1]
    wave = sum(a * np.sin(2 * np.pi * timbre.f0 * (h + 1) * t)
               for h, a in enumerate(timbre.harmonics))
    wave = np.asarray(wave, np.float64)
    if timbre.noise:
        wave = (1 - timbre.noise) * wave + timbre.noise * rng.standard_normal(n_samples)
    if timbre.pulse_hz:
        phase = (t * timbre.pulse_hz) % 1.0 / timbre.pulse_hz
        wave = wave * np.exp(-phase / timbre.decay_s)
    wave /= np.sqrt(np.mean(wave**2)) + 1e-12
    edge = np.minimum(t - inst.start, inst.end - t)  # seconds inside the interval
    gate = np.clip(edge / FADE_SECONDS + 0.5, 0.0, 1.0)
    return inst.level * wave * gate


def render_audio(scene: Scene, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """float32 [samples, 1]: the mixture of every sounding instrument (scaled to ``peak``)."""
    n = scene.seconds * cfg.sample_rate
    mix = np.zeros(n)
    for inst in scene.sounding:
        mix += instrument_wave(inst, cfg, n, rng)
    top = np.abs(mix).max()
    if top > cfg.peak:
        mix *= cfg.peak / top
    return mix.astype(np.float32)[:, None]


def write_scene_video(scene: Scene, cfg: SynthConfig, path: Path) -> Path:
    rng = np.random.default_rng([cfg.seed, int(scene.video_id)])
    return write_video(path, render_frames(scene, cfg), cfg.fps, render_audio(scene, cfg, rng),
                       cfg.sample_rate)


def write_one(args: tuple[dict[str, Any], dict[str, Any], str]) -> str:
    """Picklable worker: ``(scene dict, config dict, path)`` -> the written video's path."""
    scene, cfg, path = args
    return str(write_scene_video(Scene.from_dict(scene), SynthConfig(**cfg), Path(path)))
