"""Synthetic media for the extraction tests: one small real file per case, good and bad."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avmaster.extract.synth_media import ClipSpec, synthetic_clip

SECONDS = 5  # T of the tests
RANDOM_BYTES = 4096


@dataclass(frozen=True)
class Case:
    """A media file and what extraction should say about it."""

    name: str  # file name; the stem is the video id
    kinds: frozenset[str]  # problem kinds expected in the report
    failed: bool = False
    real_seconds: int = SECONDS  # whole seconds in the file (before padding/trimming)


CLIPS: dict[str, ClipSpec] = {
    "plain.mp4": ClipSpec(seconds=SECONDS, fps=10),
    "short.mp4": ClipSpec(seconds=3, fps=10, seed=1),
    "long.mkv": ClipSpec(seconds=8, fps=10, seed=2),
    "fps7_odd.mkv": ClipSpec(seconds=SECONDS, fps=7, width=63, height=47, seed=3),
    "ntsc.mp4": ClipSpec(seconds=SECONDS, fps=Fraction(30000, 1001), seed=4),  # type: ignore[arg-type]
    "stereo44k.mov": ClipSpec(seconds=SECONDS, channels=2, sample_rate=44100, seed=5),
    "stereo48k.mp4": ClipSpec(seconds=SECONDS, channels=2, sample_rate=48000, seed=6),
    "noaudio.mp4": ClipSpec(seconds=SECONDS, audio=False, seed=7),
    "silent.mp4": ClipSpec(seconds=SECONDS, silent=True, seed=8),
}

CASES: dict[str, Case] = {
    "plain": Case("plain.mp4", frozenset()),
    "short": Case("short.mp4", frozenset({"short_video"}), real_seconds=3),
    "long": Case("long.mkv", frozenset({"long_video"})),
    "fps7_odd": Case("fps7_odd.mkv", frozenset()),
    "ntsc": Case("ntsc.mp4", frozenset()),
    "stereo44k": Case("stereo44k.mov", frozenset()),
    "stereo48k": Case("stereo48k.mp4", frozenset()),
    "noaudio": Case("noaudio.mp4", frozenset({"no_audio_stream"})),
    "silent": Case("silent.mp4", frozenset({"silent_audio"})),
    "zero": Case("zero.mp4", frozenset({"empty_file"}), failed=True),
    "garbage": Case("garbage.avi", frozenset({"unreadable"}), failed=True),
    "cut_mp4": Case("cut_mp4.mp4", frozenset({"unreadable"}), failed=True),
    "cut_mkv": Case("cut_mkv.mkv", frozenset({"truncated", "short_video"}), real_seconds=3),
    "audio_only": Case("audio_only.mp4", frozenset({"no_video_stream"}), failed=True),
}
GOOD = sorted(v for v, c in CASES.items() if not c.failed)
FAILED = sorted(v for v, c in CASES.items() if c.failed)


def make_media(folder: Path) -> dict[str, Path]:
    """Write every case into ``folder`` (``cut_mkv`` in a sub-folder); returns id -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {Path(n).stem: synthetic_clip(folder / n, spec) for n, spec in CLIPS.items()}
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "garbage.avi").write_bytes(os.urandom(RANDOM_BYTES))
    whole = paths["plain"].read_bytes()  # mp4 keeps its index at the end: a cut file is lost
    (folder / "cut_mp4.mp4").write_bytes(whole[: len(whole) // 2])
    sub = folder / "nested"
    long_mkv = synthetic_clip(folder / "tmp_cut.mkv", ClipSpec(seconds=6, fps=10, seed=9))
    data = long_mkv.read_bytes()
    sub.mkdir(exist_ok=True)
    (sub / "cut_mkv.mkv").write_bytes(data[: int(len(data) * 0.45)])  # streamable: a prefix
    long_mkv.unlink()
    for name in ("zero.mp4", "garbage.avi", "cut_mp4.mp4"):
        paths[Path(name).stem] = folder / name
    paths["audio_only"] = write_audio_only(folder / "audio_only.mp4")
    paths["cut_mkv"] = sub / "cut_mkv.mkv"
    return paths


def write_audio_only(path: Path, seconds: float = 2.0, rate: int = 16000) -> Path:
    """An mp4 holding an AAC track and no video stream."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        samples = np.zeros((1, int(seconds * rate)), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_annotations(folder: Path, video_ids: list[str], missing: str) -> list[Path]:
    """A MUSIC-AVQA file (questions repeat across videos) and an AVQA multiple-choice file
    whose options repeat some questions' words; ``missing`` has no video file."""
    music = []
    for i, vid in enumerate([*video_ids, missing]):
        music.append({"video_id": vid, "question_id": i, "type": '["Audio", "Counting"]',
                      "question_content": "How many <Object> are in the entire video?",
                      "templ_values": json.dumps(["piano" if i % 2 else "violin"]),
                      "anser": "two"})
    avqa = [{"id": 100 + i, "video_name": f"{vid}.mp4", "question_text": "What makes the sound?",
             "question_type": "Which", "answer": i % 2,
             "multi_choice": ["piano", "violin" if i % 2 else "a car", "dog", "bird"]}
            for i, vid in enumerate(video_ids[:3])]
    out = [folder / "music.json", folder / "avqa.json"]
    out[0].write_text(json.dumps(music), encoding="utf-8")
    out[1].write_text(json.dumps(avqa), encoding="utf-8")
    return out
