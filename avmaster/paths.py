"""Where the project's own files are found (named configs, the bundled answer lists)."""

from __future__ import annotations

from pathlib import Path

PROJECT_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_dirs() -> list[Path]:
    """Named configs are looked up in ``./configs`` first, then in the project's ``configs/``."""
    return [Path("configs"), PROJECT_CONFIGS]


def resolve(name: str | Path, *bases: Path | str) -> Path:
    """``name`` as given when it exists, else under the first base (or config dir) holding it;
    falls back to ``name`` itself so that the caller's error names the path it was given."""
    p = Path(name)
    if p.is_absolute() or p.exists():
        return p
    for base in (*bases, *config_dirs()):
        if (Path(base) / p).exists():
            return Path(base) / p
    return p
