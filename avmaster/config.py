"""Run configuration: typed OmegaConf schema, YAML files, presets and ``key=value`` overrides.

A run's config is the schema's defaults, then ``configs/avmaster.yaml`` (or ``--config``), then
the presets named on the command line (``data=music_avqa`` loads ``configs/data/music_avqa.yaml``
into ``data``; ``ablation=wo_tdpp`` merges ``configs/ablations/wo_tdpp.yaml``), then dotted
overrides (``model.dim=256``). A key the schema does not know is an error, never ignored.

The YAML files are the only registry of presets: an ablation preset may name the paper rows it
reproduces (``paper: [[table, setting], ...]``, read by the reports, not merged into the run);
``configs/variants/*.yaml`` name the inference-time variants that ``avmaster eval
variants=...`` runs on one checkpoint. A run records the presets and overrides it applied
(``presets``, ``overrides``), so reports label its results without guessing.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from avmaster.data.config import DataConfig
from avmaster.errors import ConfigError
from avmaster.models.config import (
    InferenceConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    to_dataclass,
)
from avmaster.paths import config_dirs

PRESET_KINDS = {"data": "data", "ablation": "ablations"}
VARIANTS_KIND = "variants"
log = logging.getLogger(__name__)
PAPER_KEY = "paper"  # an ablation preset's paper rows: metadata, not merged into the run
DEPRECATED_KEY = "deprecated"  # a preset kept for old commands: the warning it prints when used
RECORDED = ("presets", "overrides")  # written by load_config, never set by the user
GRAPH_REFUSED_PRECISIONS = ("16-mixed", "16", 16)  # loss scaling steps outside a graph
# Lightning's precisions the model runs in: its inputs stay float32, so the "-true" half
# precisions (weights cast, inputs not) fail at the first product
PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16", "16-mixed", "16", "64-true", "64")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainerConfig:
    """Arguments of ``lightning.Trainer`` that runs choose (the rest keep Lightning's defaults)."""

    max_epochs: int = 30
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"  # "bf16-mixed" on recent GPUs
    log_every_n_steps: int = 50
    gradient_clip_val: float | None = None
    limit_train_batches: Any = 1.0
    limit_val_batches: Any = 1.0
    limit_test_batches: Any = 1.0
    check_val_every_n_epoch: int = 1
    deterministic: bool = False
    enable_progress_bar: bool = True

    def __post_init__(self) -> None:
        if str(self.precision) not in PRECISIONS:
            raise ValueError(f"trainer.precision={self.precision}: choose one of {PRECISIONS} "
                             "(the -true half precisions are not supported)")


@dataclass
class Config:
    """Everything a train or eval run reads. ``ckpt`` picks a checkpoint to evaluate or to
    resume from; with ``resume`` a run continues from its own ``last.ckpt`` when one exists."""

    seed: int = 42
    output_dir: str = "runs"
    name: str = "avmaster"
    ckpt: str | None = None
    resume: bool = True
    compile: bool = False  # torch.compile each block of the model
    compile_mode: str | None = None  # torch.compile's mode (COMPILE_MODES); None: its default
    # record each training step's forward and backward once as a CUDA graph and replay it
    # (avmaster/step_graph.py): one CUDA device; pads questions to the split's longest
    cuda_graph: bool = False
    save_predictions: bool = True
    variants: list[str] = field(default_factory=list)  # eval: configs/variants/ names
    presets: list[str] = field(default_factory=list)  # recorded: "ablation=NAME", "data=NAME"
    overrides: list[str] = field(default_factory=list)  # recorded: the dotted key=value items
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        if self.cuda_graph and self.compile:
            raise ValueError("cuda_graph=true and compile=true exclude each other (for "
                             "compiled CUDA graphs: compile=true compile_mode=reduce-overhead)")
        if self.cuda_graph and self.trainer.precision in GRAPH_REFUSED_PRECISIONS:
            raise ValueError(f"cuda_graph=true records the backward without loss scaling; "
                             f"trainer.precision={self.trainer.precision} needs it: use "
                             "bf16-mixed or 32-true")
        if self.compile_mode is None:
            return
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got "
                             f"{self.compile_mode!r}")
        if not self.compile:
            raise ValueError(f"compile_mode={self.compile_mode} needs compile=true")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def find_config(kind: str, name: str) -> Path:
    """A preset's YAML file: ``name`` as a path, or ``configs/<kind>/<name>.yaml``."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    tried = []
    for d in config_dirs():
        cand = (d / kind / f"{name}.yaml") if kind else d / name
        tried.append(str(cand))
        if cand.exists():
            return cand
    available = sorted({f.stem for d in config_dirs() for f in (d / kind).glob("*.yaml")})
    raise ConfigError(f"no {kind or 'config'} preset {name!r} (looked in {', '.join(tried)}); "
                      f"available: {', '.join(available) or 'none'}")


def preset_names(kind: str) -> list[str]:
    """Every preset of a kind (``data``, ``ablations``, ``variants``) in the config dirs."""
    return sorted({f.stem for d in config_dirs() for f in (d / kind).glob("*.yaml")})


def read_preset(kind: str, name: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A preset's settings and the paper rows it names (``paper:``, ablation presets only)."""
    path = find_config(kind, name)
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a preset must be a mapping of config keys")
    rows = loaded.pop(PAPER_KEY, None) or []
    loaded.pop(DEPRECATED_KEY, None)
    if not (isinstance(rows, list) and all(isinstance(r, list) and len(r) == 2 for r in rows)):
        raise ConfigError(f"{path}: '{PAPER_KEY}' must be a list of [table, setting] pairs")
    return loaded, [(str(t), str(s)) for t, s in rows]


