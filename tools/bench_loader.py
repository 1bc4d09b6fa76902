"""Data loader throughput on MUSIC-AVQA-sized synthetic features (no model): samples/s.

    python tools/bench_loader.py --videos 2000 --questions 20000 --workers 0 2 --preload 1 0

Writes a temporary feature store of ``--videos`` videos ([T, Dv] visual, [T, Da] audio, float16)
and ``--questions`` distinct questions, then iterates the training loader for ``--batches``
batches per setting and prints one line per setting.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from avmaster.data.config import DataConfig
from avmaster.data.datamodule import AVQADataModule
from avmaster.data.records import MUSIC_AVQA_TYPES
from avmaster.data.store import write_text_features, write_video_features


def make_dataset(root: Path, videos: int, questions: int, seconds: int, dims: tuple[int, ...],
                 seed: int = 0) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    vids = [f"{i:08d}" for i in range(videos)]
    for name, dim in (("visual", dims[0]), ("audio", dims[1])):
        feats = ((v, rng.standard_normal((seconds, dim), dtype=np.float32)) for v in vids)
        write_video_features(root / f"{name}.h5", feats, modality=name, encoder="random")
    texts = [f"question number {i}" for i in range(questions)]
    tokens = [rng.standard_normal((8 + i % 12, dims[2]), dtype=np.float32)
              for i in range(questions)]
    write_text_features(root / "text.h5", texts, rng.standard_normal((questions, dims[2])),
                        tokens, encoder="random")
    entries = [{"video_id": vids[i % videos], "question_id": i, "question_content": texts[i],
                "type": json.dumps(list(MUSIC_AVQA_TYPES[i % 9][:2])), "templ_values": "[]",
                "anser": ["yes", "no", "two"][i % 3]} for i in range(questions)]
    (root / "train.json").write_text(json.dumps(entries))
    return {"visual_features": "visual.h5", "audio_features": "audio.h5",
            "text_features": "text.h5"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=2000)
    p.add_argument("--questions", type=int, default=20000)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--dims", type=int, nargs=3, default=(768, 128, 768))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--preload", type=int, nargs="+", default=[1, 0])
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = make_dataset(root, a.videos, a.questions, a.seconds, a.dims)
        for preload in a.preload:
            for workers in a.workers:
                cfg = DataConfig(annotations_dir=str(root), train=["train.json"], answers=None,
                                 features_dir=str(root), seconds=a.seconds, batch_size=a.batch,
                                 num_workers=workers, preload=bool(preload), pin_memory=False,
                                 **files)
                dm = AVQADataModule(cfg)
                t0 = time.perf_counter()
                dm.setup("fit")
                setup_s = time.perf_counter() - t0
                n, t0 = 0, time.perf_counter()
                for i, batch in enumerate(dm.train_dataloader()):
                    n += batch["label"].shape[0]
                    if i + 1 == a.batches:
                        break
                dt = time.perf_counter() - t0
                print(f"loader preload={preload} workers={workers} batch={a.batch} "
                      f"T={a.seconds} dims={tuple(a.dims)}: {n / dt:,.0f} samples/s "
                      f"(setup {setup_s:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
