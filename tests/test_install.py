"""The install: every third-party module the package imports is a declared requirement (not
a dev extra), and ``--help`` of every command answers without loading torch."""

import ast
import configparser
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from avmaster.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
# floors of the test and notebook tooling, which is installed at its newest for every test run
DEV_ONLY_FLOORS = {"pytest", "pytest-xdist", "ruff", "nbclient", "nbformat", "ipykernel", "ipython",
                   "setuptools"}
HEAVY = ("torch", "lightning", "torchmetrics", "pandas", "matplotlib", "open_clip", "h5py")


def _names(lines: str) -> set[str]:
    found = (re.match(r"[A-Za-z0-9_.\-]+", line.strip()) for line in lines.splitlines())
    return {_normal(m.group(0)) for m in found if m}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    """install_requires and every extra except dev (tests, notebooks, linters)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    names = _names(cfg["options"]["install_requires"])
    for extra, lines in cfg["options.extras_require"].items():
        if extra != "dev":
            names |= _names(lines)
    return names


def imported_modules() -> dict[str, str]:
    """Top-level module -> first file importing it, for every import in the package (also
    those inside functions)."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "avmaster").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def providers() -> dict[str, set[str]]:
    """Top-level module -> the installed distributions that hold it, from each distribution's
    file list (Python 3.10's ``packages_distributions`` reads only ``top_level.txt``, which
    some wheels, open_clip_torch's among them, do not have)."""
    found: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        found.setdefault(module, set()).update(dists)
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            top = file.parts[0]
            if len(file.parts) > 1 or top.endswith(".py"):
                found.setdefault(top.removesuffix(".py"), set()).add(dist.metadata["Name"])
    return found


def test_every_import_is_a_declared_requirement():
    installed = providers()
    allowed = declared()
    missing = []
    for module, where in imported_modules().items():
        if module in sys.stdlib_module_names or module == "avmaster":
            continue
        # a module of an optional extra that is not installed here: its own name
        dists = {_normal(d) for d in installed.get(module, [])} or {_normal(module)}
        if not dists & allowed:
            missing.append(f"{module} ({where}; distribution {sorted(dists) or 'unknown'})")
    assert not missing, f"imported but not in install_requires: {missing}"


def test_help_of_every_command_loads_no_heavy_module():
    code = ("import sys, contextlib, io\n"
            "from avmaster.cli import main\n"
            f"for command in {sorted(COMMANDS)!r}:\n"
            "    try:\n"
            "        with contextlib.redirect_stdout(io.StringIO()):\n"
            "            main([command, '--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
            # reading configs and drawing the reports (the notebooks' import) need no torch
            "import avmaster.config, avmaster.reports\n"
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    helps, reports = done.stdout.strip().splitlines()
    assert helps == "[]", f"--help imported {helps}"
    assert reports == "[]", f"avmaster.config / avmaster.reports imported {reports}"


@pytest.mark.parametrize("command", ["score", "extract"])
def test_help_answers(command, capsys):
    from avmaster.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0 and f"avmaster {command}" in capsys.readouterr().out


def test_floors_are_the_tested_minimum_versions():
    """Each ``>=`` floor in setup.cfg is the version ``make test-min`` installs, and every
    package pinned there is a requirement."""
    from packaging.version import Version

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [cfg["options"]["install_requires"], *cfg["options.extras_require"].values()]
    floors = {}
    for line in "\n".join(lines).splitlines():
        if m := re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9.]+)\s*", line):
            floors[_normal(m.group(1))] = Version(m.group(2))
    pins = {}
    for line in (ROOT / "tests" / "minimum_versions.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[_normal(name)] = Version(version)
    assert set(pins) <= _names("\n".join(lines)), "pinned but not a requirement"
    wrong = {n: (str(floors[n]), str(pins[n]))
             for n in floors if n in pins and floors[n] != pins[n]}
    assert not wrong, f"setup.cfg floor vs tests/minimum_versions.txt: {wrong}"
    unpinned = {n for n in floors if n not in pins} - DEV_ONLY_FLOORS
    assert not unpinned, f"floors with no pin in tests/minimum_versions.txt: {sorted(unpinned)}"


def test_packages_listed_in_setup_cfg_are_the_package_folders():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    folders = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "avmaster").rglob("__init__.py")}
    assert listed == folders | {"avmaster.configs"}
    assert cfg["options"]["package_dir"].split() == ["avmaster.configs", "=", "configs"]


@pytest.mark.slow
def test_a_built_package_carries_the_presets(tmp_path):
    """``pip install .`` (not ``-e``) ships configs/ inside the package, and the commands find
    every preset from any folder."""
    src = tmp_path / "src"
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes((ROOT / name).read_bytes())
    for folder in ("avmaster", "configs"):
        shutil.copytree(ROOT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("avmaster-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:  # a pure-Python wheel installs by unpacking it
        z.extractall(site)
    shipped = sorted(p.relative_to(site / "avmaster" / "configs").as_posix()
                     for p in (site / "avmaster" / "configs").rglob("*") if p.is_file())
    assert shipped == sorted(p.relative_to(ROOT / "configs").as_posix()
                             for p in (ROOT / "configs").rglob("*") if p.is_file())
    code = ("import avmaster, json\n"
            "from avmaster.config import preset_names\n"
            "from avmaster.cli import main\n"
            "assert main(['config', 'data=music_avqa_r', 'ablation=question_only']) == 0\n"
            "print(json.dumps([avmaster.__file__, preset_names('data'),"
            " preset_names('ablations')]))\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=elsewhere, env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr
    where, data, ablations = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(where).is_relative_to(site)
    assert data == sorted(p.stem for p in (ROOT / "configs" / "data").glob("*.yaml"))
    assert ablations == sorted(p.stem for p in (ROOT / "configs" / "ablations").glob("*.yaml"))
