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

import bisect
import inspect
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from av.codec.hwaccel import HWAccel
from av.video.reformatter import VideoReformatter
from torchvggish import mel_features, vggish_params

log = logging.getLogger(__name__)

# Problem kinds: the first four leave the video without features ("failed").
EMPTY_FILE = "empty_file"
UNREADABLE = "unreadable"
NO_VIDEO_STREAM = "no_video_stream"
NO_FRAMES = "no_frames"
FAILED_KINDS = frozenset({EMPTY_FILE, UNREADABLE, NO_VIDEO_STREAM, NO_FRAMES})
TRUNCATED = "truncated"
VIDEO_DECODE_ERRORS = "video_decode_errors"
AUDIO_DECODE_ERRORS = "audio_decode_errors"
NO_AUDIO_STREAM = "no_audio_stream"
SILENT_AUDIO = "silent_audio"
AUDIO_SHORT = "audio_short"
SHORT_VIDEO = "short_video"
LONG_VIDEO = "long_video"
MISSING_FILE = "missing_file"
DUPLICATE_ID = "duplicate_id"

SAMPLE_RATE = vggish_params.SAMPLE_RATE  # 16 kHz: what VGGish was trained on
MEL_HOP_SECONDS = vggish_params.STFT_HOP_LENGTH_SECONDS
EXAMPLE_FRAMES = vggish_params.NUM_FRAMES  # 96 log-mel frames = 0.96 s
MEL_BANDS = vggish_params.NUM_BANDS
TIME_EPS = 1e-6  # seconds; float slack when comparing timestamps
KEY_SLACK = 1e-3  # seconds; slack when matching a keyframe packet to an index entry
DURATION_SLACK = 1e-3  # seconds; a 3.9995 s video counts as 4 whole seconds
AUDIO_SHORT_SLACK = 1.0  # seconds of missing audio tolerated before it is reported
TRUNCATION_SLACK = 1.0  # seconds the container may claim beyond the last decoded frame
SWS_THREADS = 1  # one scaling thread: workers are parallel processes already
SWS_INTERPOLATION = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "nearest": "POINT",
                     "lanczos": "LANCZOS", "area": "AREA"}


@dataclass(frozen=True)
class Problem:
    """One problem met with one video: its id, file, kind, a human detail, and whether the
    video was left without features."""

    video_id: str
    file: str
    kind: str
    detail: str = ""
    failed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DecodeSpec:
    """What to decode: picklable, shipped to every worker process."""

    image_size: tuple[int, int] = (336, 336)  # (height, width) the image encoder wants
    resize_mode: str = "shortest"  # open_clip's: shortest (resize + centre crop) | squash | longest
    interpolation: str = "bicubic"
    fill_color: int = 0
    seconds: int | None = 60  # decode at most this many seconds; None = the whole file
    frame_position: float = 0.0  # which instant of each second: 0 = its start, 0.5 = its middle
    visual: bool = True
    audio: bool = True
    silence_peak: float = 1e-4  # |sample| below this everywhere = silent audio (about -80 dBFS)
    decode_threads: int = 1
    gop_skip: bool = True  # skip the tail of each group of pictures after its last needed frame
    fast_decode: bool = False  # lossy: skip deblocking and frames no other frame references
    hwaccel: str | None = None  # e.g. "cuda": decode on the GPU (NVDEC), software if unavailable


@dataclass
class DecodedVideo:
    """A decoded video: ``frames`` uint8 [n, H, W, 3], ``log_mel`` float32 [n, 96, 64]
    (``n`` = whole seconds decoded, before any padding), and the problems met."""

    video_id: str
    path: str
    frames: torch.Tensor | None = None
    log_mel: torch.Tensor | None = None
    n_seconds: int = 0
    duration: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(p.failed for p in self.problems)


# ----------------------------------------------------------------------------- frames


def resize_geometry(src_w: int, src_h: int, spec: DecodeSpec) -> tuple[int, int, int, int]:
    """(resized width, resized height, crop/pad left, crop/pad top) mirroring open_clip's
    preprocessing (torchvision ``Resize(int)`` + ``CenterCrop``, or squash, or longest + pad)."""
    out_h, out_w = spec.image_size
    if spec.resize_mode == "squash":
        return out_w, out_h, 0, 0
    if spec.resize_mode == "longest":
        scale = min(out_h / src_h, out_w / src_w)
        rw, rh = max(1, round(src_w * scale)), max(1, round(src_h * scale))
        return rw, rh, (out_w - rw) // 2, (out_h - rh) // 2
    if out_h == out_w:  # torchvision Resize(int): short side = size, long side truncated
        short, long_ = (src_w, src_h) if src_w <= src_h else (src_h, src_w)
        new_long = int(out_h * long_ / short)
        rw, rh = (out_w, new_long) if src_w <= src_h else (new_long, out_h)
    else:
        scale = max(out_h / src_h, out_w / src_w)
        rw, rh = max(out_w, round(src_w * scale)), max(out_h, round(src_h * scale))
    return rw, rh, round((rw - out_w) / 2.0), round((rh - out_h) / 2.0)


