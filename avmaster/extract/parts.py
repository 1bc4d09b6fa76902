"""Crash-safe progress: completed "part" files, resume, and the merge into the final files.

A run writes what it finished every few videos (or seconds) as a small part file under
``<out>/.parts/<settings folder>/``; each part is complete or absent (temporary file, fsync,
rename), so a process killed at any moment loses at most the videos since its last part.
Resume reads the ids of the parts (and of the final files); the merge combines the final files
and every part into new final files, again atomically. Part and final files carry the settings
that made them (a JSON attribute) and are only combined with files of equal settings.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from avmaster.atomic import atomic_write_text
from avmaster.data.store import (
    EMPTY_INPUT_ATTRS,
    IMPORTED,
    FeatureStoreError,
    atomic_h5,
    check_same_encoder,
    decode_name,
    encode_name,
    pad_or_trim,
    read_attrs,
    stored_settings,
    text_key,
    write_text_features,
    write_video_features,
)
from avmaster.extract.audio import EXAMPLE_FRAMES, MEL_HOP_SECONDS, SAMPLE_RATE
from avmaster.extract.config import (
    CLAP_RATE,
    ExtractConfig,
    FeaturePaths,
    audio_encoder_name,
    audio_settings,
    feature_paths,
    patch_settings,
    settings_hash,
    settings_json,
    text_settings,
    visual_encoder_name,
    visual_settings,
)
from avmaster.extract.decoded import DUPLICATE_ID, MISSING_FILE, Problem

log = logging.getLogger(__name__)

VIDEO_PART = "videos"
TEXT_PART = "texts"
LISTING = "listing"
PART_BYTES = 1 << 29  # flush a part once its arrays hold this many bytes (patch tokens are big)
MODALITIES = ("visual", "audio", "patch")
LISTING_KINDS = frozenset({MISSING_FILE, DUPLICATE_ID})  # found by listing, not by decoding


class SettingsConflictError(FeatureStoreError):
    """A final feature file exists but was made with other settings."""


# ----------------------------------------------------------------------------- small helpers


def shard_name(shard: tuple[int, int]) -> str:
    return f"s{shard[0]}of{shard[1]}"


def _part_name(prefix: str, shard: tuple[int, int]) -> str:
    return f"{prefix}-{time.time_ns():020d}-{shard_name(shard)}-{os.getpid()}.h5"


def list_parts(folder: Path, prefix: str) -> list[Path]:
    """Complete part files in chronological order (temporary files start with '.')."""
    return sorted(folder.glob(f"{prefix}-*.h5")) if folder.is_dir() else []


def video_parts_dir(cfg: ExtractConfig) -> Path:
    settings = [visual_settings(cfg), audio_settings(cfg)]
    if cfg.patch_tokens:
        settings.append(patch_settings(cfg))
    return feature_paths(cfg).parts / f"av-{settings_hash(*settings)}"


def text_parts_dir(cfg: ExtractConfig) -> Path:
    return feature_paths(cfg).parts / f"text-{settings_hash(text_settings(cfg))}"


def final_matches(path: Path, settings: dict[str, Any]) -> bool:
    """True if ``path`` exists with these settings, False if absent; raises on a conflict.

    A file written by ``avmaster import-features`` matches when its encoder agrees: the
    extraction then adds its videos to the imported ones (one store, two sources).
    """
    if not path.exists():
        return False
    try:
        stored = stored_settings(path)
    except OSError as e:
        raise SettingsConflictError(f"{path}: unreadable ({e}); delete it and rerun") from e
    if stored is None and IMPORTED in read_attrs(path):
        check_same_encoder(path, read_attrs(path), _identity(settings), "this extraction")
        return True
    if stored != settings_json(settings):
        raise SettingsConflictError(
            f"{path} exists but was made with other settings ({stored}; now "
            f"{settings_json(settings)}). Choose another --out, or delete the file to redo it.")
    return True


def _identity(settings: dict[str, Any]) -> dict[str, Any]:
    """The store attributes (:data:`avmaster.data.store.IDENTITY_ATTRS`) of these settings."""
    return {"kind": "video", "encoder": settings.get("encoder") or settings.get("model"),
            "pretrained": settings.get("pretrained"), "postprocess": settings.get("postprocess"),
            "normalized": settings.get("normalize")}


def video_ids_in(path: Path) -> set[str]:
    """The video ids of a final video feature file."""
    with h5py.File(path, "r") as f:
        return {decode_name(n) for n in f.get("videos", {})}


# ----------------------------------------------------------------------------- video parts


@dataclass
class VideoResult:
    """The features of one video (rows = seconds) or its failure, with its problems."""

    video_id: str
    visual: np.ndarray | None = None
    audio: np.ndarray | None = None
    patch: np.ndarray | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.visual is None


class VideoPartWriter:
    """Buffers :class:`VideoResult` s and writes them as a part every ``max_videos`` videos,
    ``max_seconds`` seconds or :data:`PART_BYTES` bytes, and on :meth:`flush`. ``empty``: the
    encoders' empty-second vectors per modality, kept as attributes of every part."""

    def __init__(self, folder: Path, cfg: ExtractConfig,
                 empty: dict[str, np.ndarray] | None = None):
        self.folder, self.cfg = folder, cfg
        self.empty = {EMPTY_INPUT_ATTRS[m]: v for m, v in (empty or {}).items()}
        self.settings = settings_json({"visual": visual_settings(cfg),
                                       "audio": audio_settings(cfg)})
        self.buffer: list[VideoResult] = []
        self.bytes, self.last = 0, time.monotonic()
        self.parts_written = 0

    def add(self, result: VideoResult) -> None:
        for name in MODALITIES:
            arr = getattr(result, name)
            if arr is not None:
                arr = np.asarray(arr).astype(self.cfg.dtype, copy=False)
                setattr(result, name, arr)
                self.bytes += arr.nbytes
        self.buffer.append(result)
        if (len(self.buffer) >= self.cfg.part_videos or self.bytes >= PART_BYTES
                or time.monotonic() - self.last >= self.cfg.part_seconds):
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        path = self.folder / _part_name(VIDEO_PART, self.cfg.shard)
        ok = [r for r in self.buffer if not r.failed]
        with atomic_h5(path) as f:
            for name in MODALITIES:
                grp = f.create_group(name)
                for r in ok:
                    arr = getattr(r, name)
                    if arr is not None:
                        grp.create_dataset(encode_name(r.video_id), data=arr)
            f.create_dataset("ids", data=[r.video_id for r in ok], dtype=h5py.string_dtype())
            f.create_dataset("failed", data=[r.video_id for r in self.buffer if r.failed],
                             dtype=h5py.string_dtype())
            problems = [json.dumps(p.to_dict()) for r in self.buffer for p in r.problems]
            f.create_dataset("problems", data=problems, dtype=h5py.string_dtype())
            f.attrs.update({"kind": "video-part", "settings": self.settings,
                            "shard": shard_name(self.cfg.shard), **self.empty})
        self.buffer, self.bytes, self.last = [], 0, time.monotonic()
        self.parts_written += 1


