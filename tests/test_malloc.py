"""Which allocator a process runs with, and the hint a CPU training run gives about tcmalloc."""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import child_env

from avmaster.malloc import allocator_from_maps, cpu_hint, find_tcmalloc

GLIBC_MAPS = """\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1 /usr/bin/python3.11
7f1e2a000000-7f1e2a022000 r--p 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2b000000-7f1e2b001000 rw-p 00000000 00:00 0
7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0 [stack]
"""


def test_allocator_named_by_the_mapped_library():
    assert allocator_from_maps(GLIBC_MAPS) == "glibc"
    for lib, name in (("libtcmalloc_minimal.so.4.5.10", "tcmalloc"),
                      ("libtcmalloc.so.4", "tcmalloc"), ("libjemalloc.so.2", "jemalloc"),
                      ("libmimalloc.so.2.1", "mimalloc")):
        line = f"7f1e2c000000-7f1e2c010000 r-xp 00000000 08:01 3 /opt/lib/{lib}\n"
        assert allocator_from_maps(GLIBC_MAPS + line) == name, lib
    # a library whose name merely contains an allocator's is not one
    other = "7f1e2c000000-7f1e2c010000 r-xp 00000000 08:01 3 /opt/lib/libnotjemalloc.so\n"
    assert allocator_from_maps(GLIBC_MAPS + other) == "glibc"
    musl = GLIBC_MAPS.replace("/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/ld-musl-x86_64.so.1")
    assert allocator_from_maps(musl) == "system"


def _in_child(code: str, preload: str | None, **extra: str) -> str:
    return subprocess.run([sys.executable, "-c", code], env=child_env(preload, **extra),
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_a_process_without_and_with_tcmalloc_preloaded():
    code = ("from avmaster.malloc import loaded_allocator, cpu_hint; "
            "print(loaded_allocator(), '|', cpu_hint())")
    allocator, hint = _in_child(code, None).split(" | ")
    assert allocator == "glibc" and "LD_PRELOAD=" in hint
    found = find_tcmalloc()
    if found is None:
        pytest.skip("tcmalloc is not installed here (apt install libtcmalloc-minimal4)")
    assert f"start the command with LD_PRELOAD={found}" in hint
    assert _in_child(code, found) == "tcmalloc | None"


def test_hint_says_how_to_install_when_tcmalloc_is_missing(monkeypatch):
    monkeypatch.setattr("avmaster.malloc.loaded_allocator", lambda: "glibc")
    monkeypatch.setattr("avmaster.malloc.find_tcmalloc", lambda: None)
    assert "apt install libtcmalloc-minimal4" in cpu_hint()
    monkeypatch.setattr("avmaster.malloc.loaded_allocator", lambda: "unknown")
    assert cpu_hint() is None


def _steps_code(precision: str) -> str:
    """A child program: three training steps of a small model (the default manual focus scan,
    dropout on), then the SHA-256 of its parameters."""
    tools = Path(__file__).resolve().parents[1] / "tools"
    return (
        f"import hashlib, sys, torch; sys.path.insert(0, {str(tools)!r}); "
        "import bench_train as bt; torch.set_num_threads(1); "
        "args = bt.parse_args('--batch 4 --seconds 6 --words 5 --dim 32 --visual-dim 24 "
        f"--audio-dim 16 --text-dim 20 --answers 7 --precision {precision}'.split()); "
        "run = bt.setup(args, bt.model_config(args)); h = hashlib.sha256()\n"
        "for _ in range(3): run.step()\n"
        "for p in run.model.parameters(): h.update(p.detach().numpy().tobytes())\n"
        "print(h.hexdigest())"
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's MALLOC_PERTURB_")
@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_training_reads_no_uninitialised_memory(precision):
    """Fresh memory filled with different bytes (glibc's ``MALLOC_PERTURB_``) leaves the
    parameters after three steps bit-identical: every buffer the step allocates, the manual
    scan's included, is written before it is read."""
    code = _steps_code(precision)
    first = _in_child(code, None, MALLOC_PERTURB_="165")
    assert len(first) == 64 and first == _in_child(code, None, MALLOC_PERTURB_="77")


def test_tcmalloc_changes_no_arithmetic():
    """Three training steps of a small model give bit-identical parameters with tcmalloc
    preloaded and without (README, "Training-step speed on CPU")."""
    found = find_tcmalloc()
    if found is None or not sys.platform.startswith("linux"):
        pytest.skip("tcmalloc is not installed here (apt install libtcmalloc-minimal4)")
    code = _steps_code("bf16-mixed")
    plain = _in_child(code, None)
    assert len(plain) == 64 and plain == _in_child(code, found)