def deprecation(kind: str, name: str) -> str | None:
    """The ``deprecated:`` notice of a preset kept for old commands (None for a current one)."""
    loaded = yaml.safe_load(find_config(kind, name).read_text()) or {}
    notice = loaded.get(DEPRECATED_KEY) if isinstance(loaded, dict) else None
    return str(notice) if notice else None


FULL = "full"  # the model with no ablation preset


@functools.lru_cache(maxsize=1)
def switch_keys() -> frozenset[str]:
    """Dotted ``model.*`` / ``loss.*`` / ``data.segments`` keys that some ablation preset sets:
    an override of one of them makes a run an (unnamed) ablation."""
    keys = {"data.segments"}
    for name in preset_names(PRESET_KINDS["ablation"]):
        settings = read_preset(PRESET_KINDS["ablation"], name)[0]
        keys |= {f"{section}.{k}" for section in ("model", "loss")
                 for k in settings.get(section) or {}}
    return frozenset(keys)


def preset_configs(name: str, model: ModelConfig | None = None, loss: LossConfig | None = None
                   ) -> tuple[ModelConfig, LossConfig]:
    """The ``model`` / ``loss`` sections of the ablation preset ``name`` (``full``: none)
    applied to ``model`` / ``loss`` (defaults): the YAML file is the only definition."""
    settings = {} if name == FULL else read_preset(PRESET_KINDS["ablation"], name)[0]
    try:
        return (dataclasses.replace(model or ModelConfig(), **settings.get("model", {})),
                dataclasses.replace(loss or LossConfig(), **settings.get("loss", {})))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{find_config(PRESET_KINDS['ablation'], name)}: {e}") from None


@dataclass(frozen=True)
class VariantRow:
    """One inference-time variant: its name, the paper's setting label and how to infer."""

    name: str
    setting: str
    inference: InferenceConfig


@dataclass(frozen=True)
class Variant:
    """A group of inference-time rows from ``configs/variants/<name>.yaml``: ``rows`` as given,
    or, with ``readout_every_step``, one row per focus step k = 0..T-1 (Fig. 6)."""

    name: str
    paper: str
    rows: tuple[VariantRow, ...] = ()
    readout_every_step: bool = False

    def expand(self, seconds: int, base: InferenceConfig) -> list[VariantRow]:
        """The rows to evaluate; readout rows keep ``base``'s other settings."""
        if not self.readout_every_step:
            return list(self.rows)
        return [VariantRow(f"k{k:02d}", f"k={k}",
                           InferenceConfig(base.combine, list(base.drop), k, dict(base.weights)))
                for k in range(seconds)]


def load_variant(name: str) -> Variant:
    """Parse ``configs/variants/<name>.yaml`` (keys ``paper``, ``rows`` or
    ``readout_every_step``; each row ``{setting, inference}``)."""
    path = find_config(VARIANTS_KIND, name)
    raw = yaml.safe_load(path.read_text()) or {}
    known = {"paper", "rows", "readout_every_step"}
    if not isinstance(raw, dict) or set(raw) - known:
        raise ConfigError(f"{path}: expected the keys {sorted(known)}, got "
                          f"{sorted(raw) if isinstance(raw, dict) else type(raw).__name__}")
    rows = []
    for row, spec in (raw.get("rows") or {}).items():
        if not isinstance(spec, dict) or set(spec) - {"setting", "inference"}:
            raise ConfigError(f"{path}: row {row!r}: expected the keys setting and inference")
        try:
            inference = to_dataclass(InferenceConfig, spec.get("inference") or {})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{path}: row {row!r}: {e}") from None
        rows.append(VariantRow(str(row), str(spec.get("setting", row)), inference))
    every = bool(raw.get("readout_every_step", False))
    if bool(rows) == every:
        raise ConfigError(f"{path}: give either rows or readout_every_step: true")
    return Variant(name, str(raw.get("paper", name)), tuple(rows), every)


def _merge(base: DictConfig, other: Any, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = getattr(e, "full_key", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: unknown config key '{key}'. Check its spelling against "
                          "the keys `avmaster config` prints") from None
    except ValidationError as e:
        key = getattr(e, "full_key", "?")
        raise ConfigError(f"{where}: bad value for '{key}': {str(e).splitlines()[0]}") from None


def load_config(config: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Build a :class:`Config` from a YAML file plus command-line style overrides."""
    cfg = OmegaConf.structured(Config)
    path = Path(config) if config else find_config("", "avmaster.yaml")
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    cfg = _merge(cfg, OmegaConf.load(path), str(path))
    dotted, presets, variants = [], [], []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        if key in PRESET_KINDS:
            loaded, _ = read_preset(PRESET_KINDS[key], value)
            where = str(find_config(PRESET_KINDS[key], value))
            if notice := deprecation(PRESET_KINDS[key], value):
                log.warning("%s=%s is deprecated: %s", key, value, notice)
            cfg = _merge(cfg, {"data": loaded} if key == "data" else loaded, where)
            presets.append(f"{key}={value}")
        elif key == "variants":  # variants=table12,table13
            for name in filter(None, value.strip("[]").split(",")):
                load_variant(name.strip())
                variants.append(name.strip())
        elif key.split(".")[0] in RECORDED:
            raise ConfigError(f"{key}: recorded by avmaster (the presets and overrides a run "
                              "applied); use data=NAME / ablation=NAME instead of setting it")
        else:
            dotted.append(item)
    if dotted:
        cfg = _merge(cfg, OmegaConf.from_dotlist(dotted), "command line")
    cfg = _merge(cfg, {"presets": presets, "overrides": dotted, "variants": variants},
                 "command line")
    try:
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except ValueError as e:  # a dataclass's own check (e.g. model.use_visual without input)
        raise ConfigError(f"{path} with {' '.join(overrides) or 'no overrides'}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict of a (structured) config, for checkpoints and logs."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
