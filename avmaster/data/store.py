"""HDF5 feature store: per-video [seconds, D] arrays and per-text sentence/token features.

The schema is documented in ``features/README.md``; :data:`SCHEMA_VERSION` names it. Files are
written once (atomically: a temporary file in the same folder, renamed when complete) and read
many times. Readers open their file lazily in each process, so they survive DataLoader workers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from avmaster import __version__
from avmaster.atomic import atomic_path

SCHEMA_VERSION = 1
VIDEO_GROUP = "videos"


class FeatureStoreError(RuntimeError):
    """A feature file is missing, of the wrong kind, or lacks entries the data needs."""


class MissingFeaturesError(FeatureStoreError):
    """Some ids the annotations ask for have no features; lists the first few and the count."""

    def __init__(self, path: Path | str, missing: Sequence[str], what: str = "video ids"):
        self.path, self.missing = str(path), list(missing)
        shown = ", ".join(self.missing[:8])
        more = f" (+{len(self.missing) - 8} more)" if len(self.missing) > 8 else ""
        fix = ("Run `avmaster extract` on the missing videos/questions (a rerun computes only "
               "what is missing), or point the data config at the right feature file.")
        if what == "video ids":
            fix += (" Videos that failed extraction stay failed on a rerun (see the extraction "
                    "report; --retry-failed tries them again): set "
                    "data.skip_videos_without_features=true to leave their questions out "
                    "(counted in the log and the results).")
        super().__init__(f"{self.path}: {len(self.missing)} {what} have no features: "
                         f"{shown}{more}. {fix}")


def text_key(text: str) -> str:
    """Stable key of a question or option text: sha1 of its UTF-8 bytes (hex)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def encode_name(video_id: str) -> str:
    """HDF5 dataset name for a video id ('/' is the only character HDF5 names cannot hold)."""
    return video_id.replace("%", "%25").replace("/", "%2F")


def decode_name(name: str) -> str:
    return name.replace("%2F", "/").replace("%25", "%")


def pad_or_trim(x: np.ndarray, seconds: int) -> np.ndarray:
    """Fit ``x`` [n, D] to ``seconds`` rows: repeat the last second when short, keep the first
    ``seconds`` when long (the MUSIC-AVQA authors' convention)."""
    n = x.shape[0]
    if n == seconds:
        return x
    if n > seconds:
        return x[:seconds]
    if n == 0:
        raise FeatureStoreError("a video has 0 stored seconds; re-extract it")
    pad = np.repeat(x[-1:], seconds - n, axis=0)
    return np.concatenate([x, pad], axis=0)