@dataclass
class PartIndex:
    """What a folder of video parts holds: per video, the latest part and its problems."""

    source: dict[str, Path] = field(default_factory=dict)  # ok video -> part
    failed: set[str] = field(default_factory=set)
    problems: dict[str, list[Problem]] = field(default_factory=dict)
    parts: list[Path] = field(default_factory=list)
    empty: dict[str, np.ndarray] = field(default_factory=dict)  # attribute -> empty-second vector


def _strings(ds: h5py.Dataset) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in ds[()]]


def read_video_parts(folder: Path) -> PartIndex:
    """Index every complete video part; a later part overrides an earlier one per video."""
    index = PartIndex()
    for part in list_parts(folder, VIDEO_PART):
        try:
            with h5py.File(part, "r") as f:
                ok, failed = _strings(f["ids"]), _strings(f["failed"])
                problems = [Problem(**json.loads(s)) for s in _strings(f["problems"])]
                empty = {a: np.asarray(f.attrs[a], np.float32)
                         for a in EMPTY_INPUT_ATTRS.values() if a in f.attrs}
        except (OSError, KeyError) as e:
            log.warning("%s: unreadable part ignored (%s); its videos will be redone", part, e)
            continue
        index.parts.append(part)
        index.empty.update(empty)
        by_video: dict[str, list[Problem]] = {}
        for p in problems:
            by_video.setdefault(p.video_id, []).append(p)
        for vid in ok:
            index.source[vid] = part
            index.failed.discard(vid)
            index.problems[vid] = by_video.get(vid, [])
        for vid in failed:
            index.source.pop(vid, None)
            index.failed.add(vid)
            index.problems[vid] = by_video.get(vid, [])
    return index


