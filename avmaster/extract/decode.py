"""Decode a video file into one image per second and VGGish log-mel examples, on the CPU.

One pass over the file demuxes video and audio together. Per second ``k`` the decoded frame
nearest to ``k + frame_position`` seconds is kept (default 0: the first frame of each second),
resized by FFmpeg's swscale to the image encoder's input size (so only small uint8 arrays leave
the worker); the rest of each group of pictures after its last needed frame is not decoded
(same frames, less work). The audio is resampled to
16 kHz, averaged over channels, and cut into one 0.96 s log-mel example per second (the example
of second ``k`` covers ``[k, k + 0.975)`` s, as MUSIC-AVQA's features do). Nothing here raises
for bad media: problems are returned as :class:`Problem` records, and a video that cannot be
decoded at all comes back with ``failed=True``.
"""


from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import av
import numpy as np
import torch
from av.codec.hwaccel import HWAccel

from avmaster.extract.audio import (
    EXAMPLE_FRAMES,
    MEL_HOP_SECONDS,
    SAMPLE_RATE,
    AudioCollector,
    add_audio,
    audio_examples,
    log_mel_examples,
)
from avmaster.extract.decoded import (
    EMPTY_FILE,
    LONG_VIDEO,
    NO_FRAMES,
    NO_VIDEO_STREAM,
    SHORT_VIDEO,
    TRUNCATED,
    UNREADABLE,
    VIDEO_DECODE_ERRORS,
    DecodedVideo,
    DecodeSpec,
    Problem,
)
from avmaster.extract.frames import FramePicker, GopSkipper, frame_to_array, resize_geometry
from avmaster.extract.listing import VideoListing, find_videos

log = logging.getLogger(__name__)

DURATION_SLACK = 1e-3  # seconds; a 3.9995 s video counts as 4 whole seconds
TRUNCATION_SLACK = 1.0  # seconds the container may claim beyond the last decoded frame


def _stream_origin(streams: Sequence[av.stream.Stream]) -> float:
    starts = [float(s.start_time * s.time_base) for s in streams
              if s is not None and s.start_time is not None and s.time_base is not None]
    return min(starts) if starts else 0.0


_HWACCEL_BROKEN: set[str] = set()  # device types that failed in this process
# PyAV < 19 raises on container metadata that is not UTF-8 unless told to ignore it; PyAV 19
# dropped the option and keeps such bytes as surrogate escapes, so it is passed only before 19.
_OPEN_OPTIONS = {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}


def _open(path: Path, hwaccel: str | None) -> av.container.InputContainer:
    """Open for decoding, on ``hwaccel`` when it works (falls back to software once it fails)."""
    if hwaccel and hwaccel not in _HWACCEL_BROKEN:
        try:
            return av.open(str(path), **_OPEN_OPTIONS,
                           hwaccel=HWAccel(hwaccel, allow_software_fallback=True))
        except Exception as e:
            try:  # a media error shows again below; else the device is unusable here
                av.open(str(path), **_OPEN_OPTIONS).close()
            except Exception:
                raise e from None
            _HWACCEL_BROKEN.add(hwaccel)
            log.warning("hardware decoding (%s) unavailable in process %d (%s); decoding in "
                        "software", hwaccel, os.getpid(), e)
    return av.open(str(path), **_OPEN_OPTIONS)


def decode_video(path: Path | str, spec: DecodeSpec, video_id: str | None = None
                 ) -> DecodedVideo:
    """Decode ``path`` per :class:`DecodeSpec`; never raises for bad media (see module doc)."""
    path = Path(path)
    vid = video_id if video_id is not None else path.stem
    out = DecodedVideo(vid, str(path))

    def problem(kind: str, detail: str = "", failed: bool = False) -> None:
        out.problems.append(Problem(vid, str(path), kind, detail, failed))

    try:
        size = path.stat().st_size
    except OSError as e:
        problem(UNREADABLE, f"cannot stat the file: {e}", failed=True)
        return out
    if size == 0:
        problem(EMPTY_FILE, "the file is 0 bytes", failed=True)
        return out
    try:
        container = _open(path, spec.hwaccel)
    except Exception as e:  # any FFmpeg error: not a media file we can read
        problem(UNREADABLE, f"cannot open: {type(e).__name__}: {e}", failed=True)
        return out
    try:
        with container:
            _decode_open(container, spec, out, problem)
    except Exception as e:  # a crash in FFmpeg/PyAV outside the per-packet guards
        problem(UNREADABLE, f"decoding stopped: {type(e).__name__}: {e}", failed=True)
    return out