@contextlib.contextmanager
def atomic_h5(path: Path | str, mode: str = "w") -> Iterator[h5py.File]:
    """Open a temporary HDF5 file next to ``path``; rename it onto ``path`` only on success
    (:func:`avmaster.atomic.atomic_path`).

    A process killed mid-write leaves a temporary file that no reader ever opens, never a
    half-written ``path``. ``mode='a'`` starts from a copy of an existing ``path``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        if mode == "a" and path.exists():
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a" if mode == "a" else "w") as f:
            yield f
            f.flush()


def base_attrs(kind: str, **attrs: Any) -> dict[str, Any]:
    """The metadata every feature file carries (see features/README.md)."""
    out = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "library": f"avmaster {__version__}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.update({k: v for k, v in attrs.items() if v is not None})
    return out


def write_video_features(
    path: Path | str,
    features: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
    *,
    modality: str,
    encoder: str,
    pretrained: str = "",
    fps: float = 1.0,
    seconds: int | None = None,
    dtype: str = "float16",
    extra_attrs: Mapping[str, Any] | None = None,
) -> int:
    """Write a complete video feature file atomically; returns the number of videos written."""
    items = features.items() if isinstance(features, Mapping) else features
    count, dim = 0, None
    with atomic_h5(path) as f:
        grp = f.create_group(VIDEO_GROUP)
        for vid, arr in items:
            arr = np.asarray(arr)
            if arr.ndim != 2:
                raise FeatureStoreError(f"{path}: video {vid!r} has shape {arr.shape}, want [T, D]")
            if dim is None:
                dim = arr.shape[1]
            elif arr.shape[1] != dim:
                raise FeatureStoreError(f"{path}: video {vid!r} has dim {arr.shape[1]}, not {dim}")
            grp.create_dataset(encode_name(vid), data=arr.astype(dtype))
            count += 1
        f.attrs.update(
            base_attrs(
                "video",
                modality=modality,
                encoder=encoder,
                pretrained=pretrained,
                fps=float(fps),
                seconds=seconds,
                dim=int(dim or 0),
                dtype=dtype,
                **dict(extra_attrs or {}),
            )
        )
    return count


def write_text_features(
    path: Path | str,
    texts: Sequence[str],
    sentence: np.ndarray,
    tokens: Sequence[np.ndarray],
    *,
    encoder: str,
    pretrained: str = "",
    dtype: str = "float16",
    extra_attrs: Mapping[str, Any] | None = None,
) -> int:
    """Write a complete text feature file atomically (ragged token layout, one row per text)."""
    if len(texts) != len(sentence) or len(texts) != len(tokens):
        raise FeatureStoreError(f"{path}: {len(texts)} texts, {len(sentence)} sentence rows, "
                                f"{len(tokens)} token arrays: they must match")
    lengths = np.array([t.shape[0] for t in tokens], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    dim = int(sentence.shape[1]) if len(texts) else 0
    flat = np.concatenate(tokens, axis=0) if len(texts) else np.zeros((0, dim))
    with atomic_h5(path) as f:
        f.create_dataset("key", data=np.array([text_key(t) for t in texts], dtype="S40"))
        f.create_dataset("text", data=list(texts), dtype=h5py.string_dtype())
        f.create_dataset("sentence", data=np.asarray(sentence, dtype=dtype))
        f.create_dataset("length", data=lengths.astype(np.int32))
        f.create_dataset("offset", data=offsets)
        f.create_dataset("tokens", data=flat.astype(dtype), chunks=True if len(flat) else None)
        f.attrs.update(base_attrs("text", encoder=encoder, pretrained=pretrained, dim=dim,
                                  dtype=dtype, **dict(extra_attrs or {})))
    return len(texts)


def stored_settings(path: Path | str) -> str | None:
    """The extraction settings (JSON text) a feature or part file was written with, or
    ``None`` when it records none (e.g. features written by another tool)."""
    with h5py.File(path, "r") as f:
        value = f.attrs.get("settings")
    return value.decode() if isinstance(value, bytes) else value


def read_settings(path: Path | str) -> dict[str, Any]:
    """:func:`stored_settings` as a dict (empty when none are recorded)."""
    raw = stored_settings(path)
    return json.loads(raw) if raw else {}


def read_attrs(path: Path | str) -> dict[str, Any]:
    """A feature file's metadata attributes, with a clear error when the file is unusable."""
    path = Path(path)
    if not path.exists():
        raise FeatureStoreError(
            f"{path}: feature file not found. Extract features first (`avmaster extract`, see "
            "features/README.md) or set the data config's feature paths."
        )
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if getattr(v, "size", 0) == 1 else v)  # arrays stay arrays
                     for k, v in f.attrs.items()}
    except OSError as e:
        raise FeatureStoreError(f"{path}: not a readable HDF5 file ({e}); re-extract it") from e
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise FeatureStoreError(
            f"{path}: schema version {version!r}, this library reads {SCHEMA_VERSION}; re-extract"
        )
    return attrs


IMPORTED = "imported_from"  # attribute of files holding imported features: JSON list of sources
# Attribute of a video feature file holding its encoder's vector [D] for an empty second (a
# silent second of audio, a black frame), written by extraction; per modality.
EMPTY_INPUT_ATTRS = {"audio": "silence", "visual": "blank"}
# What must agree for features of two sources to share one file (compared when both record it).
IDENTITY_ATTRS = ("kind", "modality", "encoder", "pretrained", "dim", "postprocess", "normalized",
                  "fps")


