"""Extraction settings (every default in one place) and the file names they lead to."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avmaster.paths import config_dirs

DEFAULT_MODEL = "ViT-L-14-336"  # AV-Master's peers' CLIP; the paper's ViT-L-14 is selectable
DEFAULT_PRETRAINED = "openai"
TINY_MODEL = "avmaster-tiny"  # shipped config (model_configs/): random weights, for tests/demos
RANDOM_TAG = "random"
VISUAL_ENCODERS = ("clip", "resnet18")  # resnet18: Table XI's ResNet-18 row (torchvision)
RESNET_NAME = "resnet18"
RESNET_TAG = "imagenet1k-v1"  # torchvision's ResNet18_Weights.IMAGENET1K_V1
RESNET_SIZE = 224  # the MUSIC-AVQA release: 224 x 224 frames, one per second
AUDIO_ENCODERS = ("vggish", "clap")  # clap: Table XI's CLAP row (transformers, avmaster[clap])
CLAP_MODEL = "laion/clap-htsat-unfused"  # Hugging Face id or a local directory (offline)
CLAP_RATE = 48_000  # CLAP's sample rate
VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "avi", "mov")
VGGISH_POSTPROCESS = ("none", "pca", "pca-quantized")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
HWACCELS = ("cuda",)
PARTS_DIR = ".parts"
REPORT_NAME = "extract_report.jsonl"
SUMMARY_NAME = "extract_summary.json"
MAX_AUTO_WORKERS = 16


def default_workers() -> int:
    """Decoding processes by default: every core but one for the encoder loop (at most 16)."""
    return max(1, min(MAX_AUTO_WORKERS, (os.cpu_count() or 2) - 1))


@dataclass
class ExtractConfig:
    """Everything that decides what is extracted, how, and where it goes.

    The CLI (``avmaster extract``) exposes each field as a flag of the same name (``_`` -> ``-``).
    """

    out: Path = Path("features")
    videos: Path | None = None
    annotations: tuple[str, ...] = ()
    annotation_format: str = "auto"
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    # image + text encoder
    model: str = DEFAULT_MODEL
    pretrained: str = DEFAULT_PRETRAINED
    clip_weights: str | None = None
    random_init: bool = False
    seed: int = 0
    normalize: bool = False  # L2-normalise the stored CLIP vectors (default: raw encoder output)
    patch_tokens: bool = False
    # visual encoder: the CLIP model above, or ResNet-18 (the text stays CLIP's)
    visual_encoder: str = "clip"
    resnet_weights: str | None = None  # local torchvision resnet18 state dict (offline)
    # audio encoder: VGGish, or CLAP (one vector per second)
    audio_encoder: str = "vggish"
    clap_model: str = CLAP_MODEL  # with random_init: "avmaster-tiny" for tests
    vggish_weights: str | None = None
    vggish_pca_weights: str | None = None
    vggish_postprocess: str = "none"
    # time axis
    seconds: int = 60  # T: MUSIC-AVQA's clips are 60 s, AVQA's 10 s
    keep_all_seconds: bool = False
    frame_position: float = 0.0  # the frame shown at the start of each second (see README)
    silence_peak: float = 1e-4
    # speed
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 256  # frames per image-encoder batch
    audio_batch_size: int = 512  # log-mel examples per VGGish batch
    text_batch_size: int = 256
    workers: int = field(default_factory=default_workers)
    decode_threads: int = 1
    decode_all_frames: bool = False  # decode every frame (default: skip GOP tails; same frames)
    fast_decode: bool = False  # lossy: the decoder skips deblocking and unreferenced frames
    hwaccel: str | None = None  # "cuda": H.264/HEVC/VP9 decoding on the GPU's NVDEC engines
    # bookkeeping
    shard: tuple[int, int] = (0, 1)
    part_videos: int = 64
    part_seconds: float = 120.0
    retry_failed: bool = False
    dtype: str = "float16"
    merge_only: bool = False
    auto_merge: bool = True
    clean_parts: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.videos = Path(self.videos) if self.videos is not None else None
        self.annotations = tuple(str(a) for a in self.annotations)
        self.extensions = tuple(e.lower().lstrip(".") for e in self.extensions)
        if self.vggish_postprocess not in VGGISH_POSTPROCESS:
            raise ValueError(f"vggish_postprocess {self.vggish_postprocess!r}: choose one of "
                             f"{VGGISH_POSTPROCESS}")
        if self.visual_encoder not in VISUAL_ENCODERS:
            raise ValueError(f"visual_encoder {self.visual_encoder!r}: choose one of "
                             f"{VISUAL_ENCODERS}")
        if self.visual_encoder != "clip" and self.patch_tokens:
            raise ValueError("patch_tokens needs visual_encoder clip (ResNet-18 stores the "
                             "pooled 512-d vector only)")
        if self.audio_encoder not in AUDIO_ENCODERS:
            raise ValueError(f"audio_encoder {self.audio_encoder!r}: choose one of "
                             f"{AUDIO_ENCODERS}")
        if self.clap_model == TINY_MODEL and not self.random_init and self.audio_encoder == "clap":
            raise ValueError(f"clap_model {TINY_MODEL} has no weights: use it with random_init")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: choose one of {PRECISIONS}")
        if not 0.0 <= self.frame_position < 1.0:
            raise ValueError(f"frame_position {self.frame_position}: must lie in [0, 1)")
        if self.seconds < 1:
            raise ValueError(f"seconds {self.seconds}: must be at least 1")
        i, n = self.shard
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"shard {i}/{n}: want i/N with 0 <= i < N")

    @property
    def pretrained_tag(self) -> str:
        """What the features' ``pretrained`` attribute says: the tag, or ``random``."""
        return RANDOM_TAG if self.random_init else self.pretrained

    @property
    def stored_seconds(self) -> int | None:
        """Rows per video in the files: ``seconds``, or ``None`` with ``keep_all_seconds``."""
        return None if self.keep_all_seconds else self.seconds


