"""A small synthetic MUSIC-AVQA-style dataset of real video files, with answers known exactly.

Each video shows one to three instruments side by side (left / middle / right), every class
drawn as its own coloured shape on a grey stage, and plays their sounds: every class has its own
timbre (pitch, harmonics, rhythm), every instrument its own loudness and sounding interval (whole
seconds). A shape is drawn bright while its instrument sounds and dimmed while it is silent; an
instrument may stay silent throughout, and an *off-screen* instrument may be heard that is never
seen.

Questions use MUSIC-AVQA's own templates (all nine question types); their answers are computed
from the scene (:class:`Scene`). Per template and split the chosen questions have balanced
answers, so the question text alone does not tell the answer. The files follow MUSIC-AVQA's
``json_update`` format (``avqa-{train,val,test}.json``, answer key ``anser``) and an
``answers.json`` list; everything is deterministic given :attr:`SynthConfig.seed`.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from itertools import permutations
from pathlib import Path
from typing import Any

import numpy as np

from avmaster.extract.synth_media import write_video

POSITIONS = ("left", "middle", "right")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")
ORDINALS = ("first", "second", "third")
SPLITS = ("train", "val", "test")
YES, NO = "yes", "no"
SIMULTANEOUSLY = "simultaneously"
FADE_SECONDS = 0.01  # onset/offset ramps: no clicks at interval edges
ANNOTATION_NAME = "avqa-{split}.json"
ANSWERS_NAME = "answers.json"
SCENES_NAME = "scenes.json"
MANIFEST_NAME = "synth.json"
VIDEO_DIR = "videos"
VIDEO_SUFFIX = ".mp4"


@dataclass(frozen=True)
class Look:
    """How an instrument class is drawn: an RGB colour and a shape name (see :data:`SHAPES`)."""

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


# ----------------------------------------------------------------------------- scenes


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


# ----------------------------------------------------------------------------- templates

Candidate = tuple[tuple[str, ...], str]  # (template values, answer)


@dataclass(frozen=True)
class Template:
    """A MUSIC-AVQA question template and how to ask it about a scene (every
    ``(values, answer)`` that has exactly one right answer there)."""

    modality: str
    qtype: str
    text: str
    ask: Callable[[Scene, Sequence[str]], list[Candidate]]

    @property
    def type_json(self) -> str:
        return json.dumps([self.modality, self.qtype])


def yes_no(flag: bool) -> str:
    return YES if flag else NO


def number(n: int) -> str:
    return NUMBERS[n]


def _unique_visible(scene: Scene) -> list[Instrument]:
    """On-screen instruments whose class appears once on screen (a name then says which)."""
    return [i for i in scene.visible if len(scene.visible_of(i.name)) == 1]


def _distinct(values: Iterable[float]) -> bool:
    values = list(values)
    return len(set(values)) == len(values)


def _by_onset(instruments: Sequence[Instrument]) -> list[Instrument] | None:
    """Sounding instruments in order of onset, or ``None`` when two come in together."""
    out = sorted((i for i in instruments if i.sounding), key=lambda i: i.start)
    return out if _distinct(i.start for i in out) else None


# Audio / Counting
def ask_sound(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    heard = {i.name for i in scene.sounding}
    return [((n,), yes_no(n in heard)) for n in names]


def ask_heard_count(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    return [((), number(len(scene.sounding)))]


def ask_two_sounds(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    heard = {i.name for i in scene.sounding}
    return [((a, b), yes_no(a in heard and b in heard)) for a, b in permutations(names, 2)]


# Audio / Comparative
def _heard_once(scene: Scene) -> list[Instrument]:
    heard = scene.sounding
    return [i for i in heard if sum(j.name == i.name for j in heard) == 1]


def ask_louder(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    return [((a.name, b.name), yes_no(a.level > b.level))
            for a, b in permutations(_heard_once(scene), 2) if a.level != b.level]


def ask_longer(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    return [((a.name, b.name), yes_no(a.duration > b.duration))
            for a, b in permutations(_heard_once(scene), 2) if a.duration != b.duration]


# Visual / Counting
def ask_seen(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    seen = {i.name for i in scene.visible}
    return [((n,), yes_no(n in seen)) for n in names]


def ask_seen_types(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    return [((), number(len({i.name for i in scene.visible})))]


def ask_two_seen(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    seen = {i.name for i in scene.visible}
    return [((a, b), yes_no(a in seen and b in seen)) for a, b in permutations(names, 2)]


def ask_how_many_of(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    return [((n,), number(len(scene.visible_of(n)))) for n in sorted({i.name for i in
                                                                       scene.visible})]


# Visual / Location
def ask_neighbour(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    out: list[Candidate] = []
    row = scene.visible
    for inst in _unique_visible(scene):
        k = row.index(inst)
        if k > 0:
            out.append((("left", inst.name), row[k - 1].name))
        if k + 1 < len(row):
            out.append((("right", inst.name), row[k + 1].name))
    return out


def ask_extreme(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    row = scene.visible
    if len(row) < 2:
        return []
    return [(("leftest",), row[0].name), (("rightest",), row[-1].name)]


def ask_what_is_it(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    row = scene.visible
    return [((), row[0].name)] if len(row) == 1 else []


# Audio-Visual / Existential
def ask_always(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    return [((i.name,), yes_no(scene.always_playing(i))) for i in _unique_visible(scene)]


def ask_sound_on_screen(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    return [((), yes_no(all(i.visible for i in scene.sounding)))]


# Audio-Visual / Counting
def ask_sounding_of(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    return [((n,), number(sum(i.sounding for i in scene.visible_of(n))))
            for n in sorted({i.name for i in scene.visible})]


def ask_sounding_count(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    return [((), number(len(scene.visible_sounding)))]


def ask_never_sounding(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    return [((), number(sum(not i.sounding for i in scene.visible)))]


def ask_sounding_types(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    return [((), number(len({i.name for i in scene.visible_sounding})))]


# Audio-Visual / Location
def _loudest(scene: Scene) -> Instrument | None:
    heard = scene.sounding
    if not heard:
        return None
    top = max(heard, key=lambda i: i.level)
    return top if sum(i.level == top.level for i in heard) == 1 else None


def ask_where_loudest(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    top = _loudest(scene)
    return [(("loudest",), top.position)] if top and top.visible else []


def _first_last(scene: Scene) -> dict[str, Instrument]:
    """The first and the last instrument to come in (heard at all), when unambiguous."""
    heard = scene.sounding
    out = {}
    if heard and sum(i.start == heard[0].start for i in heard) == 1:
        out["first"] = heard[0]
    if len(heard) > 1 and sum(i.start == heard[-1].start for i in heard) == 1:
        out["last"] = heard[-1]
    return out


def ask_fl_from(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    if len(scene.visible) < 2:
        return []
    return [((fl, p), yes_no(inst.position == p)) for fl, inst in _first_last(scene).items()
            for p in POSITIONS if scene.at(p) is not None]


def ask_fl_neighbour(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    row = scene.visible
    out: list[Candidate] = []
    for fl, inst in _first_last(scene).items():
        if not inst.visible:
            continue
        k = row.index(inst)
        if k > 0:
            out.append((("left", fl), row[k - 1].name))
        if k + 1 < len(row):
            out.append((("right", fl), row[k + 1].name))
    return out


def ask_same_time(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    out: list[Candidate] = []
    heard = [i for i in scene.visible_sounding if i in _unique_visible(scene)]
    for inst in heard:
        others = [j for j in scene.sounding if j is not inst
                  and j.start < inst.end and inst.start < j.end]
        if len(others) == 1 and others[0].name != inst.name:
            out.append(((inst.name,), others[0].name))
    return out


# Audio-Visual / Comparative
def ask_place_louder(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    return [((a.position, b.position), yes_no(a.level > b.level))
            for a, b in permutations(scene.visible_sounding, 2) if a.level != b.level]


def ask_object_place_louder(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    return [((a.name, a.position, b.name, b.position), yes_no(a.level > b.level))
            for a, b in permutations(scene.visible_sounding, 2) if a.level != b.level]


# Audio-Visual / Temporal
def ask_where_fl(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    order = _by_onset(scene.visible_sounding)
    if not order or len(order) < 2:
        return []
    return [(("first",), order[0].position), (("last",), order[-1].position)]


def ask_nth(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    order = _by_onset(scene.visible_sounding)
    if not order or len(order) < 2:
        return []
    return [((ORDINALS[k],), inst.name) for k, inst in enumerate(order[: len(ORDINALS)])]


def ask_which_of_first(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    out: list[Candidate] = []
    for n in sorted({i.name for i in scene.visible}):
        group = [i for i in scene.visible_of(n) if i.sounding]
        if len(group) != 2 or len(scene.visible_of(n)) != 2:
            continue
        a, b = group
        if a.start == b.start:
            out += [((n, "first"), SIMULTANEOUSLY)]
        else:
            early, late = (a, b) if a.start < b.start else (b, a)
            out += [((n, "first"), early.position), ((n, "last"), late.position)]
    return out


def ask_before_after(scene: Scene, names: Sequence[str]) -> list[Candidate]:
    order = _by_onset(scene.visible_sounding)
    if not order:
        return []
    out: list[Candidate] = []
    for k, inst in enumerate(order):
        if len(scene.visible_of(inst.name)) != 1:
            continue
        if k > 0 and order[k - 1].name != inst.name:
            out.append((("before", inst.name), order[k - 1].name))
        if k + 1 < len(order) and order[k + 1].name != inst.name:
            out.append((("after", inst.name), order[k + 1].name))
    return out


A, V, AV = "Audio", "Visual", "Audio-Visual"
TEMPLATES: tuple[Template, ...] = (
    Template(A, "Counting", "Is there a <Object> sound?", ask_sound),
    Template(A, "Counting", "How many musical instruments were heard throughout the video?",
             ask_heard_count),
    Template(A, "Counting", "Are there <Object> and <Object> sound? ", ask_two_sounds),
    Template(A, "Comparative", "Is the <Object> louder than the <Object>?", ask_louder),
    Template(A, "Comparative", "Is the <Object> playing longer than the <Object>?", ask_longer),
    Template(V, "Counting", "Is there a <Object> in the entire video?", ask_seen),
    Template(V, "Counting", "How many types of musical instruments appeared in the entire "
                            "video?", ask_seen_types),
    Template(V, "Counting", "Are there <Object> and <Object> instruments in the video?",
             ask_two_seen),
    Template(V, "Counting", "How many <Object> are in the entire video?", ask_how_many_of),
    Template(V, "Location", "What is the instrument on the <LR> of <Object>?", ask_neighbour),
    Template(V, "Location", "What kind of instrument is the <LRer> instrument? ", ask_extreme),
    Template(V, "Location", "What kind of musical instrument is it?", ask_what_is_it),
    Template(AV, "Existential", "Is the <Object> in the video always playing?", ask_always),
    Template(AV, "Existential", "Is this sound from the instrument in the video?",
             ask_sound_on_screen),
    Template(AV, "Counting", "How many sounding <Object> in the video？", ask_sounding_of),
    Template(AV, "Counting", "How many instruments are sounding in the video?",
             ask_sounding_count),
    Template(AV, "Counting", "How many instruments in the video did not sound from beginning "
                             "to end?", ask_never_sounding),
    Template(AV, "Counting", "How many types of musical instruments sound in the video?",
             ask_sounding_types),
    Template(AV, "Location", "Where is the <LL> instrument?", ask_where_loudest),
    Template(AV, "Location", "Is the <FL> sound coming from the <LR> instrument?", ask_fl_from),
    Template(AV, "Location", "What is the <LR> instrument of the <FL> sounding instrument?",
             ask_fl_neighbour),
    Template(AV, "Location", "Which is the musical instrument that sounds at the same time as "
                             "the <Object>?", ask_same_time),
    Template(AV, "Comparative", "Is the instrument on the <LR> louder than the instrument on "
                                "the <LR>?", ask_place_louder),
    Template(AV, "Comparative", "Is the <Object> on the <LR> louder than the <Object> on the "
                                "<LR>?", ask_object_place_louder),
    Template(AV, "Temporal", "Where is the <FL> sounding instrument?", ask_where_fl),
    Template(AV, "Temporal", "What is the <TH> instrument that comes in?", ask_nth),
    Template(AV, "Temporal", "Which <Object> makes the sound <FL>?", ask_which_of_first),
    Template(AV, "Temporal", "Which instrument makes sounds <BA> the <Object>?",
             ask_before_after),
)


@dataclass(frozen=True)
class Question:
    """One generated question (before it becomes an annotation entry)."""

    video_id: str
    template: Template
    values: tuple[str, ...]
    answer: str

    def entry(self, question_id: int) -> dict[str, Any]:
        """The MUSIC-AVQA ``json_update`` entry (the answer key is spelled ``anser``)."""
        return {"video_id": self.video_id, "question_id": question_id,
                "type": self.template.type_json, "question_content": self.template.text,
                "templ_values": json.dumps(list(self.values)), "question_deleted": 0,
                "anser": self.answer}


def balanced_questions(scenes: Sequence[Scene], cfg: SynthConfig,
                       rng: np.random.Generator) -> list[Question]:
    """Questions about ``scenes`` with, per template, the same number of each answer.

    Every video offers at most one question per (template, answer); an answer offered by fewer
    than ``cfg.min_answer_count`` videos is dropped; a template left with a single answer is
    not asked. At most ``cfg.questions_per_video * len(scenes)`` questions per template.
    """
    out: list[Question] = []
    budget = max(1, round(cfg.questions_per_video * len(scenes)))
    for template in TEMPLATES:
        offers: dict[str, list[Question]] = defaultdict(list)
        for scene in scenes:
            per_answer: dict[str, list[Candidate]] = defaultdict(list)
            for values, answer in template.ask(scene, cfg.instruments):
                per_answer[answer].append((values, answer))
            for answer, cands in per_answer.items():
                values, _ = cands[int(rng.integers(len(cands)))]
                offers[answer].append(Question(scene.video_id, template, values, answer))
        kept = {a: qs for a, qs in sorted(offers.items()) if len(qs) >= cfg.min_answer_count}
        if len(kept) < 2:
            continue
        k = min(min(len(qs) for qs in kept.values()), max(1, budget // len(kept)))
        for qs in kept.values():
            for j in sorted(rng.choice(len(qs), size=k, replace=False).tolist()):
                out.append(qs[j])
    return out


# ----------------------------------------------------------------------------- media

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


def _write_one(args: tuple[dict[str, Any], dict[str, Any], str]) -> str:
    scene, cfg, path = args
    return str(write_scene_video(Scene.from_dict(scene), SynthConfig(**cfg), Path(path)))


# ----------------------------------------------------------------------------- dataset


@dataclass
class SynthDataset:
    """Where a generated dataset lives and what it holds."""

    root: Path
    videos_dir: Path
    annotations: dict[str, Path]
    answers: Path
    scenes: list[Scene]
    questions: dict[str, int] = field(default_factory=dict)
    reused: bool = False


def split_scenes(scenes: Sequence[Scene], cfg: SynthConfig) -> dict[str, list[Scene]]:
    n = len(scenes)
    n_train = round(cfg.split[0] * n)
    n_val = round(cfg.split[1] * n)
    return {"train": list(scenes[:n_train]), "val": list(scenes[n_train: n_train + n_val]),
            "test": list(scenes[n_train + n_val:])}


def build_annotations(scenes: Sequence[Scene], cfg: SynthConfig
                      ) -> dict[str, list[dict[str, Any]]]:
    """Per split, the annotation entries (question ids run on across the splits)."""
    rng = np.random.default_rng([cfg.seed, len(scenes)])
    out: dict[str, list[dict[str, Any]]] = {}
    qid = 0
    for split, part in split_scenes(scenes, cfg).items():
        questions = balanced_questions(part, cfg, rng) if part else []
        order = rng.permutation(len(questions))
        out[split] = [questions[j].entry(qid + k) for k, j in enumerate(order)]
        qid += len(questions)
    return out


def _is_current(root: Path, cfg: SynthConfig, scenes: Sequence[Scene]) -> bool:
    manifest = root / MANIFEST_NAME
    if not manifest.exists():
        return False
    try:
        if json.loads(manifest.read_text()).get("settings") != cfg.settings():
            return False
    except json.JSONDecodeError:
        return False
    files = [root / ANNOTATION_NAME.format(split=s) for s in SPLITS]
    files += [root / ANSWERS_NAME, *(video_path(root, s.video_id) for s in scenes)]
    return all(f.exists() and f.stat().st_size > 0 for f in files)


def video_path(root: Path, vid: str) -> Path:
    return root / VIDEO_DIR / f"{vid}{VIDEO_SUFFIX}"


def write_dataset(root: Path | str, cfg: SynthConfig | None = None,
                  progress: Callable[[str], None] | None = None) -> SynthDataset:
    """Generate (or reuse, when ``root`` already holds this configuration's dataset) the
    videos, ``avqa-{train,val,test}.json``, ``answers.json`` and ``scenes.json`` under
    ``root``."""
    cfg = cfg or SynthConfig()
    root = Path(root)
    scenes = sample_scenes(cfg)
    entries = build_annotations(scenes, cfg)
    annotations = {s: root / ANNOTATION_NAME.format(split=s) for s in SPLITS}
    counts = {s: len(e) for s, e in entries.items()}
    reused = _is_current(root, cfg, scenes)
    if not reused:
        (root / MANIFEST_NAME).unlink(missing_ok=True)
        jobs = [(s.to_dict(), asdict(cfg), str(video_path(root, s.video_id))) for s in scenes]
        if progress:
            progress(f"writing {len(jobs)} videos ({cfg.seconds} s, {cfg.size}x{cfg.size} px, "
                     f"{cfg.fps} fps) to {root / VIDEO_DIR}")
        if cfg.workers > 1:
            with mp.get_context("spawn").Pool(cfg.workers) as pool:
                for _ in pool.imap_unordered(_write_one, jobs, chunksize=8):
                    pass
        else:
            for job in jobs:
                _write_one(job)
        for split, path in annotations.items():
            path.write_text(json.dumps(entries[split], indent=1, ensure_ascii=False) + "\n")
        answers = sorted({e["anser"] for es in entries.values() for e in es})
        (root / ANSWERS_NAME).write_text(json.dumps(answers, indent=1) + "\n")
        (root / SCENES_NAME).write_text(json.dumps([s.to_dict() for s in scenes]) + "\n")
        (root / MANIFEST_NAME).write_text(json.dumps({"settings": cfg.settings(),
                                                      "questions": counts}, indent=1) + "\n")
    return SynthDataset(root, root / VIDEO_DIR, annotations, root / ANSWERS_NAME, scenes,
                        counts, reused)


def answer_balance(entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per template, how often each answer occurs."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in entries:
        out[e["question_content"]][e["anser"]] += 1
    return {t: dict(c) for t, c in out.items()}


def majority_accuracy(train: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]]) -> float:
    """Accuracy (%) on ``test`` of answering each template with its most frequent training
    answer: what the question text alone is worth, roughly."""
    best = {t: max(c, key=c.get) for t, c in answer_balance(train).items()}
    hits = sum(best.get(e["question_content"]) == e["anser"] for e in test)
    return 100.0 * hits / max(1, len(test))


__all__ = [
    "INSTRUMENTS",
    "TEMPLATES",
    "Instrument",
    "Question",
    "Scene",
    "SynthConfig",
    "SynthDataset",
    "Template",
    "answer_balance",
    "balanced_questions",
    "build_annotations",
    "majority_accuracy",
    "render_audio",
    "render_frames",
    "sample_scenes",
    "write_dataset",
]
