"""``avmaster import-features`` command line and settings. Imports only light modules, so that
``--help`` answers at once; the work is :func:`avmaster.extract.importer.run_import`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from avmaster.extract.config import INTERRUPTED, ImportConfig, release_names


def build_parser() -> argparse.ArgumentParser:
    d = ImportConfig(release="", npy=Path())
    p = argparse.ArgumentParser(
        prog="avmaster import-features",
        description="Import released per-video .npy features into the HDF5 feature store. "
                    "Resumable: a rerun continues; kill it at any time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--release", required=True,
                   help=f"release format: {', '.join(release_names())} (configs/releases/)")
    p.add_argument("--npy", type=Path, required=True, help="folder of <video_id>.npy files")
    p.add_argument("--out", type=Path, default=d.out, help="feature folder (the store)")
    p.add_argument("--annotations", nargs="+", action="extend", default=[], metavar="FILE",
                   help="annotation files: report their videos that have no features")
    p.add_argument("--annotation-format", default=d.annotation_format,
                   choices=("auto", "music_avqa", "avqa"))
    p.add_argument("--seconds", type=int, default=d.seconds,
                   help="expected T: videos with another T are counted (and kept as stored)")
    p.add_argument("--dtype", default=d.dtype, choices=("float16", "float32"))
    p.add_argument("--part-videos", type=int, default=d.part_videos,
                   help="save a part every this many videos")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point of ``avmaster import-features``."""
    a = build_parser().parse_args(argv)
    cfg = ImportConfig(release=a.release, npy=a.npy, out=a.out, annotations=tuple(a.annotations),
                       annotation_format=a.annotation_format, seconds=a.seconds, dtype=a.dtype,
                       part_videos=a.part_videos, progress=a.progress)
    from avmaster.data.annotations import AnnotationError
    from avmaster.data.store import FeatureStoreError
    from avmaster.extract.importer import run_import

    status, message = 0, ""
    try:
        print(json.dumps(run_import(cfg), indent=2))
    except (FeatureStoreError, AnnotationError) as e:
        status, message = 2, f"avmaster import-features: error: {e}"
    except KeyboardInterrupt:
        status = INTERRUPTED
        message = "interrupted: the videos imported so far are saved; rerun to resume"
    if message:
        print(message, file=sys.stderr)
    return status




if __name__ == "__main__":
    sys.exit(main())
