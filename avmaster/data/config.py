"""The data section of a run's configuration (``configs/data/*.yaml`` fill it in)."""

from __future__ import annotations

from dataclasses import dataclass, field

from avmaster.data.annotations import FORMATS, HeadTailGroup

QUESTION_PADDINGS = ("batch", "split")


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
    # true: questions whose video has no features (failed extraction) are left out, counted per
    # split in the log and in the results file; false: such videos stop the run
    skip_videos_without_features: bool = False
    seconds: int = 60  # T: every video is padded (last second repeated) or trimmed to this
    segments: int | None = None  # S of the T seconds, evenly spaced (Fig. 4); null = all T
    preload: bool = True  # read every feature into RAM once (MUSIC-AVQA fits)
    batch_size: int = 32
    eval_batch_size: int = 128
    # loader processes: preloaded features load fastest in the main process (a worker's
    # batch costs more to ship than to read; README, Performance); raise it with preload=false
    num_workers: int = 0
    pin_memory: bool = True  # page-locked batches, where they go to a GPU
    # question tokens padded to the batch's longest question ("batch") or to the split's
    # ("split": every batch of a split has one shape, as a replayed CUDA graph needs)
    question_padding: str = "batch"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"data.format must be one of {FORMATS}, got {self.format!r}")
        if self.question_padding not in QUESTION_PADDINGS:
            raise ValueError(f"data.question_padding must be one of {QUESTION_PADDINGS}, got "
                             f"{self.question_padding!r}")
        if self.segments is not None and not 1 <= self.segments <= self.seconds:
            raise ValueError(f"data.segments={self.segments} must be between 1 and "
                             f"data.seconds={self.seconds} (or null for all of them)")