def write_listing(folder: Path, shard: tuple[int, int], problems: Sequence[Problem]) -> None:
    """Problems found while listing (missing files, duplicate ids), one file per shard spec;
    rewritten only when they change (its time tells whether a merge is due)."""
    path = folder / f"{LISTING}-{shard_name(shard)}.json"
    text = json.dumps([p.to_dict() for p in problems])
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def read_listings(folder: Path) -> list[Problem]:
    out: dict[tuple[str, str, str], Problem] = {}
    for path in sorted(folder.glob(f"{LISTING}-*.json")) if folder.is_dir() else []:
        for d in json.loads(path.read_text(encoding="utf-8")):
            p = Problem(**d)
            out[(p.video_id, p.kind, p.file)] = p
    return list(out.values())


# ----------------------------------------------------------------------------- text parts


def write_text_part(folder: Path, cfg: ExtractConfig, texts: Sequence[str], sentence: np.ndarray,
                    tokens: Sequence[np.ndarray]) -> Path:
    """A text part is a complete text feature file (store format) of some texts."""
    path = folder / _part_name(TEXT_PART, cfg.shard)
    write_text_features(path, list(texts), sentence, list(tokens), encoder=f"open_clip:{cfg.model}",
                        pretrained=cfg.pretrained_tag, dtype=cfg.dtype,
                        extra_attrs={"settings": settings_json(text_settings(cfg))})
    return path