def slug(text: str) -> str:
    """File-name-safe lower-case form: ``ViT-L-14-336`` -> ``vit-l-14-336``."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "none"


def clip_slug(model: str, pretrained: str) -> str:
    """``vit-l-14-336_openai``: names the visual and text files of one CLIP model + weights."""
    return f"{slug(model)}_{slug(pretrained)}"


@dataclass(frozen=True)
class FeaturePaths:
    """Where one configuration's outputs live (all under ``out``)."""

    visual: Path
    audio: Path
    text: Path
    patch: Path
    report: Path
    summary: Path
    parts: Path


def feature_paths(cfg: ExtractConfig | None = None, out: Path | str | None = None,
                  model: str | None = None, pretrained: str | None = None,
                  vggish_postprocess: str | None = None, random_init: bool | None = None
                  ) -> FeaturePaths:
    """The output files of a configuration; keyword arguments override ``cfg``'s fields.

    ``visual_<slug>.h5``, ``text_<slug>.h5``, ``patch_<slug>.h5`` with
    ``slug = clip_slug(model, pretrained or 'random')`` (the visual file of ResNet-18:
    ``visual_resnet18_imagenet1k-v1.h5``, or ``visual_resnet18_random.h5``);
    ``audio_vggish.h5`` (``-pca`` /
    ``-pca-quantized`` for the post-processed variants, ``_random`` for random weights), or
    ``audio_clap_<model>.h5`` (``audio_clap_laion-clap-htsat-unfused.h5``).
    """
    cfg = cfg or ExtractConfig()
    out = Path(out if out is not None else cfg.out)
    random_init = cfg.random_init if random_init is None else random_init
    tag = RANDOM_TAG if random_init else (pretrained or cfg.pretrained)
    s = clip_slug(model or cfg.model, tag)
    visual = s if cfg.visual_encoder == "clip" else clip_slug(
        RESNET_NAME, RANDOM_TAG if random_init else RESNET_TAG)
    post = vggish_postprocess or cfg.vggish_postprocess
    audio = "audio_vggish" + ("" if post == "none" else f"-{post}")
    audio += f"_{RANDOM_TAG}" if random_init else ""
    if cfg.audio_encoder == "clap":
        audio = f"audio_clap_{RANDOM_TAG if random_init else clap_tag(cfg.clap_model)}"
    return FeaturePaths(
        visual=out / f"visual_{visual}.h5",
        audio=out / f"{audio}.h5",
        text=out / f"text_{s}.h5",
        patch=out / f"patch_{s}.h5",
        report=out / REPORT_NAME,
        summary=out / SUMMARY_NAME,
        parts=out / PARTS_DIR,
    )


