"""The synthetic scenes: instrument classes (look and timbre), what one video holds
(:class:`Scene`), the dataset settings (:class:`SynthConfig`) and random scene sampling.

Each video shows one to three instruments side by side (left / middle / right), every class
drawn as its own coloured shape on a grey stage, and plays their sounds: every class has its own
timbre (pitch, harmonics, rhythm), every instrument its own loudness and sounding interval (whole
seconds). An instrument may stay silent throughout, and an *off-screen* instrument may be heard
that is never seen. Everything is deterministic given :attr:`SynthConfig.seed`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

POSITIONS = ("left", "middle", "right")
SPLITS = ("train", "val", "test")

@dataclass(frozen=True)
class Look:
    """How an instrument class is drawn: an RGB colour and a shape name (see
    :data:`avmaster.demo.render.SHAPES`)."""

    colour: tuple[int, int, int]
    shape: str


@dataclass(frozen=True)
class Timbre:
    """How an instrument class sounds: fundamental (Hz), relative harmonic amplitudes, and a
    rhythm (``pulse_hz`` > 0: struck notes that decay with ``decay_s``; 0: sustained)."""

    f0: float
    harmonics: tuple[float, ...]
    pulse_hz: float = 0.0
    decay_s: float = 0.15
    noise: float = 0.0  # share of broadband noise (a drum's hit)


# MUSIC-AVQA's instrument names; colours and pitches are far apart so that even randomly
# initialised encoders keep them apart.
INSTRUMENTS: dict[str, tuple[Look, Timbre]] = {
    "piano": (Look((230, 40, 40), "square"), Timbre(247.0, (1.0, 0.5, 0.25), 2.0, 0.3)),
    "violin": (Look((40, 200, 60), "triangle"), Timbre(587.0, (1.0, 0.6, 0.4))),
    "cello": (Look((50, 90, 240), "circle"), Timbre(155.0, (1.0, 0.7))),
    "flute": (Look((240, 220, 40), "diamond"), Timbre(1245.0, (1.0,))),
    "guzheng": (Look((220, 50, 220), "cross"), Timbre(415.0, (1.0, 0.4), 4.0, 0.12)),
    "trumpet": (Look((40, 220, 220), "ring"), Timbre(349.0, (1.0, 0.8, 0.6, 0.5))),
    "drum": (Look((250, 140, 20), "bars"), Timbre(90.0, (1.0,), 3.0, 0.08, 0.6)),
    "accordion": (Look((240, 240, 240), "hourglass"), Timbre(784.0, (1.0, 0.5))),
}


# Six classes by default: every class then appears in more videos, which a small demo needs.
DEFAULT_INSTRUMENTS = ("piano", "violin", "cello", "flute", "trumpet", "drum")


@dataclass(frozen=True)
class Instrument:
    """One instrument in a scene: class, place (``None`` = off-screen: heard, never seen),
    sounding interval ``[start, end)`` in whole seconds (``start == end``: silent throughout)
    and loudness (amplitude)."""

    name: str
    position: str | None
    start: int = 0
    end: int = 0
    level: float = 0.0

    @property
    def sounding(self) -> bool:
        return self.end > self.start and self.level > 0

    @property
    def visible(self) -> bool:
        return self.position is not None

    @property
    def duration(self) -> int:
        return max(0, self.end - self.start) if self.sounding else 0

    def sounds_at(self, second: int) -> bool:
        return self.sounding and self.start <= second < self.end


@dataclass(frozen=True)
class Scene:
    """What one video holds; every answer is a function of it."""

    video_id: str
    seconds: int
    instruments: tuple[Instrument, ...]

    @property
    def visible(self) -> list[Instrument]:
        """On-screen instruments, left to right."""
        return sorted((i for i in self.instruments if i.visible),
                      key=lambda i: POSITIONS.index(i.position))  # type: ignore[arg-type]

    @property
    def sounding(self) -> list[Instrument]:
        """Every instrument heard (on- or off-screen), in order of onset."""
        return sorted((i for i in self.instruments if i.sounding), key=lambda i: i.start)

    @property
    def visible_sounding(self) -> list[Instrument]:
        return [i for i in self.sounding if i.visible]

    def at(self, position: str) -> Instrument | None:
        return next((i for i in self.instruments if i.position == position), None)

    def visible_of(self, name: str) -> list[Instrument]:
        return [i for i in self.visible if i.name == name]

    def always_playing(self, inst: Instrument) -> bool:
        return inst.sounding and inst.start == 0 and inst.end >= self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {"video_id": self.video_id, "seconds": self.seconds,
                "instruments": [asdict(i) for i in self.instruments]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        return cls(d["video_id"], int(d["seconds"]),
                   tuple(Instrument(**i) for i in d["instruments"]))


@dataclass
class SynthConfig:
    """Settings of a synthetic dataset (the defaults make the demo's dataset)."""

    videos: int = 300
    seconds: int = 10
    fps: int = 4
    size: int = 64  # square frames, pixels
    sample_rate: int = 16000
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train / val / test share of videos
    visible_weights: tuple[float, float, float] = (0.2, 0.35, 0.45)  # 1, 2 or 3 on screen
    p_duplicate: float = 0.35  # a class shown twice
    p_silent: float = 0.2  # an on-screen instrument never sounds
    p_offscreen: float = 0.25  # an extra instrument heard but not seen
    p_always: float = 0.3  # an instrument sounds from the first second to the last
    p_same_onset: float = 0.3  # two instruments of one class come in together
    min_duration: int = 2  # seconds a sounding instrument lasts at least
    levels: tuple[float, ...] = (0.08, 0.25, 0.7)  # loudness steps (amplitudes)
    dim: float = 0.3  # brightness of a silent instrument's shape
    background: tuple[int, int, int] = (128, 128, 128)  # mid grey: random encoders vary most
    shape_margin: int = 2  # pixels between a slot's edge and its shape
    peak: float = 0.9  # mixtures louder than this are scaled down to it
    questions_per_video: float = 1.0  # per template: at most this many questions per video
    min_answer_count: int = 2  # answers rarer than this in a split are left out (balance)
    first_video_id: int = 1
    seed: int = 0
    instruments: tuple[str, ...] = DEFAULT_INSTRUMENTS
    workers: int = 1  # processes writing videos

    def __post_init__(self) -> None:
        self.split = tuple(self.split)  # type: ignore[assignment]
        self.visible_weights = tuple(self.visible_weights)  # type: ignore[assignment]
        self.levels = tuple(self.levels)
        self.background = tuple(self.background)  # type: ignore[assignment]
        self.instruments = tuple(self.instruments)
        unknown = [n for n in self.instruments if n not in INSTRUMENTS]
        if unknown:
            raise ValueError(f"unknown instruments {unknown}; known: {list(INSTRUMENTS)}")
        if len(self.instruments) < len(POSITIONS) + 1:
            raise ValueError(f"need at least {len(POSITIONS) + 1} instrument classes")
        if self.seconds < 2 * self.min_duration:
            raise ValueError(f"seconds must be at least {2 * self.min_duration}")
        if abs(sum(self.split) - 1.0) > 1e-6 or len(self.split) != len(SPLITS):
            raise ValueError(f"split {self.split}: three shares summing to 1")

    def settings(self) -> dict[str, Any]:
        """What decides the dataset's content (``workers`` does not)."""
        out = asdict(self)
        out.pop("workers")
        return json.loads(json.dumps(out))


def sample_scene(video_id: str, cfg: SynthConfig, rng: np.random.Generator) -> Scene:
    """A random scene: classes, places, sounding intervals, loudness and off-screen sound."""
    n_visible = int(rng.choice(len(POSITIONS), p=np.array(cfg.visible_weights) /
                               sum(cfg.visible_weights))) + 1
    names = [str(n) for n in rng.choice(cfg.instruments, size=n_visible, replace=False)]
    if n_visible > 1 and rng.random() < cfg.p_duplicate:
        names[-1] = names[0]
    slots = sorted(rng.choice(len(POSITIONS), size=n_visible, replace=False).tolist())
    positions: list[str | None] = [POSITIONS[s] for s in slots]
    order = rng.permutation(n_visible)
    names = [names[k] for k in order]
    heard = [rng.random() >= cfg.p_silent for _ in names]
    if not any(heard):
        heard[int(rng.integers(n_visible))] = True
    if rng.random() < cfg.p_offscreen:
        unseen = [n for n in cfg.instruments if n not in names]
        names.append(str(rng.choice(unseen)))
        positions.append(None)
        heard.append(True)
    onsets = _onsets(len(names), cfg, rng)
    steps = _loudness_steps(len(names), cfg, rng)
    dup = [k for k in range(len(names)) if positions[k] and names.count(names[k]) > 1]
    if len(dup) == 2 and heard[dup[0]] and heard[dup[1]] and rng.random() < cfg.p_same_onset:
        onsets[dup[1]] = onsets[dup[0]]
    instruments = []
    for k, name in enumerate(names):
        if not heard[k]:
            instruments.append(Instrument(name, positions[k]))
            continue
        start = int(onsets[k])
        if rng.random() < cfg.p_always:
            start = 0
        end = int(rng.integers(min(start + cfg.min_duration, cfg.seconds), cfg.seconds + 1))
        if start == 0 and rng.random() < cfg.p_always:
            end = cfg.seconds
        instruments.append(Instrument(name, positions[k], start, max(end, start + 1),
                                      float(cfg.levels[steps[k]])))
    return Scene(video_id, cfg.seconds, tuple(instruments))


def _onsets(n: int, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    latest = cfg.seconds - cfg.min_duration
    return rng.choice(latest + 1, size=n, replace=n > latest + 1)


def _loudness_steps(n: int, cfg: SynthConfig, rng: np.random.Generator) -> list[int]:
    """Indices into ``cfg.levels``: all different while there are enough steps."""
    k = len(cfg.levels)
    picks = rng.permutation(k)[:n] if n <= k else rng.integers(k, size=n)
    return [int(p) for p in picks]


def sample_scenes(cfg: SynthConfig) -> list[Scene]:
    rng = np.random.default_rng(cfg.seed)
    return [sample_scene(video_id(cfg.first_video_id + i), cfg, rng) for i in range(cfg.videos)]


def video_id(number: int) -> str:
    """MUSIC-AVQA-style id: eight digits."""
    return f"{number:08d}"


def split_scenes(scenes: Sequence[Scene], cfg: SynthConfig) -> dict[str, list[Scene]]:
    n = len(scenes)
    n_train = round(cfg.split[0] * n)
    n_val = round(cfg.split[1] * n)
    return {"train": list(scenes[:n_train]), "val": list(scenes[n_train: n_train + n_val]),
            "test": list(scenes[n_train + n_val:])}

