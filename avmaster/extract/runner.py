"""``avmaster extract``: videos and annotation texts -> the HDF5 feature caches, resumably.

    avmaster extract --videos data/MUSIC-AVQA/videos --annotations data/avqa-*.json \\
        --out features --seconds 60 [--shard 0/4] [--workers 15] [--device cuda]

Decoding runs on ``--workers`` CPU processes; frames are batched across videos for the image
encoder. Completed work is saved as part files every ``--part-videos`` videos or
``--part-seconds`` seconds; a rerun skips what is done, and the merge (automatic at the end of
an unsharded run, ``--merge`` otherwise) writes the final files. See features/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from avmaster.atomic import TEMP_PATTERN, atomic_write_text
from avmaster.data.annotations import AnnotationError
from avmaster.extract.config import (
    AUDIO_ENCODERS,
    DEVICES,
    HWACCELS,
    INTERRUPTED,
    PRECISIONS,
    VGGISH_POSTPROCESS,
    VISUAL_ENCODERS,
    ExtractConfig,
    audio_settings,
    feature_paths,
    text_settings,
    visual_settings,
)
from avmaster.extract.text import collect_texts

if TYPE_CHECKING:  # decoding and encoding load on first use, so that --help stays fast
    from avmaster.extract.decoded import DecodedVideo, Problem
    from avmaster.extract.extractor import FeatureExtractor
    from avmaster.extract.parts import MergeResult, VideoPartWriter

log = logging.getLogger(__name__)

TEXT_PART_SIZE = 8192  # texts per text part
STALE_TMP_SECONDS = 24 * 3600  # temporary files older than this are leftovers of killed runs
POSTFIX_EVERY = 8  # videos between progress-bar postfix updates
INCOMPLETE = 3  # exit status with --strict when some listed videos have no features


@dataclass
class Plan:
    """What this shard has to do."""

    all_videos: list[str]
    items: list[tuple[str, Path]]  # this shard's videos
    pending: list[tuple[str, Path]]
    all_texts: list[str]
    pending_texts: list[str]
    listing: list[Problem] = field(default_factory=list)


@dataclass
class RunStats:
    videos_done: int = 0
    videos_failed: int = 0
    frames: int = 0
    texts: int = 0
    skipped: int = 0
    problems: list[Problem] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def make_plan(cfg: ExtractConfig) -> Plan:
    """List videos and texts, split them by shard, and drop what is already done."""
    from avmaster.data.store import text_key
    from avmaster.extract.decoded import MISSING_FILE, Problem
    from avmaster.extract.listing import find_videos
    from avmaster.extract.parts import done_text_keys, done_videos

    if cfg.videos is None and not cfg.annotations:
        raise ValueError("nothing to extract: give --videos and/or --annotations")
    texts: list[str] = []
    wanted: list[str] | None = None
    if cfg.annotations:
        ann = collect_texts(cfg.annotations, cfg.annotation_format)
        texts, wanted = list(ann.texts), list(ann.video_ids)
        log.info("%d questions in %d annotation files: %d unique texts, %d videos",
                 ann.n_records, len(cfg.annotations), len(texts), len(wanted))
    files: dict[str, Path] = {}
    listing: list[Problem] = []
    if cfg.videos is not None:
        found = find_videos(cfg.videos, cfg.extensions)
        files, listing = found.files, list(found.problems)
        if wanted is not None:
            missing = [v for v in wanted if v not in files]
            listing += [Problem(v, "", MISSING_FILE, f"in the annotations, but no "
                                f"{'/'.join(cfg.extensions)} file under {cfg.videos}", True)
                        for v in missing]
            files = {v: files[v] for v in wanted if v in files}
    i, n = cfg.shard
    all_videos = sorted(files)
    items = [(v, files[v]) for v in all_videos[i::n]]
    done = done_videos(cfg) if items else None
    skip = set() if done is None else done.ok | (set() if cfg.retry_failed else done.failed)
    pending = [(v, p) for v, p in items if v not in skip]
    shard_texts = texts[i::n]
    done_keys = done_text_keys(cfg) if shard_texts else set()
    pending_texts = [t for t in shard_texts if text_key(t) not in done_keys]
    return Plan(all_videos, items, pending, texts, pending_texts, listing)


def _log_problems(problems: Sequence[Problem]) -> None:
    """Failures as warnings; the rest at debug level (the report lists every problem)."""
    for p in problems:
        (log.warning if p.failed else log.debug)("%s: %s%s (%s)", p.video_id, p.kind,
                                                 " [no features]" if p.failed else "", p.detail)


def _encode_group(extractor: FeatureExtractor, group: list[DecodedVideo],
                  writer: VideoPartWriter, stats: RunStats, bar: tqdm) -> None:
    if not group:
        return
    for r in extractor.encode_decoded(group):
        writer.add(r)
        stats.videos_done += 1
    stats.frames += sum(v.n_seconds for v in group)
    bar.update(len(group))
    group.clear()


def extract_videos(cfg: ExtractConfig, extractor: FeatureExtractor,
                   items: Sequence[tuple[str, Path]], stats: RunStats) -> None:
    """Decode ``items`` on worker processes, encode in cross-video batches, write parts."""
    from avmaster.extract.decode import iter_decoded
    from avmaster.extract.parts import VideoPartWriter, VideoResult, shard_name, video_parts_dir

    spec = extractor.decode_spec
    # builds both encoders before the workers start
    writer = VideoPartWriter(video_parts_dir(cfg), cfg, empty=extractor.empty_vectors())
    workers = min(cfg.workers, len(items))
    group: list[DecodedVideo] = []
    bar = tqdm(total=len(items), unit="video", disable=not cfg.progress, smoothing=0.05,
               dynamic_ncols=True, desc=f"videos {shard_name(cfg.shard)}")
    try:
        for k, dv in enumerate(iter_decoded(items, spec, workers), 1):
            stats.problems.extend(dv.problems)
            _log_problems(dv.problems)
            if dv.failed:
                writer.add(VideoResult(dv.video_id, problems=list(dv.problems)))
                stats.videos_failed += 1
                bar.update(1)
                continue
            group.append(dv)
            if sum(v.n_seconds for v in group) >= cfg.batch_size:
                _encode_group(extractor, group, writer, stats, bar)
            if k % POSTFIX_EVERY == 0:
                bar.set_postfix(frames_s=f"{stats.frames / max(stats.elapsed, 1e-9):.0f}",
                                failed=stats.videos_failed, refresh=False)
        _encode_group(extractor, group, writer, stats, bar)
    finally:
        writer.flush()  # whatever was completed survives an interrupt
        bar.close()


def extract_texts(cfg: ExtractConfig, extractor: FeatureExtractor, texts: Sequence[str],
                  stats: RunStats) -> None:
    from avmaster.extract.parts import shard_name, text_parts_dir, write_text_part

    folder = text_parts_dir(cfg)
    bar = tqdm(total=len(texts), unit="text", disable=not cfg.progress, dynamic_ncols=True,
               desc=f"texts {shard_name(cfg.shard)}")
    with bar:
        for s in range(0, len(texts), TEXT_PART_SIZE):
            chunk = list(texts[s : s + TEXT_PART_SIZE])
            sentence, tokens = extractor.encode_texts(chunk)
            write_text_part(folder, cfg, chunk, sentence, tokens)
            stats.texts += len(chunk)
            bar.update(len(chunk))


def remove_stale_temp(folder: Path, older_than: float = STALE_TMP_SECONDS) -> int:
    """Delete temporary files that killed runs left behind (only old ones: a running shard
    may be writing a fresh one)."""
    n, now = 0, time.time()
    for root in (folder, folder / ".parts"):
        for tmp in root.rglob(TEMP_PATTERN) if root.is_dir() else []:
            try:
                if now - tmp.stat().st_mtime > older_than:
                    tmp.unlink()
                    n += 1
            except OSError:
                continue
    return n


def _all_done(cfg: ExtractConfig, plan: Plan) -> bool:
    from avmaster.data.store import text_key
    from avmaster.extract.parts import done_text_keys, done_videos

    done = done_videos(cfg) if plan.all_videos else None
    finished = set() if done is None else done.ok | done.failed
    if any(v not in finished for v in plan.all_videos):
        return False
    keys = done_text_keys(cfg) if plan.all_texts else set()
    return all(text_key(t) in keys for t in plan.all_texts)


def _needs_merge(cfg: ExtractConfig, plan: Plan) -> bool:
    from avmaster.extract.parts import (
        LISTING,
        TEXT_PART,
        VIDEO_PART,
        list_parts,
        text_parts_dir,
        video_parts_dir,
    )

    paths = feature_paths(cfg)
    finals = []
    if plan.all_videos:
        finals += [paths.visual, paths.audio] + ([paths.patch] if cfg.patch_tokens else [])
    if plan.all_texts:
        finals.append(paths.text)
    if not all(p.exists() for p in finals) or not paths.report.exists():
        return True
    parts = (list_parts(video_parts_dir(cfg), VIDEO_PART)
             + list_parts(text_parts_dir(cfg), TEXT_PART)
             + sorted(video_parts_dir(cfg).glob(f"{LISTING}-*.json")))
    newest = max((p.stat().st_mtime for p in parts), default=0.0)
    return newest > min(p.stat().st_mtime for p in [*finals, paths.report])


def summarize(cfg: ExtractConfig, stats: RunStats, merged: MergeResult | None,
              plan: Plan | None, device: str = "") -> dict[str, Any]:
    """The run's summary (what the merge wrote when it ran, else this shard's own counts)."""
    from avmaster.extract.decoded import MISSING_FILE
    from avmaster.extract.parts import count_by_kind

    paths = feature_paths(cfg)
    run = {
        "shard": f"{cfg.shard[0]}/{cfg.shard[1]}",
        "videos_processed": stats.videos_done + stats.videos_failed,
        "videos_failed": stats.videos_failed,
        "videos_skipped_done": stats.skipped,
        "texts_encoded": stats.texts,
        "elapsed_s": round(stats.elapsed, 2),
        "videos_per_s": round((stats.videos_done + stats.videos_failed)
                              / max(stats.elapsed, 1e-9), 3),
        "frames_per_s": round(stats.frames / max(stats.elapsed, 1e-9), 1),
        "device": device,
        "workers": cfg.workers,
    }
    out: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "out": str(cfg.out),
        "settings": {"visual": visual_settings(cfg), "audio": audio_settings(cfg),
                     "text": text_settings(cfg)},
        "run": run,
    }
    if merged is None:
        out["this_run_problems_by_kind"] = count_by_kind(stats.problems)
        return out
    failed_kinds = count_by_kind([p for p in merged.problems if p.failed])
    out.update({
        "files": {name: str(getattr(paths, name)) for name in ("visual", "audio", "patch", "text")
                  if getattr(paths, name).exists()},
        "videos": {"listed": len(plan.all_videos) if plan else None,
                   "with_features": merged.videos, "failed": merged.failed,
                   "missing_file": failed_kinds.get(MISSING_FILE, 0)},
        "texts": merged.texts,
        "problems_by_kind": count_by_kind(merged.problems),
        "no_features_by_kind": failed_kinds,
        "report": str(paths.report),
    })
    return out


def run(cfg: ExtractConfig) -> dict[str, Any]:
    """Extract what ``cfg`` asks for (this shard), merge when due; returns the summary."""
    from avmaster.extract.extractor import FeatureExtractor
    from avmaster.extract.parts import clean_parts, merge, video_parts_dir, write_listing

    paths = feature_paths(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temp(cfg.out)
    if removed:
        log.info("removed %d stale temporary files of killed runs", removed)
    stats = RunStats()
    if cfg.merge_only:
        merged = merge(cfg)
        return _finish(cfg, stats, merged, None, "")
    plan = make_plan(cfg)
    stats.skipped = len(plan.items) - len(plan.pending)
    if cfg.videos is not None:
        write_listing(video_parts_dir(cfg), cfg.shard, plan.listing)
        stats.problems.extend(plan.listing)
        _log_problems(plan.listing)
    log.info("shard %d/%d: %d videos (%d already done), %d texts to encode", *cfg.shard,
             len(plan.items), stats.skipped, len(plan.pending_texts))
    extractor = FeatureExtractor(cfg)
    with logging_redirect_tqdm():
        if plan.pending_texts:
            extract_texts(cfg, extractor, plan.pending_texts, stats)
        if plan.pending:
            extract_videos(cfg, extractor, plan.pending, stats)
    merged = None
    if cfg.auto_merge and (plan.all_videos or plan.all_texts):
        if cfg.shard[1] == 1 or _all_done(cfg, plan):
            if _needs_merge(cfg, plan):
                merged = merge(cfg)
            else:
                log.info("final files are up to date: %s", paths.visual.parent)
                merged = merge_result_from_files(cfg)
        else:
            log.info("shard %d/%d finished; once every shard has, run the same command with "
                     "--merge (no --shard) to write the final files", *cfg.shard)
    if merged is not None and cfg.clean_parts:
        log.info("removed %d merged part files", clean_parts(cfg))
    return _finish(cfg, stats, merged, plan, str(extractor.device))


def merge_result_from_files(cfg: ExtractConfig) -> MergeResult:
    """A :class:`MergeResult` for final files that are already up to date (from the report)."""
    from avmaster.extract.decoded import Problem
    from avmaster.extract.parts import LISTING_KINDS, MergeResult, text_keys_in, video_ids_in

    paths = feature_paths(cfg)
    problems = [Problem(**json.loads(line)) for line in
                paths.report.read_text(encoding="utf-8").splitlines() if line.strip()]
    videos = len(video_ids_in(paths.visual)) if paths.visual.exists() else 0
    texts = len(text_keys_in(paths.text)) if paths.text.exists() else 0
    failed = len({p.video_id for p in problems if p.failed and p.kind not in LISTING_KINDS})
    return MergeResult(videos, failed, texts, problems, [])


def _finish(cfg: ExtractConfig, stats: RunStats, merged: MergeResult | None, plan: Plan | None,
            device: str) -> dict[str, Any]:
    from avmaster.extract.parts import shard_name, video_parts_dir

    summary = summarize(cfg, stats, merged, plan, device)
    text = json.dumps(summary, indent=2)
    paths = feature_paths(cfg)
    if merged is not None:
        atomic_write_text(paths.summary, text + "\n")
    else:
        atomic_write_text(video_parts_dir(cfg) / f"summary-{shard_name(cfg.shard)}.json",
                          text + "\n")
    print(text)
    return summary


# ----------------------------------------------------------------------------- CLI


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: want i/N, e.g. 0/4") from e
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: want 0 <= i < N")
    return i, n


def build_parser() -> argparse.ArgumentParser:
    d = ExtractConfig()
    p = argparse.ArgumentParser(
        prog="avmaster extract",
        description="Extract CLIP (visual, text) and VGGish (audio) features into HDF5 caches. "
                    "Resumable: a rerun skips what is done; kill it at any time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--videos", type=Path, help="folder searched recursively for video files")
    g.add_argument("--annotations", nargs="+", action="extend", default=[], metavar="FILE",
                   help="annotation files: their questions/options are encoded, and only their "
                        "videos are extracted")
    g.add_argument("--annotation-format", default=d.annotation_format,
                   choices=("auto", "music_avqa", "avqa"))
    g.add_argument("--out", type=Path, default=d.out, help="output folder")
    g.add_argument("--extensions", default=",".join(d.extensions),
                   help="comma-separated video file extensions")
    g = p.add_argument_group("encoders and weights")
    g.add_argument("--model", default=d.model, help="open_clip model name (e.g. ViT-L-14, or "
                   "avmaster-tiny for tests)")
    g.add_argument("--pretrained", default=d.pretrained, help="open_clip pretrained tag")
    g.add_argument("--clip-weights", metavar="FILE", help="local checkpoint for --model "
                   "(offline); --pretrained still names the tag whose settings apply")
    g.add_argument("--visual-encoder", default=d.visual_encoder, choices=VISUAL_ENCODERS,
                   help="image encoder: the CLIP --model, or resnet18 (torchvision, 512-d "
                        "avgpool at 224 px, ImageNet weights; paper Table XI); text stays CLIP")
    g.add_argument("--resnet-weights", metavar="FILE",
                   help="local torchvision resnet18 state dict (resnet18-f37072fd.pth; offline)")
    g.add_argument("--audio-encoder", default=d.audio_encoder, choices=AUDIO_ENCODERS,
                   help="audio encoder: vggish, or clap (one CLAP embedding per second of 48 "
                        'kHz audio; paper Table XI; pip install "avmaster[clap]")')
    g.add_argument("--clap-model", default=d.clap_model, metavar="ID_OR_DIR",
                   help="CLAP model: Hugging Face id or a local directory (offline)")
    g.add_argument("--vggish-weights", metavar="FILE", help="local VGGish .pth (offline)")
    g.add_argument("--vggish-pca-weights", metavar="FILE",
                   help="local VGGish PCA params (.pth or .npz; offline)")
    g.add_argument("--vggish-postprocess", default=d.vggish_postprocess,
                   choices=VGGISH_POSTPROCESS)
    g.add_argument("--random-init", action="store_true",
                   help="random encoder weights: for tests and demos only")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of --random-init weights")
    g.add_argument("--normalize", action="store_true", help="L2-normalise the CLIP vectors")
    g.add_argument("--patch-tokens", action="store_true",
                   help="also store projected patch tokens (patch_<slug>.h5; large)")
    g = p.add_argument_group("time axis")
    g.add_argument("--seconds", type=int, default=d.seconds,
                   help="T: rows per video (shorter: last second repeated; longer: trimmed)")
    g.add_argument("--keep-all-seconds", action="store_true",
                   help="store every whole second instead of fitting to T")
    g.add_argument("--frame-position", type=float, default=d.frame_position,
                   help="instant of each second whose frame is encoded (0: start, 0.5: middle)")
    g = p.add_argument_group("speed and scale")
    g.add_argument("--device", default=d.device, choices=DEVICES)
    g.add_argument("--precision", default=d.precision, choices=PRECISIONS)
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="frames per batch")
    g.add_argument("--audio-batch-size", type=int, default=d.audio_batch_size)
    g.add_argument("--text-batch-size", type=int, default=d.text_batch_size)
    g.add_argument("--workers", type=int, default=d.workers, help="decoding processes")
    g.add_argument("--decode-threads", type=int, default=d.decode_threads,
                   help="FFmpeg threads per decoding process (0: auto)")
    g.add_argument("--decode-all-frames", action="store_true",
                   help="decode every frame (default: skip the rest of a group of pictures "
                        "once its last needed frame is out; the frames chosen are the same)")
    g.add_argument("--fast-decode", action="store_true",
                   help="lossy, ~20%% faster decoding: skip H.264 deblocking and frames no "
                        "other frame references (the frame chosen may be 1-2 frames earlier)")
    g.add_argument("--hwaccel", choices=HWACCELS,
                   help="decode video on the GPU (NVDEC) when FFmpeg can; software otherwise")
    g.add_argument("--shard", type=_shard, default=d.shard, metavar="I/N",
                   help="process the I-th of N interleaved slices of the sorted video list")
    g.add_argument("--merge", dest="merge_only", action="store_true",
                   help="only merge the parts of every shard into the final files")
    g.add_argument("--no-merge", dest="auto_merge", action="store_false",
                   help="do not merge at the end of the run")
    g.add_argument("--clean-parts", action="store_true", help="delete parts after the merge")
    g.add_argument("--part-videos", type=int, default=d.part_videos,
                   help="save a part every this many videos")
    g.add_argument("--part-seconds", type=float, default=d.part_seconds,
                   help="... or every this many seconds")
    g.add_argument("--retry-failed", action="store_true",
                   help="retry videos that failed to decode in earlier runs")
    g.add_argument("--strict", action="store_true",
                   help=f"exit with status {INCOMPLETE} when some listed or annotated videos "
                        "have no features after the merge (failed to decode, or no file)")
    g.add_argument("--dtype", default=d.dtype, choices=("float16", "float32"))
    g.add_argument("--no-progress", dest="progress", action="store_false")
    g.add_argument("--log-level", default="INFO")
    return p


def config_from_args(args: argparse.Namespace) -> ExtractConfig:
    names = {f.name for f in fields(ExtractConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["extensions"] = tuple(e for e in str(args.extensions).split(",") if e)
    values["annotations"] = tuple(args.annotations)
    return ExtractConfig(**values)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point of ``avmaster extract`` / ``tools/extract_features.py``."""
    args = build_parser().parse_args(argv)
    from avmaster.data.store import FeatureStoreError
    from avmaster.extract.encoders import WeightsUnavailableError

    if not logging.getLogger().handlers:
        logging.basicConfig(level=args.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
        summary = run(cfg)
    except (WeightsUnavailableError, FeatureStoreError, AnnotationError, FileNotFoundError,
            ValueError, NotImplementedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the videos finished so far are saved; rerun the same command to "
              "resume", file=sys.stderr)
        return INTERRUPTED
    missing = _without_features(summary)
    return INCOMPLETE if args.strict and missing else 0


def _without_features(summary: dict[str, Any]) -> int:
    """Listed or annotated videos without features after the merge; says so on stderr."""
    videos = summary.get("videos") or {}
    n = int(videos.get("failed") or 0) + int(videos.get("missing_file") or 0)
    if n:
        print(f"{n} videos have no features ({videos.get('failed')} failed to decode, "
              f"{videos.get('missing_file')} without a file): see {summary.get('report')}",
              file=sys.stderr)
    return n


if __name__ == "__main__":
    sys.exit(main())
