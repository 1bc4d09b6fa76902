"""Which decoded frame stands for each second, skipping the groups of pictures no second
needs, and how a frame becomes the image encoder's input (resized by FFmpeg's swscale, so only
small uint8 arrays leave a decoding worker)."""

from __future__ import annotations

import bisect
import math
import os

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from avmaster.extract.decoded import DecodeSpec

TIME_EPS = 1e-6  # seconds; float slack when comparing timestamps
KEY_SLACK = 1e-3  # seconds; slack when matching a keyframe packet to an index entry
_EMPTY = np.zeros((0,), np.uint8)  # the frame kept when images are not wanted
SWS_THREADS = 1  # one scaling thread: workers are parallel processes already
SWS_INTERPOLATION = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "nearest": "POINT",
                     "lanczos": "LANCZOS", "area": "AREA"}


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


class GopSkipper:
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

    def check(self, picker: FramePicker, frame: av.VideoFrame) -> None:
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


class FramePicker:
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
