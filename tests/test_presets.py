"""The YAML presets are the only registry: each one's effect on the model, losses, inputs and
data (not just that it loads), the runs' record of them, and the inference-time variants."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from helpers import DIMS, SMALL, C, assert_every_parameter_learns, make_batch

from avmaster.config import (
    FULL,
    ConfigError,
    load_config,
    load_variant,
    preset_configs,
    preset_names,
    read_preset,
)
from avmaster.losses import AVMasterLoss
from avmaster.models import AVMaster, InferenceConfig
from avmaster.models.combine import combine, top_answers

pytestmark = pytest.mark.usefixtures("single_thread")

ALL = frozenset({"proj_question", "proj_words", "proj_audio", "proj_visual", "focus", "fusion",
                 "decoder", "audio_pref", "audio_decoder", "visual_pref", "visual_decoder"})
PREF = frozenset({"audio_pref", "audio_decoder", "visual_pref", "visual_decoder"})
LOSSES = frozenset({"qa", "audio", "visual", "contrastive"})
VOTERS = {"decoder": "tdpp", "audio_decoder": "audio", "visual_decoder": "visual"}


@dataclass
class Effect:
    """What a preset must change: the modules built, those frozen (built, no active loss), the
    loss terms computed, and config fields (``model.*``, ``data.*``) it sets."""

    modules: frozenset[str] = ALL
    losses: frozenset[str] = LOSSES
    frozen: frozenset[str] = frozenset()
    fields: dict[str, Any] = field(default_factory=dict)


EFFECTS: dict[str, Effect] = {
    FULL: Effect(),
    # Table VII: modules removed
    "wo_avfc": Effect(ALL - {"focus"}, fields={"model.use_focus": False}),
    "wo_dpcl": Effect(losses=LOSSES - {"contrastive"}),
    "wo_gpap": Effect(ALL - PREF, frozenset({"qa"})),
    "wo_tdpp": Effect(ALL - {"focus", "fusion", "decoder"}, frozenset({"audio", "visual"})),
    "wo_all": Effect(ALL - PREF - {"focus"}, frozenset({"qa"})),
    "question_only": Effect(frozenset({"proj_question", "proj_words", "decoder"}),
                            frozenset({"qa"})),
    # kept for old commands (deprecated): training-time removal of preference branches
    "wo_ape": Effect(ALL - {"audio_pref", "audio_decoder"}, LOSSES - {"audio"}),
    "wo_vpe": Effect(ALL - {"visual_pref", "visual_decoder"}, LOSSES - {"visual"}),
    "wo_avpe": Effect(ALL - PREF, frozenset({"qa"})),
    # Table VIII: loss weights only; every decoder is built and votes, untrained ones frozen
    "loss_qa": Effect(losses=frozenset({"qa"}), frozen=PREF),
    "loss_qa_c": Effect(losses=frozenset({"qa", "contrastive"}),
                        frozen=frozenset({"audio_decoder", "visual_decoder"})),
    "loss_qa_c_a": Effect(losses=LOSSES - {"visual"}, frozen=frozenset({"visual_decoder"})),
    "loss_qa_c_v": Effect(losses=LOSSES - {"audio"}, frozen=frozenset({"audio_decoder"})),
    "loss_qa_a_v": Effect(losses=LOSSES - {"contrastive"}),
    # Table IX, X
    **{f"template_{n}": Effect(fields={"model.template_len": n}) for n in (2, 4, 12, 16)},
    "share_none": Effect(fields={"model.share": "none"}),
    "share_bias": Effect(fields={"model.share": "bias"}),
    "share_both": Effect(fields={"model.share": "both"}),
    # Table XI: other feature files, same model
    "encoder_clip_b": Effect(fields={"data.visual_features": "visual_vit-b-32_openai.h5",
                                     "data.text_features": "text_vit-b-32_openai.h5"}),
    "encoder_clip_l224": Effect(fields={"data.visual_features": "visual_vit-l-14_openai.h5",
                                        "data.text_features": "text_vit-l-14_openai.h5"}),
    "encoder_res18": Effect(fields={"data.visual_features": "visual_resnet18_imagenet1k-v1.h5"}),
    "encoder_clap": Effect(fields={
        "data.audio_features": "audio_clap_laion-clap-htsat-unfused.h5"}),
    # Fig. 4: S of the T seconds; Fig. 5: one modality's input off
    **{f"segments_{s}": Effect(fields={"data.segments": s}) for s in (12, 24, 36, 48)},
    "inputs_a_q": Effect(ALL - {"proj_visual", "visual_pref", "visual_decoder"},
                         LOSSES - {"visual"}, fields={"model.use_visual": False}),
    "inputs_v_q": Effect(ALL - {"proj_audio", "audio_pref", "audio_decoder"},
                         LOSSES - {"audio"}, fields={"model.use_audio": False}),
}


def test_every_preset_has_an_effect_test() -> None:
    assert set(EFFECTS) - {FULL} == set(preset_names("ablations"))


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("name", sorted(EFFECTS))
def test_preset_effect(name: str) -> None:
    effect = EFFECTS[name]
    cfg = load_config(overrides=[] if name == FULL else [f"ablation={name}"])
    default = load_config()
    assert cfg.presets == ([] if name == FULL else [f"ablation={name}"])
    for key, value in effect.fields.items():
        assert _get(cfg, key) == value != _get(default, key), key
    changed = {f"{s}.{f.name}" for s in ("model", "loss", "data")
               for f in dataclasses.fields(_get(cfg, s))
               if _get(cfg, f"{s}.{f.name}") != _get(default, f"{s}.{f.name}")}
    data_fields = {k for k in effect.fields if k.startswith("data.")}
    assert {k for k in changed if k.startswith("data.")} == data_fields

    model_cfg, loss_cfg = preset_configs(name, SMALL)
    torch.manual_seed(0)
    model = AVMaster(model_cfg, DIMS, C, loss_cfg=loss_cfg)
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == effect.modules
    batch = make_batch()
    out = model(batch)
    assert set(AVMasterLoss(loss_cfg)(out, batch["label"])) - {"loss"} == effect.losses
    # every built decoder votes, trained or not (Table VIII protocol)
    assert set(out.path_probs()) == {VOTERS[m] for m in effect.modules if m in VOTERS}
    assert_every_parameter_learns(model, loss_cfg, make_batch(seed=1), effect.frozen)
    if "model.template_len" in effect.fields:
        assert out.audio_focus.shape[1] == effect.fields["model.template_len"]
    if "model.share" in effect.fields:
        share = effect.fields["model.share"]
        assert len(model.focus.steps) == (1 if share == "both" else 2)
        assert model.focus.bias.shape[0] == (1 if share in ("bias", "both") else 2)


@pytest.mark.parametrize("modality", ["audio", "visual"])
def test_an_input_switched_off_is_not_read(modality: str) -> None:
    """Fig. 5: A+Q ignores the video, V+Q the audio, entirely."""
    name = "inputs_a_q" if modality == "visual" else "inputs_v_q"
    model_cfg, loss_cfg = preset_configs(name, SMALL)
    model = AVMaster(model_cfg, DIMS, C, loss_cfg=loss_cfg).eval()
    batch, other = make_batch(), make_batch()
    other[modality] = 100 * torch.randn_like(batch[modality])
    kept = "audio" if modality == "visual" else "visual"
    changed = dict(batch, **{kept: torch.randn_like(batch[kept])})
    with torch.no_grad():
        assert torch.equal(model(batch).probs(), model(other).probs())
        assert not torch.allclose(model(batch).probs(), model(changed).probs())


def test_preset_errors_name_the_file_and_the_fix(tmp_path) -> None:
    with pytest.raises(ConfigError, match="use_visual=false needs visual_preference=false"):
        load_config(overrides=["model.use_visual=false"])
    with pytest.raises(ConfigError, match=r"data.segments=90 must be between 1 and"):
        load_config(overrides=["data.segments=90"])
    with pytest.raises(ConfigError, match="recorded by avmaster"):
        load_config(overrides=["presets=[x]"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {template_len: 3}\npaper: [VII ablation]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: 'paper' must be a list of \[table"):
        read_preset("ablations", str(bad))
    with pytest.raises(ConfigError, match="no variants preset 'table99'"):
        load_config(overrides=["variants=table12,table99"])


def test_runs_record_presets_and_overrides() -> None:
    cfg = load_config(overrides=["data=music_avqa", "ablation=wo_avfc", "model.dim=64",
                                 "variants=table12,table13"])
    assert cfg.presets == ["data=music_avqa", "ablation=wo_avfc"]
    assert cfg.overrides == ["model.dim=64"] and cfg.variants == ["table12", "table13"]


# -- inference-time variants (Tables XII, XIII, Fig. 6) ------------------------------------------


def test_variant_files_define_the_papers_rows() -> None:
    t12, t13, fig6 = (load_variant(n) for n in ("table12", "table13", "fig6"))
    assert {r.name: sorted(r.inference.drop) for r in t12.rows} == {
        "full": [], "wo_ape": ["audio"], "wo_vpe": ["visual"], "wo_avpe": ["audio", "visual"]}
    assert {r.name: r.inference.combine for r in t13.rows} == {
        "add": "add", "mul": "mul", "w_add": "w_add"}
    steps = fig6.expand(5, InferenceConfig())
    assert [r.inference.readout_step for r in steps] == [0, 1, 2, 3, 4]


def test_combination_rules() -> None:
    probs = {"tdpp": torch.tensor([[0.9, 0.1]]), "audio": torch.tensor([[0.9, 0.1]]),
             "visual": torch.tensor([[0.01, 0.99]])}
    add = combine(probs)
    assert torch.allclose(add, torch.tensor([[1.81, 1.19]]) / 3)
    mul = combine(probs, InferenceConfig(combine="mul"))
    prod = torch.tensor([0.9 * 0.9 * 0.01, 0.1 * 0.1 * 0.99])
    assert torch.allclose(mul[0], prod / prod.sum())
    assert add.argmax() == 0 and mul.argmax() == 1  # the rules can disagree
    weights = {"tdpp": 2.0, "audio": 1.0, "visual": 1.0}
    w_add = combine(probs, InferenceConfig(combine="w_add", weights=weights))
    assert torch.allclose(w_add, torch.tensor([[0.6775, 0.3225]]))
    dropped = combine(probs, InferenceConfig(drop=["audio", "visual"]))
    assert torch.equal(dropped, probs["tdpp"])
    with pytest.raises(ValueError, match=r"needs inference\.weights for"):
        combine(probs, InferenceConfig(combine="w_add"))
    with pytest.raises(ValueError, match="leaves none of the model's paths"):
        combine({"tdpp": probs["tdpp"]}, InferenceConfig(drop=["tdpp"]))
    with pytest.raises(ValueError, match="unknown path 'video'"):
        InferenceConfig(drop=["video"])


def test_top_answers_break_ties_as_argmax_does() -> None:
    """Equal probabilities (common under bf16) are ranked in index order, so the first answer
    of a predictions file is the answer the accuracy counted (``argmax``)."""
    probs = torch.tensor([[0.1, 0.3, 0.3, 0.3], [0.4, 0.1, 0.4, 0.1]])
    for _ in range(20):  # a random permutation of the answers keeps the rule
        perm = torch.randperm(4)
        values, indices = top_answers(probs[:, perm], 3)
        assert torch.equal(indices[:, 0], probs[:, perm].argmax(dim=-1))
        assert (values.diff(dim=-1) <= 0).all()
    values, indices = top_answers(probs, 3)
    assert indices.tolist() == [[1, 2, 3], [0, 2, 1]]


def test_readout_after_step_k_equals_the_recurrence_over_k_plus_one_seconds() -> None:
    model = AVMaster(SMALL, DIMS, C).eval()
    batch = make_batch()
    first = {k: (v[:, :3] if k in ("audio", "visual") else v) for k, v in batch.items()}
    with torch.no_grad():
        early, last, short = model(batch, readout_step=2), model(batch), model(first)
    assert torch.allclose(early.audio_focus, short.audio_focus, atol=1e-6)
    assert not torch.allclose(early.audio_focus, last.audio_focus, atol=1e-4)
    assert early.focus_maps["audio"].shape[-1] == 3
    # only the templates change: the preference paths read every second either way
    assert torch.equal(early.audio_logits, last.audio_logits)


def test_inference_settings_the_model_cannot_honour_are_refused() -> None:
    from avmaster.training import check_inference

    model_cfg, loss_cfg = preset_configs("wo_gpap", SMALL)
    model = AVMaster(model_cfg, DIMS, C, loss_cfg=loss_cfg)
    with pytest.raises(ConfigError, match=r"variants=table12, row wo_ape: .* has no audio path"):
        check_inference(InferenceConfig(drop=["audio"]), model, 5, "x.ckpt",
                        "variants=table12, row wo_ape")
    check_inference(InferenceConfig(readout_step=4), model, 5, "x.ckpt", "inference")


def test_segments_keep_evenly_spaced_seconds() -> None:
    """Fig. 4: S of the T seconds, the centre of each of S equal windows."""
    from avmaster.data.segments import segment_seconds

    assert segment_seconds(60, 12).tolist() == list(range(2, 60, 5))
    assert segment_seconds(4, 2).tolist() == [1, 3]
    assert segment_seconds(60, None) is None and segment_seconds(60, 60) is None


def test_deprecated_presets_warn_and_still_load(caplog) -> None:
    """Presets of earlier releases keep loading, with a warning that names the replacement."""
    import logging

    from avmaster.config import deprecation

    for name in ("wo_ape", "wo_vpe", "wo_avpe"):
        assert "variants=table12" in (deprecation("ablations", name) or "")
        with caplog.at_level(logging.WARNING, logger="avmaster.config"):
            cfg = load_config(overrides=[f"ablation={name}"])
        assert f"ablation={name} is deprecated" in caplog.text
        assert cfg.presets == [f"ablation={name}"]
    assert deprecation("ablations", "wo_gpap") is None
