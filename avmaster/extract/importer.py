"""``avmaster import-features``: released per-video ``.npy`` features -> the HDF5 feature store.

    avmaster import-features --release music_avqa_resnet18 --npy data/feats/res18_1fps \\
        --annotations data/music_avqa/avqa-*.json --out features/music_avqa

A release (``configs/releases/<name>.yaml``) says what the arrays are: encoder, weights, size,
frame position, post-processing, and which store file they belong in. Arrays are validated
(size, dtype, finite values) and stored as they are, with singleton axes squeezed
(``[T, 1, D]``, ``[1, T, D]``) and ``[T, 1 + P, D]`` split into class token and patches; T is kept
as stored (the readers pad or trim by the rule in features/README.md). Work is saved in part
files every ``--part-videos`` videos, so a killed import loses at most those and a rerun
continues; the final files are written atomically. Into a store file that already exists
(``avmaster extract`` of other videos, or an earlier import) only videos it lacks are added, and
only when the file's encoder agrees (:func:`avmaster.data.store.check_same_encoder`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from tqdm import tqdm

from avmaster.atomic import atomic_write_json
from avmaster.data.store import (
    IMPORTED,
    FeatureStoreError,
    atomic_h5,
    base_attrs,
    check_same_encoder,
    decode_name,
    encode_name,
    pad_or_trim,
    read_attrs,
    write_video_features,
)
from avmaster.extract.config import (
    PARTS_DIR,
    RELEASES_DIR,
    ImportConfig,
    release_names,
    settings_hash,
)
from avmaster.extract.parts import PART_BYTES, list_parts, video_ids_in
from avmaster.extract.text import collect_texts
from avmaster.paths import config_dirs

log = logging.getLogger(__name__)

IMPORT_PART = "import"
LAYOUTS = ("vector", "class_and_patches")
SHOWN = 8  # ids listed in the report before "... (+N more)"
PATCH_LAYOUT = "row = one second: tokens_per_frame x token_dim, row-major; class token excluded"


class ImportFeaturesError(FeatureStoreError):
    """A release folder or one of its files cannot be imported; names the file and the fix."""


@dataclass
class Release:
    """What a released feature format is (``configs/releases/<name>.yaml``)."""

    modality: str  # visual | audio
    encoder: str
    pretrained: str
    dim: int
    file: str  # store file the (class-token) rows go to
    source: str
    layout: str = "vector"  # vector: [T, D]; class_and_patches: [T, 1 + P, D]
    patch_file: str | None = None  # class_and_patches: where the P patch tokens go
    fps: float = 1.0
    postprocess: str | None = None
    frame_position: float | None = None  # instant of each second the frame is taken at
    image_size: int | None = None
    normalized: bool | None = None
    name: str = ""


def load_release(name: str) -> Release:
    """A release format by name (or a YAML path); unknown keys are errors."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = next((d / RELEASES_DIR / f"{name}.yaml" for d in config_dirs()
                     if (d / RELEASES_DIR / f"{name}.yaml").exists()), path)
    if not path.exists():
        raise ImportFeaturesError(f"no release format {name!r}; known: "
                                  f"{', '.join(release_names())} (configs/releases/)")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Release), OmegaConf.load(path))
    except (ConfigKeyError, ValidationError) as e:
        raise ImportFeaturesError(f"{path}: {str(e).splitlines()[0]}") from None
    release: Release = OmegaConf.to_object(merged)  # type: ignore[assignment]
    release.name = release.name or path.stem
    if release.layout not in LAYOUTS or (release.layout == "class_and_patches"
                                         and not release.patch_file):
        raise ImportFeaturesError(f"{path}: layout {release.layout!r} needs one of {LAYOUTS}, "
                                  "and class_and_patches needs patch_file")
    return release


# ----------------------------------------------------------------------------- arrays


def find_npy(folder: Path) -> dict[str, Path]:
    """Video id (file stem) -> file, searched recursively; two files of one id are an error."""
    if not folder.is_dir():
        raise ImportFeaturesError(f"{folder}: not a folder; give --npy the folder holding the "
                                  "released .npy files")
    files: dict[str, Path] = {}
    for p in sorted(folder.rglob("*.npy")):
        if p.stem in files:
            raise ImportFeaturesError(f"{p}: a second file for video {p.stem!r} (first: "
                                      f"{files[p.stem]}); keep one of them")
        files[p.stem] = p
    if not files:
        raise ImportFeaturesError(f"{folder}: no .npy files; is this the unpacked release?")
    return files


@dataclass
class Fitted:
    rows: np.ndarray  # [T, D]
    patches: np.ndarray | None  # [T, P * D] (class_and_patches)
    squeezed: bool


