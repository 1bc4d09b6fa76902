"""AV-Master modules and the full model: shapes, masks, ablations, gradients, checkpoints, DDP."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import (
    DIMS,
    SMALL,
    B,
    C,
    K,
    ListData,
    T,
    assert_every_parameter_learns,
    make_batch,
)

from avmaster.config import preset_configs
from avmaster.lightning_module import AnswerAccuracy, AVMasterModule
from avmaster.losses import AVMasterLoss
from avmaster.models import (
    CAB,
    FFN,
    MLP,
    SAB,
    AnswerDecoder,
    AVMaster,
    AVMasterOutput,
    FocusCapture,
    FocusStep,
    KeyFusion,
    LossConfig,
    ModelConfig,
    OptionHead,
    PreferenceActivation,
    SingleKeyCAB,
    deferred,
    focus_scan,
)

L_MAX = 6  # question words

pytestmark = pytest.mark.usefixtures("single_thread")


def build(
    name: str = "full", multiple_choice: bool = False, **changes
) -> tuple[AVMaster, LossConfig]:
    cfg, loss = preset_configs(name, dataclasses.replace(SMALL, **changes))
    torch.manual_seed(0)
    return AVMaster(cfg, DIMS, C, multiple_choice=multiple_choice, loss_cfg=loss), loss


def outputs_of(model: AVMaster, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return output_tensors(model(batch))


def output_tensors(out: AVMasterOutput) -> list[torch.Tensor]:
    tensors = [*out.path_logits, *out.preferences, *out.focus_maps.values()]
    return tensors + [x for x in (out.fused, out.audio_focus, out.visual_focus) if x is not None]


# -- blocks -------------------------------------------------------------------------------------


def test_block_shapes() -> None:
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    mask = torch.ones(2, 7, dtype=torch.bool)
    assert FFN(32, 2)(x).shape == x.shape
    assert MLP(32, 64, 8)(x).shape == (2, 5, 8)
    assert SAB(32, 4)(x).shape == x.shape
    assert CAB(32, 4)(x, ctx, mask).shape == x.shape
    cab = SingleKeyCAB(32)
    assert cab(x, cab.project(ctx[:, :1])).shape == x.shape


def test_sab_ignores_masked_keys() -> None:
    sab = SAB(32, 4).eval()
    x = torch.randn(2, 6, 32)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    y = x.clone()
    y[0, 4:] = 100 * torch.randn(2, 32)
    assert torch.allclose(sab(x, mask)[0, :4], sab(y, mask)[0, :4], atol=1e-5)
    assert torch.allclose(sab(x[:1, :4])[0], sab(x, mask)[0, :4], atol=1e-5)


def test_single_key_cab_equals_cab_with_one_key() -> None:
    """The focus CAB shortcut is exact: softmax over one key is 1."""
    torch.manual_seed(0)
    cab, fast = CAB(32, 4).eval(), SingleKeyCAB(32).eval()
    fast.ff.load_state_dict(cab.ff.state_dict())
    fast.norm1.load_state_dict(cab.norm1.state_dict())
    fast.norm2.load_state_dict(cab.norm2.state_dict())
    fast.to_out.load_state_dict(cab.attn.to_out.state_dict())
    with torch.no_grad():
        fast.to_v.weight.copy_(cab.attn.to_kv.weight[32:])
        fast.to_v.bias.copy_(cab.attn.to_kv.bias[32:])
    x, frame = torch.randn(2, 5, 32), torch.randn(2, 1, 32)
    assert torch.allclose(cab(x, frame), fast(x, fast.project(frame)), atol=1e-5)


# -- focus, fusion, preference, decoders --------------------------------------------------------


@pytest.mark.parametrize("share", ["none", "attention", "bias", "both"])
def test_focus_capture_shapes_and_sharing(share: str) -> None:
    cfg = dataclasses.replace(SMALL, share=share)
    focus = FocusCapture(32, 4, 3, 1, 0.0, cfg.share_attention, cfg.share_bias)
    assert len(focus.steps) == (1 if cfg.share_attention else 2)
    assert focus.bias.shape[0] == (1 if cfg.share_bias else 2)
    out = focus(torch.randn(B, T, 32), torch.randn(B, T, 32))
    assert out.audio.shape == out.visual.shape == (B, 3, 32)
    assert out.audio_map.shape == out.visual_map.shape == (B, 3, T)
    assert torch.allclose(out.audio_map.sum(-1), torch.ones(B, 3))


def naive_focus(step: FocusStep, x: torch.Tensor, cls: torch.Tensor, bias: torch.Tensor):
    """Eq. 2 written out step by step, without precomputation."""
    for k in range(x.shape[1]):
        frame = x[:, k : k + 1]
        tp1 = cls + frame.expand_as(cls)
        tp2 = step.sab2(step.sab1(tp1) + bias) + bias
        cls = step.cab(tp2, step.cab.to_out(step.cab.to_v(frame)))
    return cls


def test_focus_batched_modalities_match_naive_recurrence() -> None:
    torch.manual_seed(0)
    focus = FocusCapture(32, 4, 3, 1, 0.0, share_attention=True, share_bias=False).eval()
    a, v = torch.randn(B, T, 32), torch.randn(B, T, 32)
    out = focus(a, v)
    step = focus.steps[0]
    init = focus.templates[:, None].expand(-1, B, -1, -1)
    ref_a = naive_focus(step, a, init[0], focus.bias[0])
    ref_v = naive_focus(step, v, init[1], focus.bias[1])
    assert torch.allclose(out.audio, ref_a, atol=1e-5)
    assert torch.allclose(out.visual, ref_v, atol=1e-5)


def test_focus_depends_on_temporal_order() -> None:
    torch.manual_seed(0)
    focus = FocusCapture(32, 4, 3, 1, 0.0).eval()
    a, v = torch.randn(1, T, 32), torch.randn(1, T, 32)
    out, flipped = focus(a, v), focus(a.flip(1), v.flip(1))
    assert not torch.allclose(out.audio, flipped.audio, atol=1e-3)


def test_fusion_preference_decoder_shapes() -> None:
    a, v, w = torch.randn(B, T, 32), torch.randn(B, T, 32), torch.randn(B, L_MAX, 32)
    mask = torch.ones(B, L_MAX, dtype=torch.bool)
    mask[0, 3:] = False
    fused = KeyFusion(32, 4, 1)(a, v, w, mask, torch.randn(B, 3, 32), torch.randn(B, 3, 32))
    assert fused.shape == (B, 32)
    assert PreferenceActivation(32, 4, 1)(a, w, mask).shape == (B, T, 32)
    h = AnswerDecoder(32, 4, depth=2)(torch.randn(B, 32), a)
    assert h.shape == (B, 32)
    assert OptionHead(32)(h, torch.randn(B, K, 32)).shape == (B, K)


# -- the full model -----------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 4, 8, 12, 16])
def test_template_lengths(n: int) -> None:
    model, _ = build(template_len=n)
    out = model(make_batch())
    assert out.audio_focus.shape == (B, n, SMALL.dim)


def test_inference_sums_the_three_softmaxes() -> None:
    model, _ = build()
    out = model(make_batch())
    summed = sum(x.softmax(-1) for x in (out.logits, out.audio_logits, out.visual_logits))
    assert torch.equal(out.pred(), summed.argmax(-1))


@pytest.mark.parametrize("name", ["full", "wo_tdpp", "wo_avfc", "question_only"])
def test_padded_question_tokens_do_not_leak(name: str) -> None:
    model, _ = build(name)
    model.eval()
    batch = make_batch()
    changed = dict(batch)
    noise = 1e3 * torch.randn_like(batch["question_tokens"])
    changed["question_tokens"] = torch.where(batch["question_mask"][..., None],
                                             batch["question_tokens"], noise)
    with torch.no_grad():
        for x, y in zip(outputs_of(model, batch), outputs_of(model, changed), strict=True):
            assert torch.allclose(x, y, atol=1e-5)
        # a sample padded inside a batch gives what it gives alone, unpadded
        alone = {k: v[1:2] for k, v in batch.items()}
        n = int(batch["question_mask"][1].sum())
        alone["question_tokens"] = alone["question_tokens"][:, :n]
        alone["question_mask"] = alone["question_mask"][:, :n]
        for x, y in zip(outputs_of(model, batch), outputs_of(model, alone), strict=True):
            assert torch.allclose(x[1:2], y, atol=1e-5)


@pytest.mark.parametrize("share", ["none", "bias", "both"])
def test_every_parameter_gets_a_gradient_for_each_sharing(share: str) -> None:
    model, loss = build(share=share)
    assert_every_parameter_learns(model, loss, make_batch())


@pytest.mark.parametrize(("scan", "share", "update", "deferred"),
                         [("manual", "attention", "replace", False),
                          ("manual", "none", "gated", False),
                          ("autograd", "attention", "replace", False),
                          ("autograd", "attention", "replace", True)])
def test_model_trains_on_a_device_other_than_the_cpu(scan: str, share: str, update: str,
                                                     deferred: bool) -> None:
    """Forward and backward on the meta device: no tensor is made on the CPU behind the
    caller's back and no CPU-only path (oneDNN packing, CPU dropout) is taken elsewhere, as a
    GPU run needs; every parameter gets a gradient of its own shape and device."""
    cfg = dataclasses.replace(SMALL, focus_scan=scan, share=share, focus_update=update,
                              deferred_weight_grads=deferred)
    with torch.device("meta"):
        model = AVMaster(cfg, DIMS, C).train()
    batch = {k: v.to("meta") for k, v in make_batch().items()}
    AVMasterLoss()(model(batch), batch["label"])["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.device.type == "meta" and p.grad.shape == p.shape, name


def test_fusion_learning_only_from_contrast_keeps_its_frozen_decoder() -> None:
    loss = LossConfig(qa=0.0, visual=0.0)
    torch.manual_seed(0)
    model = AVMaster(SMALL, DIMS, C, loss_cfg=loss)
    assert model.decoder is not None and model.fusion is not None
    assert_every_parameter_learns(model, loss, make_batch(),
                                  frozenset({"decoder", "visual_decoder"}))
    with pytest.raises(ValueError, match="no answer decoder"):
        AVMaster(SMALL, DIMS, C, loss_cfg=LossConfig(qa=0.0, audio=0.0, visual=0.0))


def test_every_parameter_gets_a_gradient_multiple_choice() -> None:
    model, loss = build(multiple_choice=True)
    assert_every_parameter_learns(model, loss, make_batch(options=True))


def _top_modules(model: AVMaster) -> set[str]:
    return {name.split(".")[0] for name, _ in model.named_parameters()}


def test_unread_audio_is_not_projected() -> None:
    """w/o TDPP and w/o APE: the audio features are not read at all."""
    model = AVMaster(dataclasses.replace(SMALL, use_tdpp=False, use_focus=False,
                                         audio_preference=False), DIMS, C)
    assert "proj_audio" not in _top_modules(model)


def test_weight_sharing_changes_the_parameter_count() -> None:
    def n(share: str) -> int:
        return sum(p.numel() for p in build(share=share)[0].focus.parameters())

    assert n("none") > n("bias") > n("attention") > n("both")
    step = sum(p.numel() for p in build(share="both")[0].focus.steps[0].parameters())
    bias = SMALL.template_len * SMALL.dim
    assert n("none") - n("attention") == step
    assert n("attention") - n("both") == bias


def test_multiple_choice_head() -> None:
    model, _ = build(multiple_choice=True)
    assert "proj_option" in _top_modules(model)
    out = model(make_batch(options=True))
    for logits in out.path_logits:
        assert logits.shape == (B, K)
    assert out.pred().shape == (B,) and int(out.pred().max()) < K
    with pytest.raises(ValueError, match="options"):
        model(make_batch())
    qo = AVMaster(dataclasses.replace(SMALL, question_only=True), DIMS, 0, multiple_choice=True)
    assert qo(make_batch(options=True)).logits.shape == (B, K)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        ModelConfig(share="everything")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ModelConfig(dim=30, heads=4)
    with pytest.raises(ValueError):
        ModelConfig(use_tdpp=False, audio_preference=False, visual_preference=False)
    with pytest.raises(ValueError):
        AVMaster({"dim": 32, "heads": 4, "unknown_key": 1}, DIMS, C)
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), {"dim": 64, "share": "none"})
    model = AVMaster(cfg, {"visual": 12, "audio": 10, "question": 16}, C)
    assert model.cfg.share == "none" and model.dims == DIMS


# -- Lightning ----------------------------------------------------------------------------------


def module(**kwargs) -> AVMasterModule:
    torch.manual_seed(0)
    return AVMasterModule(model_cfg=SMALL, dims=dataclasses.asdict(DIMS), **kwargs)


def trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kwargs)


def test_lightning_fit_test_predict_and_checkpoint_round_trip(tmp_path: Path) -> None:
    answers = [f"a{i}" for i in range(C)]
    pl_module = module(answers=answers)
    data = ListData([make_batch(seed=s) for s in range(2)])
    fit = trainer(tmp_path, max_steps=2, num_sanity_val_steps=0)
    fit.fit(pl_module, datamodule=data)
    assert {"train/loss", "train/loss_qa", "train/loss_contrastive", "val/acc"} <= set(
        fit.callback_metrics
    )
    assert isinstance(pl_module.metrics["val"], AnswerAccuracy)  # no table spec: plain accuracy
    results = trainer(tmp_path).test(pl_module, datamodule=data, verbose=False)
    assert "test/acc" in results[0]
    preds = trainer(tmp_path).predict(pl_module, datamodule=data)
    assert preds[0]["pred"].shape == (B,) and preds[0]["top5"].shape == (B, 5)
    assert torch.equal(preds[0]["index"], torch.arange(B))
    assert torch.equal(preds[0]["top5"][:, 0], preds[0]["pred"])

    path = tmp_path / "model.ckpt"
    fit.save_checkpoint(path)
    loaded = AVMasterModule.load_from_checkpoint(path, map_location="cpu")
    assert loaded.answers == answers and loaded.hparams.num_answers == C
    assert loaded.model.cfg == pl_module.model.cfg
    pl_module.eval(), loaded.eval()
    batch = make_batch(seed=5)
    with torch.no_grad():
        assert torch.equal(pl_module(batch).probs(), loaded(batch).probs())


@pytest.mark.slow
@pytest.mark.parametrize("scan", ["manual", "autograd"])
def test_compiled_blocks_match_eager_and_keep_parameter_names(scan: str) -> None:
    """``compile=true`` (regional ``torch.compile``) changes neither the math nor the state dict
    keys, so checkpoints move between compiled and eager models, with either focus scan (the
    autograd one compiles the focus step too). ``aot_eager`` traces forward and backward like
    inductor does without needing a C++ toolchain in the tests."""
    eager, _ = build(focus_scan=scan)
    compiled, _ = build(focus_scan=scan)
    compiled.compile_blocks(backend="aot_eager")
    assert list(compiled.state_dict()) == list(eager.state_dict())
    batch = make_batch()
    for m in (eager, compiled):
        m.train(False)
    a, b = eager(batch), compiled(batch)
    torch.testing.assert_close(b.probs(), a.probs(), rtol=1e-5, atol=1e-6)
    for m in (eager, compiled):
        m(batch).logits.sum().backward()
    for (name, p), (_, q) in zip(eager.named_parameters(), compiled.named_parameters(),
                                 strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_mixed_precision_trains(tmp_path: Path) -> None:
    """``trainer.precision=bf16-mixed`` (the GPU setting) runs the whole step under autocast."""
    pl_module = module(answers=[f"a{i}" for i in range(C)])
    before = [p.detach().clone() for p in pl_module.parameters()]
    data = ListData([make_batch(seed=s) for s in range(2)])
    fit = trainer(tmp_path, max_steps=2, num_sanity_val_steps=0, precision="bf16-mixed")
    fit.fit(pl_module, datamodule=data)
    assert torch.isfinite(fit.callback_metrics["train/loss"])
    assert all(p.dtype == torch.float32 for p in pl_module.parameters())  # fp32 master weights
    assert all(not torch.equal(a, p) for a, p in zip(before, pl_module.parameters(),
                                                     strict=True))


def test_lightning_optimizer_schedule() -> None:
    pl_module = AVMasterModule(SMALL, None, {"lr": 1e-3, "lr_step_size": 2, "lr_gamma": 0.5},
                               DIMS, num_answers=C)
    conf = pl_module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 1e-3
    for _ in range(2):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_out_of_vocabulary_labels_never_crash(tmp_path: Path) -> None:
    batch = make_batch()
    batch["label"] = torch.full((B,), -1)
    pl_module = module(num_answers=C)
    data = ListData([batch])
    trainer(tmp_path, max_steps=1, num_sanity_val_steps=0).fit(pl_module, datamodule=data)
    results = trainer(tmp_path).validate(pl_module, datamodule=data, verbose=False)
    assert results[0]["val/acc"] == 0.0


@pytest.mark.slow
def test_ddp_two_process_cpu_smoke(ddp_run: Path) -> None:
    lines = [p.read_text() for p in sorted(ddp_run.glob("rank*.txt"))]
    assert sorted(x.split()[0] for x in lines) == ["RANK0", "RANK1"]
    assert all("WORLD2" in x for x in lines)
    assert len({x.split()[2] for x in lines}) == 1  # both ranks log the same synced accuracy


def test_occlusion_matches_one_second_at_a_time_and_ignores_unseen_inputs():
    from avmaster.attribution import occlusion

    batch = {k: v[:1] for k, v in make_batch().items()}
    model, _ = build()
    model.eval()
    drops = occlusion(model, batch, target=2)
    full = model(batch).probs()[0, 2]
    for name in ("audio", "visual"):
        assert drops[name].shape == (T,) and drops[name].abs().max() > 0
        for t in (0, T - 1):  # the batched occlusion equals occluding that second alone
            one = {**batch, name: batch[name].clone()}
            one[name][0, t] = batch[name][0].mean(0)
            expected = full - model(one).probs()[0, 2]
            assert drops[name][t] == pytest.approx(float(expected), abs=1e-5)
    blind, _ = build("question_only")  # a model that never reads audio or video
    blind.eval()
    for drop in occlusion(blind, batch, target=2).values():
        assert drop.abs().max() < 1e-6  # batch-size rounding only


def test_dropout_keeps_each_element_with_probability_1_minus_p() -> None:
    """The CPU dropout mask: keep rate 1 - p for several p (within 5 standard errors over 1M
    elements at even places and 1M at odd ones), kept values scaled by 1 / (1 - p), the
    gradient is the same mask, a seed repeats it; identity in eval mode and for p = 0, zeros
    for p = 1, dtype kept."""
    from avmaster.models.blocks import Dropout

    n, p = 2_000_001, 0.1
    for q in (p, 0.5, 0.73):
        kept = (Dropout(q)(torch.ones(n)) != 0).double()
        for half in (kept[0::2], kept[1::2]):
            assert abs(half.mean().item() - (1 - q)) < 5 * (q * (1 - q) / half.numel()) ** 0.5
    x = torch.ones(n, requires_grad=True)
    torch.manual_seed(0)
    y = Dropout(p)(x)
    assert Dropout(p)(torch.ones(3, 5, 7)).shape == (3, 5, 7)
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())
    torch.manual_seed(0)
    torch.testing.assert_close(Dropout(p)(x.detach()), y.detach())
    assert Dropout(p)(x.detach().bfloat16()).dtype == torch.bfloat16
    assert torch.equal(Dropout(p).eval()(x), x)
    assert torch.equal(Dropout(0.0)(x), x)
    assert not Dropout(1.0)(x).any()


def test_cpu_attention_backend_matches_the_default_kernel_under_bf16(monkeypatch) -> None:
    """Under bf16 on CPU, attention over several queries uses SDPA's math backend (faster
    there); outputs and input gradients agree with the default kernel to bf16 precision."""
    from avmaster.models import blocks

    torch.manual_seed(0)
    attn = blocks.Attention(64, 4)
    x = torch.randn(2, 12, 64)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 8:] = False
    results = []
    for backend in (blocks.cpu_attention_backend, lambda q: contextlib.nullcontext()):
        monkeypatch.setattr(blocks, "cpu_attention_backend", backend)
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", torch.bfloat16):
            out = attn(xi, mask=mask)
        out.float().square().sum().backward()
        results.append((out.float(), xi.grad))
    monkeypatch.undo()
    assert not isinstance(blocks.cpu_attention_backend(x.bfloat16()), contextlib.nullcontext)
    assert isinstance(blocks.cpu_attention_backend(x), contextlib.nullcontext)
    assert not isinstance(blocks.cpu_attention_backend(x, few_tokens=True),
                          contextlib.nullcontext)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05 * b.abs().max().item())


# -- deferred weight gradients of the focus recurrence -----------------------------------------


def _outputs_and_grads(model: AVMaster, loss_cfg: LossConfig, batch, precision: str = "32",
                       retain: bool = False):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16-mixed"):
        out = model(batch)
        loss = AVMasterLoss(loss_cfg)(out, batch["label"])["loss"]
    loss.backward(retain_graph=retain)
    if retain:
        loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return [t.to(torch.promote_types(t.dtype, torch.float32)) for t in output_tensors(out)], grads


@pytest.mark.parametrize(("share", "flush_rows"), [("attention", 20), ("none", 1024)])
def test_deferred_weight_grads_equal_plain_autograd(share: str, flush_rows: int,
                                                    monkeypatch) -> None:
    """Same outputs and every parameter's gradient as the plain eager reference (fp32), also
    when a retained graph is back-propagated twice; reduced in chunks of two uses or at once."""
    monkeypatch.setattr(deferred, "FLUSH_ROWS", flush_rows)
    batch = make_batch(seed=3)
    model, loss_cfg = build(share=share, deferred_weight_grads=True, focus_scan="autograd")
    reference = copy.deepcopy(model)
    for step in reference.focus.steps:
        step.deferred_weight_grads = False
    assert all(step.deferred_weight_grads for step in model.focus.steps)
    for retain in (False, True):
        out, grads = _outputs_and_grads(model.train(), loss_cfg, batch, retain=retain)
        ref_out, ref_grads = _outputs_and_grads(reference.train(), loss_cfg, batch, retain=retain)
        for a, b in zip(out, ref_out, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert grads.keys() == ref_grads.keys()
        assert all(g is not None for g in grads.values())
        for name, g in grads.items():
            torch.testing.assert_close(g, ref_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_deferred_weight_grads_under_bf16_autocast() -> None:
    """bf16 autocast on CPU: deferred and plain gradients agree to bf16 precision."""
    batch = make_batch(seed=4)
    model, loss_cfg = build(deferred_weight_grads=True, focus_scan="autograd")
    reference = copy.deepcopy(model)
    reference.focus.steps[0].deferred_weight_grads = False
    _, grads = _outputs_and_grads(model.train(), loss_cfg, batch, "bf16-mixed")
    _, ref_grads = _outputs_and_grads(reference.train(), loss_cfg, batch, "bf16-mixed")
    for name, g in grads.items():
        assert g.dtype == torch.float32, name
        scale = ref_grads[name].abs().max().item()
        torch.testing.assert_close(g, ref_grads[name], rtol=0, atol=0.05 * scale, msg=name)


# -- the focus recurrence written out (model.focus_scan=manual, the default) --------------------


def _with_scan(model: AVMaster, scan: str) -> AVMaster:
    model = copy.deepcopy(model)
    for step in model.focus.steps:
        step.scan_impl = scan
    return model


@pytest.mark.parametrize(("share", "update", "flush_rows", "packed"),
                         [("attention", "replace", 20, True), ("none", "gated", 20, True),
                          ("bias", "replace", 1024, True), ("attention", "gated", 20, False)])
def test_manual_focus_scan_equals_plain_autograd(share: str, update: str, flush_rows: int,
                                                 packed: bool, monkeypatch) -> None:
    """Outputs, focus maps and every parameter's gradient equal the step-by-step autograd
    reference in float32, also with the weight gradients reduced in chunks of 2-3 seconds (the
    last one partial) and with ``F.linear`` instead of oneDNN's packed weights (other devices);
    without gradients the forward pass gives the same outputs."""
    monkeypatch.setattr(focus_scan, "CHUNK_ROWS_FP32", flush_rows)
    if not packed:
        monkeypatch.setattr(focus_scan, "_pack", lambda weight, rows: None)
    batch = make_batch(seed=6)
    model, loss_cfg = build(share=share, focus_update=update)
    assert all(step.scan_impl == "manual" for step in model.focus.steps)
    if update == "gated":
        with torch.no_grad():
            for step in model.focus.steps:
                step.gate.normal_()
    reference = _with_scan(model, "autograd")
    out, grads = _outputs_and_grads(model.train(), loss_cfg, batch)
    ref_out, ref_grads = _outputs_and_grads(reference.train(), loss_cfg, batch)
    for a, b in zip(out, ref_out, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    assert all(g is not None for g in grads.values())
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        for a, b in zip(outputs_of(model.eval(), batch), outputs_of(reference.eval(), batch),
                        strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_manual_focus_scan_refuses_a_second_backward_with_the_fix() -> None:
    """Its activations are freed in the first backward pass: a retained graph's second
    backward names the setting that supports it; an expanded output gradient works."""
    batch = make_batch(seed=9)
    model, _ = build()
    reference = _with_scan(model, "autograd")
    torch.manual_seed(0)
    weights = torch.randn(B, SMALL.template_len, SMALL.dim)
    losses = []
    for m in (model, reference):
        out = m.train()(batch)  # visual: an expanded (stride-0) output gradient
        losses.append((out.audio_focus * weights).sum() + out.visual_focus.sum())
        losses[-1].backward(retain_graph=True)
    for (name, p), q in zip(model.focus.named_parameters(), reference.focus.parameters(),
                            strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(RuntimeError, match="focus_scan=autograd"):
        losses[0].backward()


def test_manual_focus_scan_equals_autograd_in_float64() -> None:
    """In float64 the two implementations agree to 1e-10: the same math, not just close."""
    batch = {k: v.double() if v.is_floating_point() else v for k, v in make_batch(seed=8).items()}
    model, loss_cfg = build(focus_update="gated")
    model = model.double()
    out, grads = _outputs_and_grads(model.train(), loss_cfg, batch)
    ref_out, ref_grads = _outputs_and_grads(_with_scan(model, "autograd").train(), loss_cfg,
                                            batch)
    assert out[0].dtype == torch.float64  # the logits (focus maps are float32 in both)
    assert all(g.dtype == torch.float64 for g in grads.values())
    for a, b in zip(out, ref_out, strict=True):
        tol = 1e-10 if a.dtype == torch.float64 else 1e-6  # maps: float32 from float64 norms
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * 1e-2)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-9, atol=1e-12, msg=name)


def test_manual_focus_scan_under_bf16_autocast_is_as_accurate_as_autograd(monkeypatch) -> None:
    """Under bf16 autocast the written-out recurrence (weight gradients in chunks of two
    seconds) is as close to a float64 reference as autograd's bf16 run, outputs and gradients
    (it keeps its attention core in float32)."""
    monkeypatch.setattr(focus_scan, "CHUNK_ROWS", 20)
    batch = make_batch(seed=7)
    model, loss_cfg = build()
    exact = _with_scan(model, "autograd").double()
    exact_out, exact_grads = _outputs_and_grads(
        exact.train(), loss_cfg, {k: v.double() if v.is_floating_point() else v
                                  for k, v in batch.items()})
    results = {}
    for scan in ("manual", "autograd"):
        out, grads = _outputs_and_grads(_with_scan(model, scan).train(), loss_cfg, batch,
                                        "bf16-mixed")
        assert all(g.dtype == torch.float32 for g in grads.values())
        flat = torch.cat([g.flatten().double() for g in grads.values()])
        exact_flat = torch.cat([exact_grads[n].flatten() for n in grads])
        results[scan] = (max(((a.double() - b).norm() / b.norm()).item()
                             for a, b in zip(out, exact_out, strict=True)),
                         ((flat - exact_flat).norm() / exact_flat.norm()).item())
    (out_err, grad_err), (ref_out_err, ref_grad_err) = results["manual"], results["autograd"]
    assert 0 < out_err <= 1.5 * ref_out_err + 1e-3
    assert 0 < grad_err <= 1.5 * ref_grad_err + 1e-3


def test_gated_focus_update_is_an_option_that_learns_and_reduces_to_the_paper() -> None:
    """``model.focus_update=gated``: one learned rate per channel and focus step; with the rate
    at 1 it is the paper's recurrence exactly; the default builds no gate at all."""
    batch = make_batch(seed=5)
    paper, _ = build()
    assert not any("gate" in n for n, _ in paper.named_parameters())
    gated, loss_cfg = build(focus_update="gated")
    assert {n for n, _ in gated.named_parameters() if "gate" in n} == {"focus.steps.0.gate"}
    gated.load_state_dict(paper.state_dict(), strict=False)
    paper.eval(), gated.eval()
    with torch.no_grad():
        assert not torch.allclose(gated(batch).audio_focus, paper(batch).audio_focus)
        gated.focus.steps[0].gate.fill_(float("inf"))  # rate 1: each step replaces the state
        torch.testing.assert_close(gated(batch).audio_focus, paper(batch).audio_focus)
        gated.focus.steps[0].gate.zero_()
    assert_every_parameter_learns(gated.train(), loss_cfg, batch)
    with pytest.raises(ValueError, match="focus_update must be one of"):
        ModelConfig(focus_update="sometimes")
