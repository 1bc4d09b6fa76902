"""Where the project's own files are found (named configs, the bundled answer lists)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
# The presets live in the repository's configs/; an installed (built) package carries them as
# avmaster/configs (setup.cfg maps one onto the other), a source checkout has only the former.
PROJECT_CONFIGS = _HERE / "configs" if (_HERE / "configs").is_dir() else _HERE.parent / "configs"


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