def read_text_rows(path: Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(text, sentence [D], tokens [L, D]) of every row of a text feature/part file."""
    with h5py.File(path, "r") as f:
        texts, sent = _strings(f["text"]), f["sentence"][()]
        offset, length, tokens = f["offset"][()], f["length"][()], f["tokens"][()]
    for i, t in enumerate(texts):
        yield t, sent[i], tokens[int(offset[i]) : int(offset[i]) + int(length[i])]


def text_keys_in(path: Path) -> set[str]:
    with h5py.File(path, "r") as f:
        return {k.decode() for k in f["key"][()]}


def done_text_keys(cfg: ExtractConfig) -> set[str]:
    """Keys of texts already encoded with these settings (parts and final file)."""
    keys: set[str] = set()
    paths = feature_paths(cfg)
    if final_matches(paths.text, text_settings(cfg)):
        keys |= text_keys_in(paths.text)
    for part in list_parts(text_parts_dir(cfg), TEXT_PART):
        try:
            keys |= text_keys_in(part)
        except (OSError, KeyError) as e:
            log.warning("%s: unreadable part ignored (%s)", part, e)
    return keys


# ----------------------------------------------------------------------------- resume


@dataclass
class DoneVideos:
    ok: set[str]
    failed: set[str]


def done_videos(cfg: ExtractConfig) -> DoneVideos:
    """Videos already extracted with these settings (final files and parts)."""
    paths = feature_paths(cfg)
    ok: set[str] = set()
    finals = [(paths.visual, visual_settings(cfg)), (paths.audio, audio_settings(cfg))]
    if cfg.patch_tokens:
        finals.append((paths.patch, patch_settings(cfg)))
    present = [final_matches(p, s) for p, s in finals]
    if all(present):
        ok = set.intersection(*(video_ids_in(p) for p, _ in finals))
    index = read_video_parts(video_parts_dir(cfg))
    ok = (ok - index.failed) | set(index.source)
    return DoneVideos(ok, index.failed - ok)


# ----------------------------------------------------------------------------- merge


@dataclass
class MergeResult:
    videos: int
    failed: int
    texts: int
    problems: list[Problem]
    written: list[Path]


def _read_report(path: Path) -> dict[str, list[Problem]]:
    out: dict[str, list[Problem]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                p = Problem(**json.loads(line))
                out.setdefault(p.video_id, []).append(p)
    return out


def merge(cfg: ExtractConfig) -> MergeResult:
    """Combine the final files and every part (parts win) into new final files, atomically;
    write the report (one JSON line per problem). Safe to run at any time, also while shards
    are still running (it takes the parts complete so far)."""
    paths = feature_paths(cfg)
    written: list[Path] = []
    n_videos, failed, problems = _merge_videos(cfg, paths, written)
    n_texts = _merge_texts(cfg, paths, written)
    lines = "".join(json.dumps(p.to_dict()) + "\n" for p in problems)
    atomic_write_text(paths.report, lines)
    return MergeResult(n_videos, failed, n_texts, problems, written)


def _merge_videos(cfg: ExtractConfig, paths: FeaturePaths, written: list[Path]
                  ) -> tuple[int, int, list[Problem]]:
    finals = {"visual": (paths.visual, visual_settings(cfg)),
              "audio": (paths.audio, audio_settings(cfg))}
    if cfg.patch_tokens:
        finals["patch"] = (paths.patch, patch_settings(cfg))
    # per file, the videos it holds (an imported file may exist without the others)
    matches = {name: final_matches(p, s) for name, (p, s) in finals.items()}
    bases = {name: video_ids_in(p) if matches[name] else set()
             for name, (p, _) in finals.items()}
    have_final = all(p.exists() for p, _ in finals.values())
    base = set.intersection(*bases.values())
    index = read_video_parts(video_parts_dir(cfg))
    source: dict[str, Path | None] = dict.fromkeys(base - index.failed)
    source.update(index.source)
    # listing problems come from the listings below on every merge; read back from the old
    # report as well, a missing file would count as failed on a re-merge only
    old = {vid: [p for p in ps if p.kind not in LISTING_KINDS]
           for vid, ps in _read_report(paths.report).items()}
    problems = {vid: ps for vid, ps in old.items() if vid not in index.problems and ps}
    problems.update(index.problems)
    failed = (index.failed | {v for v, ps in problems.items() if any(p.failed for p in ps)}) \
        - set(source)
    listing = [p for p in read_listings(video_parts_dir(cfg))
               if not (p.kind == MISSING_FILE and p.video_id in source)]
    report = [p for vid in sorted(problems) if vid in source or vid in failed
              for p in problems[vid] if p.kind not in LISTING_KINDS]
    report += sorted(listing, key=lambda p: (p.video_id, p.kind))
    if not source and not failed:
        return 0, 0, report
    if index.parts or not have_final:
        ids = sorted(source)
        with ExitStack() as stack:
            handles: dict[Path, h5py.File] = {}

            def rows(name: str) -> Iterator[tuple[str, np.ndarray]]:
                only_here = sorted(bases[name] - set(source) - index.failed)
                for vid in sorted([*ids, *only_here]):
                    src = index.source.get(vid) or finals[name][0]
                    if src not in handles:
                        handles[src] = stack.enter_context(h5py.File(src, "r"))
                    group = handles[src]["videos" if src == finals[name][0] else name]
                    arr = group[encode_name(vid)][()]  # imported rows are kept as stored: fit
                    yield vid, arr if cfg.stored_seconds is None else pad_or_trim(
                        arr, cfg.stored_seconds)

            for name, (path, settings) in finals.items():
                extra = {"settings": settings_json(settings), "n_failed": len(failed),
                         **_modality_attrs(cfg, name)}
                old_attrs = read_attrs(path) if path.exists() else {}
                if IMPORTED in old_attrs:
                    extra[IMPORTED] = old_attrs[IMPORTED]
                empty = EMPTY_INPUT_ATTRS.get(name)
                if empty in index.empty:
                    extra[empty] = index.empty[empty]
                elif empty in old_attrs and matches[name]:
                    extra[empty] = np.asarray(old_attrs[empty], np.float32)
                if name == "patch" and ids:  # rows are [tokens x dim] flattened
                    dim = int(next(rows("visual"))[1].shape[1])
                    extra.update(token_dim=dim,
                                 tokens_per_frame=int(next(rows("patch"))[1].shape[1]) // dim)
                encoder = (audio_encoder_name(cfg) if name == "audio"
                           else visual_encoder_name(cfg))
                pretrained = settings["pretrained"]
                count = write_video_features(path, rows(name), modality=name, encoder=encoder,
                                             pretrained=pretrained, fps=1.0,
                                             seconds=cfg.stored_seconds, dtype=cfg.dtype,
                                             extra_attrs=extra)
                written.append(path)
                log.info("wrote %s (%d videos)", path, count)
    return len(source), len(failed), report


def _modality_attrs(cfg: ExtractConfig, name: str) -> dict[str, Any]:
    if name == "audio" and cfg.audio_encoder == "clap":
        return {"sample_rate": CLAP_RATE, "example_seconds": 1.0, "model": cfg.clap_model}
    if name == "audio":
        return {"sample_rate": SAMPLE_RATE, "postprocess": cfg.vggish_postprocess,
                "example_seconds": EXAMPLE_FRAMES * MEL_HOP_SECONDS,
                "weights_file": cfg.vggish_weights or ""}
    out = {"frame_position": cfg.frame_position, "normalized": cfg.normalize,
           "weights_file": cfg.clip_weights or "", "random_init": cfg.random_init}
    if name == "patch":
        out["layout"] = "row = one second: tokens_per_frame x token_dim, row-major"
    return out


def _merge_texts(cfg: ExtractConfig, paths: FeaturePaths, written: list[Path]) -> int:
    folder = text_parts_dir(cfg)
    parts = list_parts(folder, TEXT_PART)
    have_final = final_matches(paths.text, text_settings(cfg))
    if not parts:
        return len(text_keys_in(paths.text)) if have_final else 0
    rows: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    for src in ([paths.text] if have_final else []) + parts:
        for text, sent, tok in read_text_rows(src):
            rows[text_key(text)] = (text, sent, tok)
    ordered = sorted(rows.values(), key=lambda r: r[0])
    texts = [r[0] for r in ordered]
    sentence = np.stack([r[1] for r in ordered])
    write_text_features(paths.text, texts, sentence, [r[2] for r in ordered],
                        encoder=f"open_clip:{cfg.model}", pretrained=cfg.pretrained_tag,
                        dtype=cfg.dtype,
                        extra_attrs={"settings": settings_json(text_settings(cfg)),
                                     "normalized": cfg.normalize,
                                     "weights_file": cfg.clip_weights or "",
                                     "tokens": "final layer-normed, projected states up to "
                                               "and including EOT"})
    written.append(paths.text)
    return len(texts)


def clean_parts(cfg: ExtractConfig) -> int:
    """Delete the parts of these settings (after a merge took them in); returns how many."""
    n = 0
    for folder, prefix in ((video_parts_dir(cfg), VIDEO_PART), (text_parts_dir(cfg), TEXT_PART)):
        for part in list_parts(folder, prefix):
            part.unlink(missing_ok=True)
            n += 1
    return n


def count_by_kind(problems: Sequence[Problem]) -> dict[str, int]:
    return dict(sorted(Counter(p.kind for p in problems).items()))
