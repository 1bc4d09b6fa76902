"""Audio of a decoded video as VGGish input: resampled to 16 kHz, averaged over channels, cut
into one 0.96 s log-mel example per second (the example of second ``k`` covers
``[k, k + 0.975)`` s, as MUSIC-AVQA's features do)."""

from __future__ import annotations

from collections.abc import Callable

import av
import numpy as np
from torchvggish import mel_features, vggish_params

from avmaster.extract.decoded import (
    AUDIO_DECODE_ERRORS,
    AUDIO_SHORT,
    NO_AUDIO_STREAM,
    SILENT_AUDIO,
    DecodeSpec,
)

SAMPLE_RATE = vggish_params.SAMPLE_RATE  # 16 kHz: what VGGish was trained on
MEL_HOP_SECONDS = vggish_params.STFT_HOP_LENGTH_SECONDS
EXAMPLE_FRAMES = vggish_params.NUM_FRAMES  # 96 log-mel frames = 0.96 s
AUDIO_SHORT_SLACK = 1.0  # seconds of missing audio tolerated before it is reported


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


class AudioCollector:
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


def add_audio(audio: AudioCollector, frame: av.AudioFrame | None, bad: dict[str, int]) -> None:
    try:
        audio.add(frame)
    except (av.error.FFmpegError, ValueError):  # e.g. a layout change mid-stream
        bad["audio"] += 1


def audio_examples(wave: np.ndarray, astream: av.stream.Stream | None, n: int,
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
