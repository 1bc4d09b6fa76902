"""Run configuration: typed OmegaConf schema, YAML files, presets and ``key=value`` overrides.

A run's config is the schema's defaults, then ``configs/avmaster.yaml`` (or ``--config``), then
the presets named on the command line (``data=music_avqa`` loads ``configs/data/music_avqa.yaml``
into ``data``; ``ablation=wo_tdpp`` merges ``configs/ablations/wo_tdpp.yaml``), then dotted
overrides (``model.dim=256``). A key the schema does not know is an error, never ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from avmaster.data.config import DataConfig
from avmaster.models.config import LossConfig, ModelConfig, OptimConfig
from avmaster.paths import config_dirs

PRESET_KINDS = {"data": "data", "ablation": "ablations"}


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


@dataclass
class Config:
    """Everything a train or eval run reads. ``ckpt`` picks a checkpoint to evaluate or to
    resume from; with ``resume`` a run continues from its own ``last.ckpt`` when one exists."""

    seed: int = 42
    output_dir: str = "runs"
    name: str = "avmaster"
    ckpt: str | None = None
    resume: bool = True
    compile: bool = False  # torch.compile the model
    save_predictions: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; says where and how to fix it."""


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
    dotted = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        if key in PRESET_KINDS:
            preset = find_config(PRESET_KINDS[key], value)
            loaded = OmegaConf.load(preset)
            cfg = _merge(cfg, {"data": loaded} if key == "data" else loaded, str(preset))
        else:
            dotted.append(item)
    if dotted:
        cfg = _merge(cfg, OmegaConf.from_dotlist(dotted), "command line")
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict of a (structured) config, for checkpoints and logs."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