def fit_array(arr: np.ndarray, release: Release, path: Path) -> Fitted:
    """Validate one released array and bring it to the store's layout (see module doc)."""
    want = "[T, 1 + P, D]" if release.layout == "class_and_patches" else "[T, D]"
    fix = f"it is not a {release.name} array: check --release, or remove the file"
    if not np.issubdtype(arr.dtype, np.floating):
        raise ImportFeaturesError(f"{path}: dtype {arr.dtype}, want floating point; {fix}")
    ndim = 3 if release.layout == "class_and_patches" else 2
    shape = arr.shape
    while arr.ndim > ndim and 1 in arr.shape[:-1]:  # [T, 1, D], [1, T, D], [1, T, 50, D]
        arr = arr.squeeze(arr.shape[:-1].index(1))
    if arr.ndim != ndim or arr.shape[-1] != release.dim or arr.shape[0] == 0:
        raise ImportFeaturesError(f"{path}: shape {list(shape)}, want {want} with D = "
                                  f"{release.dim}; {fix}")
    if ndim == 3 and arr.shape[1] < 2:
        raise ImportFeaturesError(f"{path}: shape {list(shape)} has no patch tokens; {fix}")
    values = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ImportFeaturesError(f"{path}: holds NaN or infinite values; re-download the file")
    if ndim == 2:
        return Fitted(values, None, shape != values.shape)
    return Fitted(values[:, 0], values[:, 1:].reshape(values.shape[0], -1), len(shape) != 3)


# ----------------------------------------------------------------------------- parts


def parts_dir(cfg: ImportConfig, release: Release) -> Path:
    settings = {**asdict(release), "dtype": cfg.dtype}
    return cfg.out / PARTS_DIR / f"{IMPORT_PART}-{release.name}-{settings_hash(settings)}"


def write_part(folder: Path, batch: Sequence[tuple[str, Fitted]], dtype: str) -> None:
    """A part holds complete videos (``rows``, ``patches`` groups); written atomically."""
    path = folder / f"{IMPORT_PART}-{time.time_ns():020d}.h5"
    with atomic_h5(path) as f:
        rows, patches = f.create_group("rows"), f.create_group("patches")
        for vid, fitted in batch:
            rows.create_dataset(encode_name(vid), data=fitted.rows.astype(dtype))
            if fitted.patches is not None:
                patches.create_dataset(encode_name(vid), data=fitted.patches.astype(dtype))
        f.attrs["squeezed"] = sum(fit.squeezed for _, fit in batch)


def part_ids(folder: Path) -> dict[str, Path]:
    """Video id -> the part holding it (a later part wins)."""
    out: dict[str, Path] = {}
    for part in list_parts(folder, IMPORT_PART):
        try:
            with h5py.File(part, "r") as f:
                out.update(dict.fromkeys((decode_name(k) for k in f["rows"]), part))
        except (OSError, KeyError) as e:
            log.warning("%s: unreadable part ignored (%s); its videos are imported again", part, e)
    return out


# ----------------------------------------------------------------------------- run


@dataclass
class Target:
    """One store file the import writes: what it already holds, and its metadata."""

    path: Path
    group: str  # the part group its rows come from
    attrs: dict[str, Any]
    existing: set[str] = field(default_factory=set)


def _targets(cfg: ImportConfig, release: Release) -> list[Target]:
    common = {"modality": release.modality, "encoder": release.encoder,
              "pretrained": release.pretrained, "fps": release.fps,
              "postprocess": release.postprocess, "frame_position": release.frame_position,
              "image_size": release.image_size, "normalized": release.normalized}
    out = [Target(cfg.out / release.file, "rows", {**common, "dim": release.dim})]
    if release.patch_file:
        out.append(Target(cfg.out / release.patch_file, "patches",
                          {**common, "modality": "patch", "token_dim": release.dim,
                           "layout": PATCH_LAYOUT}))
    for t in out:
        if t.path.exists():
            stored = read_attrs(t.path)
            check_same_encoder(t.path, stored, {"kind": "video", **t.attrs},
                               f"release {release.name}")
            t.existing = video_ids_in(t.path)
            t.attrs = stored
    return out