_REFORMATTER: tuple[int, VideoReformatter] | None = None


def _reformatter() -> VideoReformatter:
    """One swscale context per process (a forked copy would be unusable), reused across
    frames of equal geometry."""
    global _REFORMATTER
    if _REFORMATTER is None or _REFORMATTER[0] != os.getpid():
        _REFORMATTER = (os.getpid(), VideoReformatter())
    return _REFORMATTER[1]


def frame_to_array(frame: av.VideoFrame, spec: DecodeSpec) -> np.ndarray:
    """An RGB uint8 [H, W, 3] image of the encoder's input size, resized by swscale."""
    out_h, out_w = spec.image_size
    rw, rh, left, top = resize_geometry(frame.width, frame.height, spec)
    img = _reformatter().reformat(frame, width=rw, height=rh, format="rgb24",
                                  interpolation=SWS_INTERPOLATION.get(spec.interpolation,
                                                                      "BICUBIC"),
                                  threads=SWS_THREADS)
    arr = img.to_ndarray()
    if spec.resize_mode == "longest":
        canvas = np.full((out_h, out_w, 3), spec.fill_color, np.uint8)
        canvas[top : top + rh, left : left + rw] = arr
        return canvas
    return np.ascontiguousarray(arr[top : top + out_h, left : left + out_w])


# ----------------------------------------------------------------------------- audio


def log_mel_examples(wave: np.ndarray, n_seconds: int) -> np.ndarray:
    """VGGish input examples [n_seconds, 96, 64] from a 16 kHz mono waveform.

    The waveform is zero-padded or cut to ``n_seconds`` seconds; the log-mel spectrogram
    (25 ms windows, 10 ms hop) is computed once and example ``k`` is its frames
    ``100k .. 100k+95``: exactly what VGGish's reference code gives for second ``k`` alone.
    """
    need = n_seconds * SAMPLE_RATE
    wave = np.asarray(wave, np.float64)[:need]
    if wave.shape[0] < need:
        wave = np.pad(wave, (0, need - wave.shape[0]))
    mel = mel_features.log_mel_spectrogram(
        wave,
        audio_sample_rate=SAMPLE_RATE,
        log_offset=vggish_params.LOG_OFFSET,
        window_length_secs=vggish_params.STFT_WINDOW_LENGTH_SECONDS,
        hop_length_secs=MEL_HOP_SECONDS,
        num_mel_bins=vggish_params.NUM_MEL_BINS,
        lower_edge_hertz=vggish_params.MEL_MIN_HZ,
        upper_edge_hertz=vggish_params.MEL_MAX_HZ,
    )
    per_second = round(1.0 / MEL_HOP_SECONDS)
    starts = np.arange(n_seconds) * per_second
    idx = starts[:, None] + np.arange(EXAMPLE_FRAMES)[None, :]
    return mel[idx].astype(np.float32)


class _AudioCollector:
    """Resamples decoded audio frames to 16 kHz, averages channels, and stops when enough."""

    def __init__(self, origin: float, max_samples: int | None):
        self.origin, self.max_samples = origin, max_samples
        self.resampler: av.AudioResampler | None = None
        self.chunks: list[np.ndarray] = []
        self.count = 0
        self.start: float | None = None
        self._skip = 0  # samples before the origin still to drop

    @property
    def done(self) -> bool:
        return self.max_samples is not None and self.count >= self.max_samples

    def add(self, frame: av.AudioFrame | None) -> None:
        if frame is not None and self.start is None:
            self.start = (frame.time or 0.0) - self.origin
            lead = round(self.start * SAMPLE_RATE)
            if lead > 0:  # audio starts after the video: silence before it
                self._push(np.zeros(lead, np.float32))
            elif lead < 0:
                self._skip = -lead
        if self.resampler is None:
            if frame is None:
                return
            self.resampler = av.AudioResampler(format="fltp", layout=frame.layout.name,
                                               rate=SAMPLE_RATE)
        for out in self.resampler.resample(frame):
            self._push(out.to_ndarray().mean(axis=0, dtype=np.float32))

    def _push(self, samples: np.ndarray) -> None:
        if self._skip:
            cut = min(self._skip, samples.shape[0])
            samples, self._skip = samples[cut:], self._skip - cut
        if samples.size:
            self.chunks.append(samples)
            self.count += samples.shape[0]

    def wave(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)


