"""``avmaster import-features`` throughput on a synthetic release folder: videos/s and MB/s.

    python tools/bench_import.py --videos 2000 --release music_avqa_resnet18

Writes ``--videos`` float32 ``.npy`` files shaped like the release ([60, 512] for ResNet-18,
[60, 128] for VGGish, [60, 50, 512] for PSTP's ViT-B/32) into a temporary folder, imports them
into a fresh store and prints one line: time, videos/s, input MB/s and the peak memory of the
process (the import holds one part of ``--part-videos`` videos at a time).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from avmaster.extract.importer import ImportConfig, load_release, run_import


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=1000)
    p.add_argument("--release", default="music_avqa_resnet18")
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--part-videos", type=int, default=256)
    a = p.parse_args()
    release = load_release(a.release)
    shape = ((a.seconds, 50, release.dim) if release.layout == "class_and_patches"
             else (a.seconds, release.dim))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        npy = Path(tmp) / "npy"
        npy.mkdir()
        one = rng.standard_normal(shape, dtype=np.float32)
        for i in range(a.videos):
            np.save(npy / f"{i:08d}.npy", one + i)
        megabytes = a.videos * one.nbytes / 1e6
        start = time.perf_counter()
        report = run_import(ImportConfig(release=a.release, npy=npy, out=Path(tmp) / "store",
                                         seconds=a.seconds, part_videos=a.part_videos,
                                         progress=False))
        elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{a.release}: {report['imported']} videos {list(shape)} ({megabytes:.0f} MB) in "
          f"{elapsed:.1f} s: {report['imported'] / elapsed:.0f} videos/s, "
          f"{megabytes / elapsed:.0f} MB/s; peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