def encoder_identity(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes of a feature file that say which encoder made its numbers; the encoder
    name without its implementation prefix (``torchvggish:vggish`` and ``vggish`` agree)."""
    out = {k: attrs[k] for k in IDENTITY_ATTRS if attrs.get(k) is not None}
    if "encoder" in out:
        out["encoder"] = str(out["encoder"]).rsplit(":", 1)[-1].lower()
    for key in ("dim", "fps"):
        if key in out:
            out[key] = float(out[key])
    if "normalized" in out:
        out["normalized"] = bool(out["normalized"])
    return out


def check_same_encoder(path: Path | str, stored: Mapping[str, Any], new: Mapping[str, Any],
                       new_source: str) -> None:
    """Refuse (one line, naming the file and the attributes) to put features of another
    encoder into ``path``; attributes only one side records are not compared."""
    a, b = encoder_identity(stored), encoder_identity(new)
    differ = [k for k in a if k in b and a[k] != b[k]]
    if differ:
        diff = "; ".join(f"{k}: file {a[k]!r}, {new_source} {b[k]!r}" for k in differ)
        raise FeatureStoreError(
            f"{path}: holds features of another encoder than {new_source} ({diff}). One file "
            "holds one encoder's features: write to another --out folder, or delete the file "
            "to replace it")


class _LazyFile:
    """An h5py handle opened on first use in each process (h5py handles do not survive fork)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None

    @property
    def file(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_file": None, "_pid": None}


class VideoFeatures:
    """Reader of a video feature file: ``store[video_id] -> float32 [seconds, D]``.

    ``seconds`` fits every video to that many rows (:func:`pad_or_trim`); ``None`` returns what
    was stored. ``preload=True`` reads the whole file into RAM once, as one array
    ``[videos, seconds, D]`` in the stored dtype (MUSIC-AVQA CLIP-L: ~0.8 GB in float16), so a
    batch is one fancy-indexing copy (:meth:`take`).
    """

    def __init__(self, path: Path | str, seconds: int | None = None, preload: bool = False):
        self.path = Path(path)
        self.attrs = read_attrs(self.path)
        if self.attrs.get("kind") != "video":
            raise FeatureStoreError(f"{self.path}: holds {self.attrs.get('kind')!r} features, "
                                    "not video features; check the data config's feature paths")
        self.seconds = seconds
        self.dim = int(self.attrs["dim"])
        with h5py.File(self.path, "r") as f:
            names = sorted(f[VIDEO_GROUP])
            self._ids_by_row = [decode_name(n) for n in names]
            self._row = {v: i for i, v in enumerate(self._ids_by_row)}
            self._array: np.ndarray | None = None
            self._cache: dict[str, np.ndarray] | None = None
            if preload:
                grp = f[VIDEO_GROUP]
                if seconds is None:
                    self._cache = {decode_name(n): grp[n][()] for n in names}
                else:
                    self._array = np.stack([pad_or_trim(grp[n][()], seconds) for n in names])
        self._ids = frozenset(self._row)
        self._lazy = _LazyFile(self.path)

    @property
    def ids(self) -> frozenset[str]:
        return self._ids

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._row

    def __len__(self) -> int:
        return len(self._row)

    def check(self, video_ids: Iterable[str]) -> None:
        """Raise :class:`MissingFeaturesError` naming every requested id that is absent."""
        missing = sorted({v for v in video_ids if v not in self._row})
        if missing:
            raise MissingFeaturesError(self.path, missing)

    def rows(self, video_ids: Sequence[str]) -> np.ndarray:
        """Row numbers of ``video_ids`` for :meth:`take` (check them first)."""
        return np.array([self._row[v] for v in video_ids], dtype=np.int64)

    def raw(self, video_id: str) -> np.ndarray:
        """The stored array, before padding or trimming."""
        if self._cache is not None:
            return self._cache[video_id]
        return self._lazy.file[VIDEO_GROUP][encode_name(video_id)][()]

    def _fitted(self, video_id: str) -> np.ndarray:
        if self._array is not None:
            return self._array[self._row[video_id]]
        arr = self.raw(video_id)
        return arr if self.seconds is None else pad_or_trim(arr, self.seconds)

    def __getitem__(self, video_id: str) -> np.ndarray:
        return self._fitted(video_id).astype(np.float32)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """``[len(rows), seconds, D]`` in the stored dtype (float16 by default: half the bytes to
        copy and to move to the GPU; the model casts on its device) for the given :meth:`rows`."""
        if self.seconds is None:
            raise FeatureStoreError("batched reads need a fixed number of seconds")
        if self._array is not None:
            return self._array[rows]
        return np.stack([self._fitted(self._ids_by_row[r]) for r in rows])

    def close(self) -> None:
        self._lazy.close()


@dataclass(frozen=True)
class TextFeature:
    sentence: np.ndarray  # [D]
    tokens: np.ndarray  # [L, D], L = true token count


class TextFeatures:
    """Reader of a text feature file: ``store[text] -> TextFeature`` (keyed by :func:`text_key`).

    :meth:`take` gathers a batch: sentence vectors and token states padded to the longest,
    with a boolean mask (True = real token).
    """

    def __init__(self, path: Path | str, preload: bool = False):
        self.path = Path(path)
        self.attrs = read_attrs(self.path)
        if self.attrs.get("kind") != "text":
            raise FeatureStoreError(f"{self.path}: holds {self.attrs.get('kind')!r} features, "
                                    "not text features; check the data config's feature paths")
        self.dim = int(self.attrs["dim"])
        with h5py.File(self.path, "r") as f:
            keys = f["key"][()]
            self._row = {k.decode(): i for i, k in enumerate(keys)}
            self._offset = f["offset"][()]
            self._length = f["length"][()]
            self._sentence = f["sentence"][()] if preload else None
            self._tokens = f["tokens"][()] if preload else None
        self._lazy = _LazyFile(self.path)

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, text: str) -> bool:
        return text_key(text) in self._row

    def check(self, texts: Iterable[str]) -> None:
        missing = sorted({t for t in texts if text_key(t) not in self._row})
        if missing:
            raise MissingFeaturesError(self.path, [repr(t) for t in missing], what="texts")

    def rows(self, texts: Sequence[str]) -> np.ndarray:
        """Row numbers of ``texts`` for :meth:`take` (check them first)."""
        return np.array([self._row[text_key(t)] for t in texts], dtype=np.int64)

    def _sentences(self, rows: np.ndarray) -> np.ndarray:
        if self._sentence is not None:
            return self._sentence[rows]
        ds = self._lazy.file["sentence"]
        return np.stack([ds[int(r)] for r in rows])

    def _token_rows(self, r: int) -> np.ndarray:
        o, n = int(self._offset[r]), int(self._length[r])
        src = self._tokens if self._tokens is not None else self._lazy.file["tokens"]
        return src[o : o + n]

    def __getitem__(self, text: str) -> TextFeature:
        r = self._row[text_key(text)]
        return TextFeature(self._sentences(np.array([r]))[0].astype(np.float32),
                           np.asarray(self._token_rows(r), dtype=np.float32))

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """Token counts of the texts at ``rows``."""
        return self._length[rows]

    def take(self, rows: np.ndarray, length: int = 1
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``sentence [B, D]``, ``tokens [B, L, D]`` zero-padded, ``mask [B, L]`` (float32/bool);
        L is the longest of these texts, or ``length`` when that is longer."""
        lengths = self.lengths(rows)
        tokens = np.zeros((len(rows), max(int(lengths.max(initial=1)), length), self.dim),
                          dtype=np.float32)
        mask = np.zeros(tokens.shape[:2], dtype=bool)
        for b, (r, n) in enumerate(zip(rows, lengths, strict=True)):
            tokens[b, :n] = self._token_rows(int(r))
            mask[b, :n] = True
        return self._sentences(rows).astype(np.float32), tokens, mask

    def close(self) -> None:
        self._lazy.close()
