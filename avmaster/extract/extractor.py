"""The library API: features of single videos and texts, built from an :class:`ExtractConfig`.

>>> ex = FeatureExtractor(ExtractConfig(model="avmaster-tiny", random_init=True, seconds=10))
>>> visual, audio, problems = ex.encode_video_file("clip.mp4")   # [10, 64], [10, 128]
>>> sentence, tokens = ex.encode_texts(["what is playing"])       # [1, 64], [[L, 64]]
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avmaster.data.store import pad_or_trim
from avmaster.extract.audio import SAMPLE_RATE, log_mel_examples
from avmaster.extract.config import CLAP_RATE, ExtractConfig
from avmaster.extract.decode import decode_video
from avmaster.extract.decoded import DecodedVideo, DecodeSpec, Problem
from avmaster.extract.encoders import (
    ClapEncoder,
    ClipEncoder,
    ResNetEncoder,
    VGGishEncoder,
    resolve_device,
    resolve_precision,
)
from avmaster.extract.parts import VideoResult

log = logging.getLogger(__name__)


class UndecodableVideoError(RuntimeError):
    """A video file yielded no features at all (empty, corrupt, no video stream)."""

    def __init__(self, path: Path | str, problems: Sequence[Problem]):
        self.problems = list(problems)
        details = "; ".join(f"{p.kind}: {p.detail}" for p in self.problems)
        super().__init__(f"{path}: cannot be decoded ({details})")


class FeatureExtractor:
    """CLIP (or ResNet-18) + VGGish features of videos and CLIP features of texts, as the HDF5
    caches hold them.

    Encoders are built on first use (a text-only caller never loads VGGish).
    """

    def __init__(self, config: ExtractConfig | None = None, **overrides: Any):
        cfg = config or ExtractConfig()
        self.config = dataclasses.replace(cfg, **overrides) if overrides else cfg
        self.device = resolve_device(self.config.device)
        self.precision = resolve_precision(self.config.precision, self.device)
        self._clip: ClipEncoder | None = None
        self._resnet: ResNetEncoder | None = None
        self._vggish: VGGishEncoder | None = None
        self._clap: ClapEncoder | None = None

    @property
    def clip(self) -> ClipEncoder:
        if self._clip is None:
            c = self.config
            self._clip = ClipEncoder(c.model, c.pretrained, weights_file=c.clip_weights,
                                     random_init=c.random_init, seed=c.seed, device=self.device,
                                     precision=self.precision, normalize=c.normalize,
                                     patch_tokens=c.patch_tokens)
            log.info("CLIP %s/%s on %s (%s), input %s", c.model, self._clip.pretrained,
                     self.device, self.precision, self._clip.image_size)
        return self._clip

    @property
    def visual(self) -> ClipEncoder | ResNetEncoder:
        """The image encoder: the CLIP model, or ResNet-18 with ``visual_encoder=resnet18``."""
        c = self.config
        if c.visual_encoder == "clip":
            return self.clip
        if self._resnet is None:
            self._resnet = ResNetEncoder(weights_file=c.resnet_weights,
                                         random_init=c.random_init, seed=c.seed,
                                         device=self.device, precision=self.precision)
            log.info("ResNet-18/%s on %s (%s)", self._resnet.pretrained, self.device,
                     self.precision)
        return self._resnet

    @property
    def vggish(self) -> VGGishEncoder:
        if self._vggish is None:
            c = self.config
            self._vggish = VGGishEncoder(weights_file=c.vggish_weights,
                                         pca_file=c.vggish_pca_weights,
                                         postprocess=c.vggish_postprocess,
                                         random_init=c.random_init, seed=c.seed,
                                         device=self.device)
        return self._vggish

    @property
    def audio(self) -> VGGishEncoder | ClapEncoder:
        """The audio encoder: VGGish, or CLAP with ``audio_encoder=clap``."""
        c = self.config
        if c.audio_encoder == "vggish":
            return self.vggish
        if self._clap is None:
            self._clap = ClapEncoder(c.clap_model, random_init=c.random_init, seed=c.seed,
                                     device=self.device)
            log.info("CLAP %s/%s on %s", c.clap_model, self._clap.pretrained, self.device)
        return self._clap

    @property
    def decode_spec(self) -> DecodeSpec:
        """How worker processes decode for this extractor (the CLIP input size and resize)."""
        c, visual = self.config, self.visual
        pre = visual.preprocess
        return DecodeSpec(image_size=visual.image_size,
                          resize_mode=pre.get("resize_mode") or DecodeSpec.resize_mode,
                          interpolation=pre.get("interpolation") or DecodeSpec.interpolation,
                          fill_color=int(pre.get("fill_color") or 0),
                          seconds=c.stored_seconds, frame_position=c.frame_position,
                          silence_peak=c.silence_peak, decode_threads=c.decode_threads,
                          wave_rate=CLAP_RATE if c.audio_encoder == "clap" else None,
                          gop_skip=not c.decode_all_frames, fast_decode=c.fast_decode,
                          hwaccel=c.hwaccel)

    def _chunks(self, x: torch.Tensor, size: int) -> list[torch.Tensor]:
        return [x[s : s + size] for s in range(0, x.shape[0], size)] if x.shape[0] else []

    def encode_decoded(self, videos: Sequence[DecodedVideo]) -> list[VideoResult]:
        """Encode decoded videos together (frames batched across videos); failed ones come back
        with no arrays. Rows are fitted to ``seconds`` (last second repeated / first kept)
        unless ``keep_all_seconds``."""
        ok = [v for v in videos if not v.failed]
        results = {v.video_id: VideoResult(v.video_id, problems=list(v.problems)) for v in videos}
        if ok:
            counts = [v.n_seconds for v in ok]
            frames = torch.cat([v.frames for v in ok])  # type: ignore[misc]
            clap = self.config.audio_encoder == "clap"
            mel = torch.cat([v.wave if clap else v.log_mel for v in ok])  # type: ignore[misc]
            vis, patch = [], []
            for chunk in self._chunks(frames, self.config.batch_size):
                v, p = self.visual.encode_images(chunk)
                vis.append(v)
                if p is not None:
                    patch.append(p.flatten(1))
            aud = [self.audio.encode(c) for c in self._chunks(mel, self.config.audio_batch_size)]
            vis_s = torch.cat(vis).numpy()
            aud_s = torch.cat(aud).numpy()
            patch_s = torch.cat(patch).numpy() if patch else None
            start = 0
            for v, n in zip(ok, counts, strict=True):
                r = results[v.video_id]
                r.visual = self._fit(vis_s[start : start + n])
                r.audio = self._fit(aud_s[start : start + n])
                if patch_s is not None:
                    r.patch = self._fit(patch_s[start : start + n])
                start += n
        return [results[v.video_id] for v in videos]

    def empty_vectors(self) -> dict[str, np.ndarray]:
        """The encoders' features of an empty second, float32 ``[D]`` per modality: ``audio``
        of one second of digital silence, ``visual`` of a black frame; rounded to the stored
        dtype, so they equal (up to rounding) the rows a silent / black second gets in the files."""
        clap = self.config.audio_encoder == "clap"
        silent = (torch.zeros(1, CLAP_RATE) if clap
                  else torch.from_numpy(log_mel_examples(np.zeros(SAMPLE_RATE, np.float32), 1)))
        black = torch.zeros((1, *self.visual.image_size, 3), dtype=torch.uint8)
        out = {"audio": self.audio.encode(silent)[0],
               "visual": self.visual.encode_images(black)[0][0]}
        dtype = self.config.dtype
        return {k: v.numpy().astype(dtype).astype(np.float32) for k, v in out.items()}

    def _fit(self, x: np.ndarray) -> np.ndarray:
        seconds = self.config.stored_seconds
        return x if seconds is None else pad_or_trim(x, seconds)

    def encode_video_file(self, path: Path | str, video_id: str | None = None
                          ) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
        """(visual float32 [T, D], audio float32 [T, 128], problems) of one video file.

        Raises :class:`UndecodableVideoError` when the file yields no frames at all.
        """
        decoded = decode_video(path, self.decode_spec, video_id)
        if decoded.failed:
            raise UndecodableVideoError(path, decoded.problems)
        r = self.encode_decoded([decoded])[0]
        assert r.visual is not None and r.audio is not None
        return r.visual.astype(np.float32), r.audio.astype(np.float32), r.problems

    def encode_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """(sentence float32 [N, D], token states: N float32 arrays [L_i, D]); identical texts
        are computed once."""
        unique = list(dict.fromkeys(texts))
        sentence, tokens = self.clip.encode_texts(unique, self.config.text_batch_size)
        row = {t: i for i, t in enumerate(unique)}
        idx = [row[t] for t in texts]
        return sentence[idx] if len(idx) else sentence, [tokens[i] for i in idx]
