"""Answer questions about raw video files with a trained checkpoint.

The checkpoint records the extraction settings of the features it was trained on (see
:class:`~avmaster.training.FeatureSettingsCallback`), so a :class:`Predictor` extracts a new
video exactly like the training videos: same CLIP model and tag (or the same seeded random
weights), same VGGish post-processing, frame position and number of seconds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from avmaster.checkpoints import read_checkpoint, resolve_checkpoint
from avmaster.config import ConfigError
from avmaster.data.annotations import strip_question
from avmaster.data.batch import Batch
from avmaster.data.segments import segment_seconds
from avmaster.extract.decoded import Problem
from avmaster.lightning_module import TOP_K, AVMasterModule
from avmaster.models.avmaster import AVMasterOutput
from avmaster.models.combine import top_answers
from avmaster.training import CKPT_KEY


def extract_config_for(settings: Mapping[str, Any], **overrides: Any):
    """An :class:`~avmaster.extract.ExtractConfig` reproducing ``settings`` (from a checkpoint)."""
    from avmaster.extract import ExtractConfig

    visual, audio = settings.get("visual", {}), settings.get("audio", {})
    if not visual or not audio:
        raise ValueError("the checkpoint does not record how its features were extracted; "
                         "it was trained on features written by another tool")
    random_init = visual.get("pretrained") == "random"
    resnet = visual.get("encoder") == "resnet18"  # Table XI: the text is still CLIP's
    clip = settings.get("text", {}) if resnet else visual
    cfg: dict[str, Any] = {
        "model": visual["text_model"] if resnet else visual["model"],
        "visual_encoder": "resnet18" if resnet else "clip",
        "random_init": random_init,
        "seed": int(visual.get("seed", 0)),
        "normalize": bool(visual.get("normalize", False)),
        "frame_position": float(visual.get("frame_position", 0.0)),
        "fast_decode": bool(visual.get("fast_decode", False)),
        "vggish_postprocess": audio.get("postprocess", "none"),
        "audio_encoder": "clap" if audio.get("encoder") == "clap" else "vggish",
        "seconds": int(settings.get("seconds") or visual.get("seconds") or 60),
        "progress": False,
        "workers": 1,
    }
    if audio.get("encoder") == "clap":
        cfg["clap_model"] = audio["model"]
    if not random_init and clip.get("pretrained"):
        cfg["pretrained"] = clip["pretrained"]
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return ExtractConfig(**cfg)


@dataclass
class Prediction:
    """An answer with its top-k, the per-path distributions and where the time went."""

    answer: str
    top: list[tuple[str, float]]
    timings: dict[str, float]
    output: AVMasterOutput = field(repr=False)
    names: list[str] = field(default_factory=list)  # every answer (or option), index order
    paths: dict[str, list[float]] = field(default_factory=dict)  # per-path softmax
    # what extraction met with the video (truncated, short, no or silent audio, ...): the
    # answer then rests on padded or empty features
    problems: list[Problem] = field(default_factory=list)
    batch: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # model input


class Predictor:
    """``Predictor(ckpt)(video, question)`` -> :class:`Prediction`."""

    def __init__(self, ckpt: Path | str, device: str = "cpu", **extract_overrides: Any):
        from avmaster.extract.encoders import resolve_device

        t0 = time.perf_counter()
        self.device = resolve_device(device)  # one line where CUDA is asked for but absent
        self.ckpt = ckpt = resolve_checkpoint(ckpt)
        raw = read_checkpoint(ckpt)
        self.module = AVMasterModule.from_checkpoint(raw, map_location=self.device).eval()
        self.answers = self.module.hparams.get("answers")
        settings = raw.get(CKPT_KEY, {})
        self.seconds = int(settings.get("seconds") or 0)
        self.segments = settings.get("segments")  # Fig. 4 runs see S of the T seconds
        self.extractor_config = extract_config_for(settings, device=device, **extract_overrides)
        from avmaster.extract import FeatureExtractor

        self.extractor = FeatureExtractor(self.extractor_config)
        self.load_s = time.perf_counter() - t0

    @torch.no_grad()
    def __call__(self, video: Path | str, question: str,
                 options: Sequence[str] | None = None) -> Prediction:
        timings = {}
        t0 = time.perf_counter()
        if not Path(video).is_file():
            raise FileNotFoundError(f"{video}: video not found")
        multiple_choice = bool(self.module.hparams.get("multiple_choice"))
        if multiple_choice and not options:
            raise ConfigError(f"{self.ckpt}: a multiple-choice checkpoint (AVQA): give the answer "
                              "options (--options A B C D)")
        if options and not multiple_choice:
            raise ConfigError(f"{self.ckpt}: this checkpoint answers from its vocabulary of "
                              f"{len(self.answers or ())} answers; --options is for "
                              "multiple-choice checkpoints (AVQA): leave it out")
        visual, audio, problems = self.extractor.encode_video_file(video)
        keep = segment_seconds(len(visual), self.segments)
        if keep is not None:
            visual, audio = visual[keep], audio[keep]
        timings["extract video"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        texts = [strip_question(question), *(options or ())]
        sentence, tokens = self.extractor.encode_texts(texts)
        timings["encode text"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        q = torch.from_numpy(tokens[0])[None]
        batch: Batch = {
            "visual": torch.from_numpy(visual)[None],
            "audio": torch.from_numpy(audio)[None],
            "question": torch.from_numpy(sentence[:1]),
            "question_tokens": q,
            "question_mask": torch.ones(q.shape[:2], dtype=torch.bool),
        }
        if options:
            batch["options"] = torch.from_numpy(sentence[1:])[None]
        batch = {k: v.to(self.device) for k, v in batch.items()}
        out = self.module.model(batch)
        probs = out.probs()[0].float().cpu()
        timings["model"] = time.perf_counter() - t0
        names = list(options) if options else self.answers
        values, indices = top_answers(probs, min(TOP_K, probs.numel()))
        ranked = [(names[i], float(p)) for i, p in zip(indices.tolist(), values.tolist(),
                                                        strict=True)]
        paths = {name: torch.softmax(logits[0].float(), -1).cpu().tolist()
                 for name, logits in (("multimodal", out.logits), ("audio", out.audio_logits),
                                      ("visual", out.visual_logits)) if logits is not None}
        return Prediction(ranked[0][0], ranked, timings, out, list(names), paths, problems,
                          batch)
