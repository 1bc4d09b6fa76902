"""Writing files so that a killed process never leaves a truncated one behind.

Every writer goes through :func:`atomic_path`: the content is written to a temporary file in
the same folder (named :data:`TEMP_PATTERN`, which the stale-file sweep of ``avmaster extract``
recognises), flushed to disk, then renamed onto the target.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMP_PATTERN = ".*.tmp-*"  # glob of the temporary files below (what a killed writer leaves)


def temp_name(path: Path) -> Path:
    """A temporary file next to ``path``, unique per process and call, with ``path``'s suffix
    (for writers that pick the format from it, such as PyAV's)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}{path.suffix}")


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it is fsynced and
    renamed onto ``path``, on any error removed (``path`` is then left as it was)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write a text file atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_safe(obj: Any) -> Any:
    """``obj`` with every float that is not finite replaced by ``None`` (JSON's null): standard
    JSON has no NaN, and an accuracy over no questions is one."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """Write ``obj`` as indented standard JSON (see :func:`json_safe`), atomically."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")