# ----------------------------------------------------------------------------- video


def _stream_origin(streams: Sequence[av.stream.Stream]) -> float:
    starts = [float(s.start_time * s.time_base) for s in streams
              if s is not None and s.start_time is not None and s.time_base is not None]
    return min(starts) if starts else 0.0


_HWACCEL_BROKEN: set[str] = set()  # device types that failed in this process


def _open(path: Path, hwaccel: str | None) -> av.container.InputContainer:
    """Open for decoding, on ``hwaccel`` when it works (falls back to software once it fails)."""
    if hwaccel and hwaccel not in _HWACCEL_BROKEN:
        try:
            return av.open(str(path), metadata_errors="ignore",
                           hwaccel=HWAccel(hwaccel, allow_software_fallback=True))
        except Exception as e:
            try:  # a media error shows again below; else the device is unusable here
                av.open(str(path), metadata_errors="ignore").close()
            except Exception:
                raise e from None
            _HWACCEL_BROKEN.add(hwaccel)
            log.warning("hardware decoding (%s) unavailable in process %d (%s); decoding in "
                        "software", hwaccel, os.getpid(), e)
    return av.open(str(path), metadata_errors="ignore")


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
    picker = _FramePicker(spec, origin)
    gops = _GopSkipper(vstream, origin, enabled=spec.gop_skip and spec.visual)
    want_audio = spec.audio and astream is not None
    audio = _AudioCollector(origin, None if spec.seconds is None else spec.seconds * SAMPLE_RATE)
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
                    _add_audio(audio, frame, bad)
            if is_video and frames and not picker.done:
                gops.plan(picker.next_target, picker.last_t)
    except Exception as e:  # a damaged or cut container: keep what was decoded
        problem(TRUNCATED, f"the file is damaged or cut after {picker.last_t:.2f} s: "
                           f"{type(e).__name__}: {e}")
    if want_audio:
        _add_audio(audio, None, bad)
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
        examples = _audio_examples(audio.wave(), astream, n, bad, spec, problem)
        out.log_mel = torch.from_numpy(examples)


class _GopSkipper:
    """Skips the rest of a group of pictures once its last needed frame is out.

    With one frame a second, decoding can stop after the frame for the last target inside a
    GOP and resume at the keyframe before the next target; the frames chosen are those of a
    full decode. Keyframe times come from the container's index (decode timestamps) plus the
    reordering delay seen on keyframe packets. Without an index every packet is decoded. If a
    keyframe turns out to be shown after the target it was chosen for (a reordering delay that
    changed mid-file), skipping stops for the rest of the file and the miss is counted.
    """

    def __init__(self, vstream: av.video.stream.VideoStream, origin: float, enabled: bool):
        self.stream, self.origin = vstream, origin
        self.tb = vstream.time_base
        keys: list[float] = []
        if enabled and self.tb is not None:
            keys = sorted(float(e.timestamp * self.tb) - origin for e in vstream.index_entries
                          if e.is_keyframe and e.timestamp is not None)
        self.keys = keys if len(keys) > 1 else []
        self.offset = 0.0  # pts - dts of keyframes: the decoder's reordering delay
        self.sent_key = -math.inf  # decode time of the last keyframe sent to the decoder
        self.resume_at: float | None = None  # decode time of the keyframe to resume at
        self.target: float | None = None  # the target that made us skip
        self.skipped = self.misses = 0

    def _time(self, ts: int | None) -> float | None:
        return None if ts is None else float(ts * self.tb) - self.origin

    def admit(self, packet: av.Packet) -> bool:
        """Whether to decode this video packet (False while skipping a GOP's tail)."""
        dts = self._time(packet.dts)
        pts = self._time(packet.pts)
        if packet.is_keyframe and pts is not None and dts is not None:
            self.offset = max(self.offset, pts - dts)
        if self.resume_at is not None:
            if packet.is_keyframe and dts is not None and dts >= self.resume_at - KEY_SLACK:
                self.resume_at = None
                self.stream.codec_context.flush_buffers()
            else:
                self.skipped += 1
                return False
        if packet.is_keyframe and dts is not None:
            self.sent_key = max(self.sent_key, dts)
        return True

    def check(self, picker: _FramePicker, frame: av.VideoFrame) -> None:
        """The first frame after a skip must not be later than the target that caused it."""
        if self.target is None:
            return
        t = frame.time - self.origin if frame.time is not None else None
        if t is not None and t > self.target + TIME_EPS:
            self.misses += 1
            self.keys = []
        self.target = None

    def plan(self, next_target: float, last_t: float) -> None:
        """After a frame at ``last_t``: skip ahead if the next target lies in a later GOP."""
        if not self.keys:
            return
        i = bisect.bisect_right(self.keys, next_target - self.offset + TIME_EPS) - 1
        if i < 0:
            return
        key_dts = self.keys[i]
        if key_dts + self.offset > last_t + TIME_EPS and key_dts > self.sent_key + KEY_SLACK:
            self.resume_at, self.target = key_dts, next_target