def _decode_open(container: av.container.InputContainer, spec: DecodeSpec, out: DecodedVideo,
                 problem: Callable[..., None]) -> None:
    vstream = container.streams.video[0] if container.streams.video else None
    astream = container.streams.audio[0] if container.streams.audio else None
    if vstream is None:
        problem(NO_VIDEO_STREAM, "the file has no video stream", failed=True)
        return
    if spec.decode_threads != 1:
        vstream.thread_type = "AUTO"
    vstream.codec_context.thread_count = max(0, spec.decode_threads)  # 0: FFmpeg picks
    if spec.fast_decode:
        vstream.codec_context.options = {"skip_loop_filter": "all"}
        vstream.codec_context.skip_frame = "NONREF"
    origin = _stream_origin([vstream, astream])
    picker = FramePicker(spec, origin)
    gops = GopSkipper(vstream, origin, enabled=spec.gop_skip and spec.visual)
    want_audio = spec.audio and astream is not None
    wave_rate = spec.wave_rate or SAMPLE_RATE
    audio = AudioCollector(origin, None if spec.seconds is None else spec.seconds * wave_rate,
                           wave_rate)
    bad = {"video": 0, "audio": 0}
    video_end = 0.0  # end of the last video packet seen (its frame may have been skipped)
    try:
        for packet in container.demux([vstream, astream] if want_audio else [vstream]):
            is_video = packet.stream.index == vstream.index
            if picker.done and (audio.done or not want_audio):
                break
            if (picker.done if is_video else (audio.done or not want_audio)):
                continue
            if is_video:
                if packet.pts is not None and packet.time_base is not None:
                    video_end = max(video_end, float((packet.pts + (packet.duration or 0))
                                                     * packet.time_base) - origin)
                if not gops.admit(packet):
                    continue
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                bad["video" if is_video else "audio"] += 1
                continue
            for frame in frames:
                if is_video:
                    gops.check(picker, frame)
                    picker.add(frame)
                else:
                    add_audio(audio, frame, bad)
            if is_video and frames and not picker.done:
                gops.plan(picker.next_target, picker.last_t)
    except Exception as e:  # a damaged or cut container: keep what was decoded
        problem(TRUNCATED, f"the file is damaged or cut after {picker.last_t:.2f} s: "
                           f"{type(e).__name__}: {e}")
    if want_audio:
        add_audio(audio, None, bad)
    if picker.prev is None:
        problem(NO_FRAMES, "no video frame could be decoded", failed=True)
        return
    rate = vstream.average_rate or vstream.guessed_rate
    end = max(video_end, picker.last_t + (float(1 / rate) if rate else 0.0))
    if vstream.duration is not None and vstream.time_base is not None:
        meta = float(vstream.duration * vstream.time_base)
    else:
        meta = container.duration / av.time_base if container.duration else end
    if picker.done:
        n = len(picker.chosen)
        if meta >= n + 1:
            problem(LONG_VIDEO, f"{meta:.2f} s long; kept the first {n} s")
    else:
        if meta > end + TRUNCATION_SLACK and not any(p.kind == TRUNCATED for p in out.problems):
            problem(TRUNCATED, f"the file says {meta:.2f} s, but its video ends at {end:.2f} s")
        n = max(1, math.floor(end + DURATION_SLACK))
        picker.finish(n)
        if spec.seconds is not None and n < spec.seconds:
            problem(SHORT_VIDEO, f"{n} s of {spec.seconds}; the last second is repeated")
    out.duration, out.n_seconds = end, n
    if bad["video"]:
        problem(VIDEO_DECODE_ERRORS, f"{bad['video']} video packets failed to decode")
    if spec.visual:
        out.frames = torch.from_numpy(np.stack(picker.chosen))
    out.info = {"width": vstream.width, "height": vstream.height, "fps": float(rate or 0),
                "frames_decoded": picker.n_frames, "packets_skipped": gops.skipped,
                "gop_skip_misses": gops.misses, "codec": vstream.codec_context.name,
                "audio_rate": astream.rate if astream is not None else 0,
                "audio_channels": astream.channels if astream is not None else 0}
    if spec.audio:
        examples = torch.from_numpy(audio_examples(audio.wave(), astream, n, bad, spec, problem))
        if spec.wave_rate:
            out.wave = examples
        else:
            out.log_mel = examples


class VideoDecodeDataset(torch.utils.data.Dataset):
    """``dataset[i] -> DecodedVideo`` for a DataLoader whose workers decode in parallel."""

    def __init__(self, items: Sequence[tuple[str, Path]], spec: DecodeSpec):
        self.items, self.spec = list(items), spec

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> DecodedVideo:
        vid, path = self.items[i]
        return decode_video(path, self.spec, vid)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _identity(x: DecodedVideo) -> DecodedVideo:
    return x


def iter_decoded(items: Sequence[tuple[str, Path]], spec: DecodeSpec, workers: int,
                 prefetch: int = 2) -> Iterator[DecodedVideo]:
    """Decode ``items`` (id, path) on ``workers`` processes (0: here), in completion order
    (workers are forked; spawned when decoding on a GPU)."""
    if workers <= 0:
        for vid, path in items:
            yield decode_video(path, spec, vid)
        return
    extra = {}
    if "in_order" in inspect.signature(torch.utils.data.DataLoader).parameters:
        extra["in_order"] = False  # a slow video does not hold up the finished ones
    loader = torch.utils.data.DataLoader(
        VideoDecodeDataset(items, spec), batch_size=None, shuffle=False, num_workers=workers,
        collate_fn=_identity, worker_init_fn=_worker_init, prefetch_factor=prefetch,
        persistent_workers=False,
        # a GPU decoder cannot start in a process forked from one that uses CUDA
        multiprocessing_context="spawn" if spec.hwaccel else None, **extra,
    )
    yield from loader


# Names that were defined here before the split into decoded / frames / audio / listing.
__all__ = [
    "EXAMPLE_FRAMES",
    "MEL_HOP_SECONDS",
    "SAMPLE_RATE",
    "DecodeSpec",
    "DecodedVideo",
    "Problem",
    "VideoListing",
    "decode_video",
    "find_videos",
    "frame_to_array",
    "iter_decoded",
    "log_mel_examples",
    "resize_geometry",
]