def _convert(cfg: ImportConfig, release: Release, files: dict[str, Path], pending: list[str],
             folder: Path) -> None:
    """Load, validate and save ``pending`` videos as parts (memory: one part's arrays)."""
    batch: list[tuple[str, Fitted]] = []
    nbytes = 0
    bar = tqdm(pending, unit="video", disable=not cfg.progress, dynamic_ncols=True,
               desc=f"import {release.name}")
    try:
        for vid in bar:
            try:
                arr = np.load(files[vid], mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as e:
                raise ImportFeaturesError(f"{files[vid]}: not a readable .npy array ({e}); "
                                          "re-download it or remove it") from e
            fitted = fit_array(arr, release, files[vid])
            fitted.rows = fitted.rows.astype(cfg.dtype)  # buffered as stored: half the memory
            if fitted.patches is not None:
                fitted.patches = fitted.patches.astype(cfg.dtype)
            batch.append((vid, fitted))
            nbytes += fitted.rows.nbytes + (0 if fitted.patches is None
                                            else fitted.patches.nbytes)
            if len(batch) >= cfg.part_videos or nbytes >= PART_BYTES:
                write_part(folder, batch, cfg.dtype)
                batch, nbytes = [], 0
    finally:
        if batch:  # what was completed survives an error or an interrupt
            write_part(folder, batch, cfg.dtype)
        bar.close()


def _merge(cfg: ImportConfig, release: Release, targets: list[Target], folder: Path,
           record: dict[str, Any]) -> dict[str, int]:
    """Write every target file: what it held plus the parts; returns T counts (first file)."""
    sources = part_ids(folder)
    lengths: Counter = Counter()
    for t in targets:
        new = sorted(v for v in sources if v not in t.existing)
        old = sorted(t.existing)

        def rows(t: Target = t, new: list[str] = new, old: list[str] = old,
                 fit_to: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
            handles: dict[Path, h5py.File] = {}
            try:
                if old:
                    handles[t.path] = h5py.File(t.path, "r")
                for vid in old:
                    yield vid, handles[t.path]["videos"][encode_name(vid)][()]
                for vid in new:
                    part = sources[vid]
                    if part not in handles:
                        handles[part] = h5py.File(part, "r")
                    arr = handles[part][t.group][encode_name(vid)][()]
                    if t is targets[0]:
                        lengths[arr.shape[0]] += 1
                    # a file whose rows were fitted to T (by extract) keeps that invariant
                    yield vid, arr if fit_to is None else pad_or_trim(arr, fit_to)
            finally:
                for h in handles.values():
                    h.close()

        if not new and t.path.exists():
            continue
        attrs = dict(t.attrs)
        fit_to = int(attrs["seconds"]) if attrs.get("seconds") is not None else None
        history = json.loads(attrs.get(IMPORTED) or "[]")
        history.append(record)
        attrs[IMPORTED] = json.dumps(history)
        skip = set(base_attrs("video")) | {"modality", "encoder", "pretrained", "fps", "dim",
                                           "dtype", "seconds"}
        count = write_video_features(
            t.path, rows(fit_to=fit_to), modality=str(attrs["modality"]),
            encoder=str(attrs["encoder"]), pretrained=str(attrs.get("pretrained", "")),
            fps=float(attrs.get("fps", 1.0)),
            seconds=attrs.get("seconds"), dtype=str(attrs.get("dtype", cfg.dtype)),
            extra_attrs={k: v for k, v in attrs.items() if k not in skip and v is not None})
        log.info("wrote %s (%d videos, %d new)", t.path, count, len(new))
    return dict(lengths)


def _listed(ids: Sequence[str]) -> dict[str, Any]:
    return {"count": len(ids), "first": list(ids[:SHOWN])}


def run_import(cfg: ImportConfig) -> dict[str, Any]:
    """Import one release folder (resumably); returns the validation report."""
    release = load_release(cfg.release)
    files = find_npy(cfg.npy)
    targets = _targets(cfg, release)
    folder = parts_dir(cfg, release)
    folder.mkdir(parents=True, exist_ok=True)
    existing = set.intersection(*(t.existing for t in targets))
    done = part_ids(folder)
    pending = [v for v in sorted(files) if v not in existing and v not in done]
    log.info("%s: %d .npy files; %d already in the store, %d in saved parts, %d to import",
             cfg.npy, len(files), len(existing & set(files)), len(set(done) & set(files)),
             len(pending))
    _convert(cfg, release, files, pending, folder)
    squeezed = 0
    for part in list_parts(folder, IMPORT_PART):
        with h5py.File(part, "r") as f:
            squeezed += int(f.attrs.get("squeezed", 0))
    imported = sorted(part_ids(folder))
    record = {"release": release.name, "source": release.source, "folder": str(cfg.npy),
              "videos": len(imported), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime())}
    lengths = _merge(cfg, release, targets, folder, record)
    shutil.rmtree(folder)  # the final files hold everything the parts did
    report: dict[str, Any] = {
        "release": release.name, "source": release.source, "npy_folder": str(cfg.npy),
        "files": {str(t.attrs["modality"]): str(t.path) for t in targets},
        "npy_files": len(files), "imported": len(imported),
        "already_in_store": len(existing & set(files)),
        "squeezed_singleton_axes": squeezed,
        "seconds": {"expected": cfg.seconds,
                    "other": sum(n for t, n in lengths.items() if t != cfg.seconds),
                    "counts": {str(t): n for t, n in sorted(lengths.items())}},
    }
    if cfg.annotations:
        wanted = collect_texts(cfg.annotations, cfg.annotation_format).video_ids
        have = set(files) | existing
        report["annotations"] = {
            "videos": len(wanted),
            "missing": _listed([v for v in wanted if v not in have]),
            "not_in_annotations": len(set(files) - set(wanted)),
        }
    other = report["seconds"]["other"]
    if other:
        log.warning("%d of %d imported videos have T != %d rows (kept as stored; the readers "
                    "pad or trim them to data.seconds)", other, sum(lengths.values()),
                    cfg.seconds)
    if cfg.annotations and report["annotations"]["missing"]["count"]:
        miss = report["annotations"]["missing"]
        log.warning("%d videos of the annotations have no features in %s or the store: %s%s",
                    miss["count"], cfg.npy, ", ".join(miss["first"]),
                    " ..." if miss["count"] > SHOWN else "")
    atomic_write_json(cfg.out / f"import_{release.name}_report.json", report)
    return report


# ----------------------------------------------------------------------------- CLI