def _clip_settings(cfg: ExtractConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"model": cfg.model, "pretrained": cfg.pretrained_tag}
    if cfg.random_init:
        out["seed"] = cfg.seed
    return out


def visual_encoder_name(cfg: ExtractConfig) -> str:
    """The visual file's ``encoder`` attribute: ``open_clip:<model>`` or ``resnet18``."""
    return RESNET_NAME if cfg.visual_encoder == RESNET_NAME else f"open_clip:{cfg.model}"


def visual_settings(cfg: ExtractConfig) -> dict[str, Any]:
    """What decides the visual features' values: stored in the files, compared on resume."""
    if cfg.visual_encoder == RESNET_NAME:
        out: dict[str, Any] = {"encoder": RESNET_NAME, "pretrained": RANDOM_TAG if
                               cfg.random_init else RESNET_TAG, "output": "avgpool",
                               "image_size": RESNET_SIZE, "resize_mode": "squash"}
        if cfg.random_init:
            out["seed"] = cfg.seed
        return {**out, "text_model": cfg.model, "seconds": cfg.stored_seconds,
                "frame_position": cfg.frame_position, "fast_decode": cfg.fast_decode,
                "dtype": cfg.dtype}
    return {**_clip_settings(cfg), "output": "image_features", "normalize": cfg.normalize,
            "seconds": cfg.stored_seconds, "frame_position": cfg.frame_position,
            "fast_decode": cfg.fast_decode, "dtype": cfg.dtype}


def patch_settings(cfg: ExtractConfig) -> dict[str, Any]:
    return {**visual_settings(cfg), "output": "patch_tokens_projected"}


def clap_tag(model: str) -> str:
    """A CLAP model's ``pretrained`` tag: its Hugging Face id or folder name, slugged
    (``laion/clap-htsat-unfused`` -> ``laion-clap-htsat-unfused``)."""
    path = Path(model)
    return slug(path.name if path.is_dir() else model)


def audio_encoder_name(cfg: ExtractConfig) -> str:
    """The audio file's ``encoder`` attribute: ``torchvggish:vggish`` or ``clap``."""
    return "clap" if cfg.audio_encoder == "clap" else "torchvggish:vggish"


def audio_settings(cfg: ExtractConfig) -> dict[str, Any]:
    if cfg.audio_encoder == "clap":
        clap: dict[str, Any] = {"encoder": "clap", "model": cfg.clap_model,
                                "pretrained": RANDOM_TAG if cfg.random_init
                                else clap_tag(cfg.clap_model), "output": "audio_embeds",
                                "sample_rate": CLAP_RATE, "window": "1 s, repeat-padded",
                                "seconds": cfg.stored_seconds, "dtype": cfg.dtype}
        if cfg.random_init:
            clap["seed"] = cfg.seed
        return clap
    out: dict[str, Any] = {"encoder": "vggish", "pretrained": RANDOM_TAG if cfg.random_init
                           else "audioset", "postprocess": cfg.vggish_postprocess,
                           "seconds": cfg.stored_seconds, "dtype": cfg.dtype}
    if cfg.random_init:
        out["seed"] = cfg.seed
    return out


def text_settings(cfg: ExtractConfig) -> dict[str, Any]:
    return {**_clip_settings(cfg), "output": "encode_text + token states", "dtype": cfg.dtype}


def settings_json(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True)


def settings_hash(*settings: dict[str, Any]) -> str:
    """Short stable hash naming the parts folder of one set of settings."""
    blob = "|".join(settings_json(s) for s in settings)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


RELEASES_DIR = "releases"  # configs/releases/<name>.yaml: released feature formats
INTERRUPTED = 130  # exit status of extract / import-features after Ctrl-C, as shells report it


def release_names() -> list[str]:
    return sorted({f.stem for d in config_dirs() for f in (d / RELEASES_DIR).glob("*.yaml")})


@dataclass
class ImportConfig:
    release: str
    npy: Path
    out: Path = Path("features")
    annotations: tuple[str, ...] = ()
    annotation_format: str = "auto"
    seconds: int = 60  # T the release is expected to have (counted, never enforced)
    dtype: str = "float16"
    part_videos: int = 256
    progress: bool = True
