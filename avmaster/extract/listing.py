"""Finding the video files under a folder (video id = file name stem)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from avmaster.extract.decoded import DUPLICATE_ID, Problem


@dataclass
class VideoListing:
    """Video files found under a folder: ``files[video_id] = path`` (sorted by id)."""

    files: dict[str, Path]
    problems: list[Problem] = field(default_factory=list)


def find_videos(root: Path | str, extensions: Sequence[str]) -> VideoListing:
    """Every file under ``root`` (recursively, following links) whose extension is listed.

    Video id = file name stem. Two files with the same stem: the first in path order is used,
    the others are reported as ``duplicate_id``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: video folder not found (--videos)")
    exts = {e.lower().lstrip(".") for e in extensions}
    paths = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        paths.extend(Path(dirpath) / f for f in filenames
                     if not f.startswith(".") and f.rsplit(".", 1)[-1].lower() in exts)
    files: dict[str, Path] = {}
    problems = []
    for p in sorted(paths):
        if p.stem in files:
            problems.append(Problem(p.stem, str(p), DUPLICATE_ID,
                                    f"same id as {files[p.stem]}; this file was not used"))
            continue
        files[p.stem] = p
    return VideoListing(dict(sorted(files.items())), problems)
