"""The data section of a run's configuration (``configs/data/*.yaml`` fill it in)."""

from __future__ import annotations

from dataclasses import dataclass, field

from avmaster.data.annotations import HeadTailGroup


@dataclass
class DataConfig:
    """Which annotation files and feature caches to read, and how to batch them.

    Relative annotation paths are resolved against ``annotations_dir``, relative feature paths
    against ``features_dir``. ``test_head``/``test_tail`` take MUSIC-AVQA-R's released head and
    tail files; with only ``test`` given, head/tail come from the 1.2x-mean rule
    (:func:`avmaster.data.annotations.assign_head_tail`).
    """

    name: str = "music_avqa"
    table: str = "music_avqa"  # music_avqa | music_avqa_v2 | music_avqa_r | avqa
    format: str = "auto"  # auto | music_avqa | avqa
    annotations_dir: str = "data/music_avqa"
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    test_head: str | None = None
    test_tail: str | None = None
    head_tail_ratio: float = 1.2
    head_tail_group: HeadTailGroup = "template"  # the groups the 1.2x-mean rule counts in
    answers: str | None = None  # JSON answer list; null = built from the training answers
    features_dir: str = "features/music_avqa"
    visual_features: str = "visual_vit-l-14-336_openai.h5"
    audio_features: str = "audio_vggish.h5"
    text_features: str = "text_vit-l-14-336_openai.h5"
    seconds: int = 60  # T: every video is padded (last second repeated) or trimmed to this
    preload: bool = True  # read every feature into RAM once (MUSIC-AVQA fits)
    batch_size: int = 32
    eval_batch_size: int = 128
    num_workers: int = 2
    pin_memory: bool = True
