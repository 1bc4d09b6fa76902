"""A small synthetic MUSIC-AVQA-style dataset of real video files, with answers known exactly.

Scenes (:mod:`avmaster.demo.scene`) become videos (:mod:`avmaster.demo.render`) and questions
with balanced answers (:mod:`avmaster.demo.questions`). This module writes them under one folder:
``videos/*.mp4``, ``avqa-{train,val,test}.json`` (MUSIC-AVQA's ``json_update`` format),
``answers.json``, ``scenes.json`` and a manifest that lets a rerun reuse what is there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from avmaster.demo.questions import (
    TEMPLATES,
    Question,
    Template,
    answer_balance,
    balanced_questions,
    build_annotations,
    majority_accuracy,
)
from avmaster.demo.render import render_audio, render_frames, write_one
from avmaster.demo.scene import (
    INSTRUMENTS,
    SPLITS,
    Instrument,
    Scene,
    SynthConfig,
    sample_scenes,
)
from avmaster.extract.synth_media import X264_DEFAULTS, in_processes

ANNOTATION_NAME = "avqa-{split}.json"
ANSWERS_NAME = "answers.json"
SCENES_NAME = "scenes.json"
MANIFEST_NAME = "synth.json"
VIDEO_DIR = "videos"
VIDEO_SUFFIX = ".mp4"


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



def _is_current(root: Path, cfg: SynthConfig, scenes: Sequence[Scene]) -> bool:
    manifest = root / MANIFEST_NAME
    if not manifest.exists():
        return False
    try:
        written = json.loads(manifest.read_text())
        if written.get("settings") != cfg.settings() or written.get("encoder") != X264_DEFAULTS:
            return False  # another dataset, or videos written with other encoder settings
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
        in_processes(write_one, jobs, cfg.workers, chunksize=8)
        for split, path in annotations.items():
            path.write_text(json.dumps(entries[split], indent=1, ensure_ascii=False) + "\n")
        answers = sorted({e["anser"] for es in entries.values() for e in es})
        (root / ANSWERS_NAME).write_text(json.dumps(answers, indent=1) + "\n")
        (root / SCENES_NAME).write_text(json.dumps([s.to_dict() for s in scenes]) + "\n")
        (root / MANIFEST_NAME).write_text(json.dumps({"settings": cfg.settings(),
                                                      "encoder": X264_DEFAULTS,
                                                      "questions": counts}, indent=1) + "\n")
    return SynthDataset(root, root / VIDEO_DIR, annotations, root / ANSWERS_NAME, scenes,
                        counts, reused)


# The names below were all defined here once; they stay importable from this module.
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
