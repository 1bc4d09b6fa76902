#!/usr/bin/env python
"""Benchmark feature extraction: decode only, encode only, and end to end, on generated videos.

    python tools/bench_extract.py --n-videos 16 --seconds 60 --width 640 --height 360 \\
        --model avmaster-tiny --random-init --device cpu --workers 2
    python tools/bench_extract.py --model ViT-L-14-336 --pretrained openai --device cuda \\
        --workers 15 --n-videos 64            # the MUSIC-AVQA setting (weights cached)

Videos are synthetic (a scrolling noise texture over per-second colours, H.264 High profile
with B-frames, AAC stereo 44.1 kHz), written once into ``--work`` (``--workers`` at a time)
and reused. Prints videos/s and frames/s (one frame per second of video) per stage, as text and
as one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avmaster.extract.config import ExtractConfig
from avmaster.extract.decode import iter_decoded
from avmaster.extract.extractor import FeatureExtractor
from avmaster.extract.parts import merge
from avmaster.extract.runner import RunStats, extract_videos
from avmaster.extract.synth_media import ClipSpec, synthetic_clips

MUSIC_AVQA_VIDEOS = 9288  # for the projected full-dataset time


@dataclass(frozen=True)
class BenchDefaults:
    n_videos: int = 8
    seconds: int = 60
    fps: float = 30.0
    width: int = 640
    height: int = 360
    gop: int = 60  # keyframe interval in frames
    bframes: int = 2
    preset: str = "veryfast"
    texture: float = 0.35
    encode_batches: int = 4


def make_videos(folder: Path, args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The benchmark's videos, those missing written ``--workers`` at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    opts = {"g": str(args.gop), "bf": str(args.bframes), "preset": args.preset}
    paths = [folder / f"bench{i:04d}_{args.width}x{args.height}_{args.seconds}s.mp4"
             for i in range(args.n_videos)]
    todo = [(path, ClipSpec(seconds=args.seconds, fps=args.fps, width=args.width,
                            height=args.height, channels=2, sample_rate=44100,
                            texture=args.texture, seed=i))
            for i, path in enumerate(paths) if not path.exists()]
    synthetic_clips(todo, opts, args.workers)
    return [(path.stem, path) for path in paths]


def rate(count: float, seconds: float) -> float:
    return count / max(seconds, 1e-9)


def bench_decode(ex: FeatureExtractor, items: list[tuple[str, Path]], workers: int) -> dict:
    spec = ex.decode_spec
    t = time.perf_counter()
    frames = decoded = 0
    for dv in iter_decoded(items, spec, workers):
        frames += dv.n_seconds
        decoded += dv.info.get("frames_decoded", 0)
    dt = time.perf_counter() - t
    return {"videos_s": rate(len(items), dt), "frames_s": rate(frames, dt),
            "source_frames_decoded_s": rate(decoded, dt), "wall_s": dt}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_encode(ex: FeatureExtractor, seconds: int, batches: int) -> dict:
    cfg, clip, vgg = ex.config, ex.clip, ex.vggish
    frames = torch.randint(0, 256, (cfg.batch_size, *clip.image_size, 3), dtype=torch.uint8)
    mel = torch.randn(cfg.audio_batch_size, 96, 64) - 4.0
    clip.encode_images(frames[:2])  # warm-up
    vgg.encode(mel[:2])
    _sync(ex.device)
    t = time.perf_counter()
    for _ in range(batches):
        clip.encode_images(frames)
    _sync(ex.device)
    img_s = rate(batches * cfg.batch_size, time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(batches):
        vgg.encode(mel)
    _sync(ex.device)
    aud_s = rate(batches * cfg.audio_batch_size, time.perf_counter() - t)
    per_video = seconds / img_s + seconds / aud_s
    return {"image_frames_s": img_s, "audio_examples_s": aud_s, "videos_s": 1.0 / per_video,
            "frames_s": seconds / per_video}


def bench_end_to_end(ex: FeatureExtractor, items: list[tuple[str, Path]], out: Path) -> dict:
    cfg = dataclasses.replace(ex.config, out=out, progress=False)
    ex.config = cfg
    stats = RunStats()
    extract_videos(cfg, ex, items, stats)
    dt = stats.elapsed
    t = time.perf_counter()
    merge(cfg)
    return {"videos_s": rate(len(items), dt), "frames_s": rate(stats.frames, dt), "wall_s": dt,
            "merge_s": time.perf_counter() - t}


def main(argv: list[str] | None = None) -> int:
    d, e = BenchDefaults(), ExtractConfig()
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-videos", type=int, default=d.n_videos)
    p.add_argument("--seconds", type=int, default=d.seconds)
    p.add_argument("--fps", type=float, default=d.fps)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--gop", type=int, default=d.gop)
    p.add_argument("--bframes", type=int, default=d.bframes)
    p.add_argument("--preset", default=d.preset, help="x264 preset of the generated videos")
    p.add_argument("--texture", type=float, default=d.texture)
    p.add_argument("--model", default="avmaster-tiny")
    p.add_argument("--pretrained", default=e.pretrained)
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--clip-weights")
    p.add_argument("--vggish-weights")
    p.add_argument("--device", default=e.device)
    p.add_argument("--precision", default=e.precision)
    p.add_argument("--workers", type=int, default=e.workers)
    p.add_argument("--decode-threads", type=int, default=e.decode_threads)
    p.add_argument("--decode-all-frames", action="store_true")
    p.add_argument("--fast-decode", action="store_true")
    p.add_argument("--hwaccel", default=None)
    p.add_argument("--frame-position", type=float, default=e.frame_position)
    p.add_argument("--batch-size", type=int, default=e.batch_size)
    p.add_argument("--audio-batch-size", type=int, default=e.audio_batch_size)
    p.add_argument("--encode-batches", type=int, default=d.encode_batches)
    p.add_argument("--stages", default="decode,encode,e2e")
    p.add_argument("--work", type=Path, help="folder for the generated videos (kept)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    stages = set(args.stages.split(","))
    work = args.work or Path(tempfile.mkdtemp(prefix="avmaster-bench-"))
    t = time.perf_counter()
    items = make_videos(work / "videos", args)
    print(f"videos: {len(items)} x {args.seconds} s {args.width}x{args.height} @ {args.fps} fps "
          f"in {work / 'videos'} (ready in {time.perf_counter() - t:.1f} s)")
    cfg = ExtractConfig(out=work / "out", model=args.model, pretrained=args.pretrained,
                        random_init=args.random_init, clip_weights=args.clip_weights,
                        vggish_weights=args.vggish_weights, device=args.device,
                        precision=args.precision, workers=args.workers,
                        decode_threads=args.decode_threads, fast_decode=args.fast_decode,
                        decode_all_frames=args.decode_all_frames, hwaccel=args.hwaccel,
                        frame_position=args.frame_position,
                        batch_size=args.batch_size, audio_batch_size=args.audio_batch_size,
                        seconds=args.seconds, progress=False)
    ex = FeatureExtractor(cfg)
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "cpu": platform.processor(), "device": str(ex.device),
                                 "gpu": torch.cuda.get_device_name() if ex.device.type == "cuda"
                                 else None, "precision": ex.precision},
                     "date": time.strftime("%Y-%m-%d"), "args": vars(args) | {"work": str(work)}}
    if "decode" in stages:
        results["decode"] = bench_decode(ex, items, args.workers)
    if "encode" in stages:
        results["encode"] = bench_encode(ex, args.seconds, args.encode_batches)
    if "e2e" in stages:
        out = work / f"out-{time.time_ns()}"
        results["end_to_end"] = bench_end_to_end(ex, items, out)
    for stage in ("decode", "encode", "end_to_end"):
        if stage in results:
            r = results[stage]
            hours = MUSIC_AVQA_VIDEOS / r["videos_s"] / 3600
            print(f"{stage:>10}: {r['videos_s']:8.2f} videos/s  {r['frames_s']:9.1f} frames/s"
                  f"  (9,288 videos: {hours:.2f} h)")
    print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
