from pathlib import Path

import pytest

from avmaster.config import ConfigError, load_config
from avmaster.paths import PROJECT_CONFIGS

DATA_PRESETS = sorted(p.stem for p in (PROJECT_CONFIGS / "data").glob("*.yaml"))


def test_defaults_are_the_papers():
    cfg = load_config()
    assert cfg.model.dim == 512 and cfg.model.template_len == 8
    assert cfg.optim.lr == 1e-4 and cfg.optim.lr_step_size == 8 and cfg.optim.lr_gamma == 0.1
    assert cfg.data.batch_size == 32 and cfg.trainer.max_epochs == 30
    assert cfg.loss.tau == 0.1


@pytest.mark.parametrize("name", DATA_PRESETS)
def test_every_data_preset_loads(name):
    cfg = load_config(overrides=[f"data={name}"])
    assert cfg.data.name == name
    assert cfg.data.table in ("music_avqa", "music_avqa_v2", "music_avqa_r", "avqa")


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
