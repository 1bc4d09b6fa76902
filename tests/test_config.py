from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from avmaster.config import Config, ConfigError, load_config, read_preset, to_dict
from avmaster.paths import PROJECT_CONFIGS

DATA_PRESETS = sorted(p.stem for p in (PROJECT_CONFIGS / "data").glob("*.yaml"))
ABLATIONS = sorted(p.stem for p in (PROJECT_CONFIGS / "ablations").glob("*.yaml"))


def test_defaults_are_the_papers():
    cfg = load_config()
    assert cfg.model.dim == 512 and cfg.model.template_len == 8
    assert cfg.optim.lr == 1e-4 and cfg.optim.lr_step_size == 8 and cfg.optim.lr_gamma == 0.1
    assert cfg.data.batch_size == 32 and cfg.trainer.max_epochs == 30
    assert cfg.loss.tau == 0.1


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model.dim": 512, ...}`` of a nested dict."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def preset(kind: str, name: str) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(PROJECT_CONFIGS / kind / f"{name}.yaml"))


def test_base_config_repeats_no_default():
    """A default repeated in configs/avmaster.yaml would silently override a change in code."""
    base = leaves(preset("", "avmaster") or {})
    defaults = leaves(to_dict(Config()))
    assert not [k for k, v in base.items() if defaults.get(k) == v]


@pytest.mark.parametrize("name", DATA_PRESETS)
def test_every_data_preset_loads(name):
    cfg = load_config(overrides=[f"data={name}"])
    assert cfg.data.name == name
    assert cfg.data.table in ("music_avqa", "music_avqa_v2", "music_avqa_r", "avqa")
    loaded = leaves(to_dict(cfg.data))
    assert {k: loaded[k] for k in leaves(preset("data", name))} == leaves(preset("data", name))


@pytest.mark.parametrize("name", ABLATIONS)
def test_every_ablation_preset_loads(name):
    wanted = leaves(read_preset("ablations", name)[0])
    assert wanted, f"{name}.yaml sets nothing"
    loaded = leaves(to_dict(load_config(overrides=["data=music_avqa", f"ablation={name}"])))
    assert {k: loaded[k] for k in wanted} == wanted


def test_overrides_presets_and_order():
    cfg = load_config(overrides=["model.dim=256", "data=avqa", "ablation=wo_tdpp",
                                 "data.batch_size=4", "data.train=[a.json,b.json]"])
    assert cfg.model.dim == 256 and cfg.data.name == "avqa" and cfg.data.seconds == 10
    assert cfg.model.use_tdpp is False and cfg.data.batch_size == 4
    assert cfg.data.train == ["a.json", "b.json"]


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.dimm'"):
        load_config(overrides=["model.dimm=3"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(overrides=["nonsense=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  heads: 4\n  tempalte_len: 4\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'model.tempalte_len'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no data preset 'nope'"):
        load_config(overrides=["data=nope"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(overrides=["model.dim"])
    with pytest.raises(ConfigError, match=r"bad value for 'model\.dim'"):
        load_config(overrides=["model.dim=abc"])


def test_preset_may_be_a_path(tmp_path: Path):
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\ntable: avqa\nseconds: 10\n")
    assert load_config(overrides=[f"data={p}"]).data.name == "mine"


def test_compile_mode_needs_compile_and_a_known_mode():
    cfg = load_config(overrides=["compile=true", "compile_mode=reduce-overhead"])
    assert cfg.compile and cfg.compile_mode == "reduce-overhead"
    assert load_config().compile_mode is None
    with pytest.raises(ConfigError, match="compile_mode=default needs compile=true"):
        load_config(overrides=["compile_mode=default"])
    with pytest.raises(ConfigError, match="compile_mode must be one of"):
        load_config(overrides=["compile=true", "compile_mode=fast"])
