"""Questions about synthetic scenes: MUSIC-AVQA's templates (all nine question types), each
with the function that answers it from a :class:`~avmaster.demo.scene.Scene`, and per-template
answer balancing, so the question text alone does not tell the answer.

The entries follow MUSIC-AVQA's ``json_update`` format (answer key ``anser``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import permutations
from typing import Any

import numpy as np

from avmaster.demo.scene import POSITIONS, Instrument, Scene, SynthConfig, split_scenes

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")
ORDINALS = ("first", "second", "third")
YES, NO = "yes", "no"
SIMULTANEOUSLY = "simultaneously"


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