class _FramePicker:
    """Keeps, for second ``k``, the decoded frame nearest to ``k + position`` (ties: the
    earlier one); seconds past the last frame get the last frame."""

    def __init__(self, spec: DecodeSpec, origin: float):
        self.spec, self.origin = spec, origin
        self.prev: av.VideoFrame | None = None
        self.last_t = 0.0
        self.chosen: list[np.ndarray] = []
        self.n_frames = 0
        self._converted: tuple[av.VideoFrame, np.ndarray] | None = None

    @property
    def done(self) -> bool:
        return self.spec.seconds is not None and len(self.chosen) >= self.spec.seconds

    @property
    def next_target(self) -> float:
        return len(self.chosen) + self.spec.frame_position

    def _take(self, frame: av.VideoFrame) -> None:
        if self._converted is None or self._converted[0] is not frame:
            arr = frame_to_array(frame, self.spec) if self.spec.visual else _EMPTY
            self._converted = (frame, arr)
        self.chosen.append(self._converted[1])

    def add(self, frame: av.VideoFrame) -> None:
        t = frame.time - self.origin if frame.time is not None else self.last_t
        self.n_frames += 1
        while not self.done and t > self.next_target + TIME_EPS:
            target = self.next_target  # between prev and this frame: keep the nearer one
            nearer_is_new = self.prev is None or t - target < target - self.last_t
            self._take(frame if nearer_is_new else self.prev)  # type: ignore[arg-type]
        self.prev, self.last_t = frame, t

    def finish(self, n: int) -> None:
        """At the end of the file: seconds after the last frame change show the last frame."""
        while len(self.chosen) < n and self.prev is not None:
            self._take(self.prev)
        del self.chosen[n:]


_EMPTY = np.zeros((0,), np.uint8)


def _add_audio(audio: _AudioCollector, frame: av.AudioFrame | None, bad: dict[str, int]) -> None:
    try:
        audio.add(frame)
    except (av.error.FFmpegError, ValueError):  # e.g. a layout change mid-stream
        bad["audio"] += 1


def _audio_examples(wave: np.ndarray, astream: av.stream.Stream | None, n: int,
                    bad: dict[str, int], spec: DecodeSpec, problem: Callable[..., None]
                    ) -> np.ndarray:
    if astream is None:
        problem(NO_AUDIO_STREAM, "no audio stream; encoded as digital silence")
    else:
        if bad["audio"]:
            problem(AUDIO_DECODE_ERRORS, f"{bad['audio']} audio packets failed to decode")
        have = wave.shape[0] / SAMPLE_RATE
        if have == 0:
            problem(AUDIO_DECODE_ERRORS, "no audio could be decoded; encoded as digital silence")
        elif have + AUDIO_SHORT_SLACK <= n:
            problem(AUDIO_SHORT, f"audio lasts {have:.2f} s of {n} s; the rest is silence")
        elif float(np.max(np.abs(wave[: n * SAMPLE_RATE]))) < spec.silence_peak:
            problem(SILENT_AUDIO, "the audio track is silent")
    return log_mel_examples(wave, n)


# ----------------------------------------------------------------------------- listing


@dataclass
class VideoListing:
    """Video files found under a folder: ``files[video_id] = path`` (sorted by id)."""

    files: dict[str, Path]
    problems: list[Problem] = field(default_factory=list)


def find_videos(root: Path | str, extensions: Sequence[str]) -> VideoListing:
    """Every file under ``root`` (recursively, following links) whose extension is listed.

    Video id = file name stem. Two files with the same stem: the first in path order is used,
    the others are reported as ``duplicate_id``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: video folder not found (--videos)")
    exts = {e.lower().lstrip(".") for e in extensions}
    paths = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        paths.extend(Path(dirpath) / f for f in filenames
                     if not f.startswith(".") and f.rsplit(".", 1)[-1].lower() in exts)
    files: dict[str, Path] = {}
    problems = []
    for p in sorted(paths):
        if p.stem in files:
            problems.append(Problem(p.stem, str(p), DUPLICATE_ID,
                                    f"same id as {files[p.stem]}; this file was not used"))
            continue
        files[p.stem] = p
    return VideoListing(dict(sorted(files.items())), problems)


# ----------------------------------------------------------------------------- loading


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
