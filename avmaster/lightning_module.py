"""LightningModule around :class:`~avmaster.models.AVMaster`: losses, optimiser, metrics, predict.

Hyperparameters are saved as plain values (configs as dicts, feature dims, answer count and
vocabulary), so ``AVMasterModule.load_from_checkpoint(path)`` rebuilds the model with no other
input. Evaluation predicts ``argmax`` of the sum of the paths' softmaxes; it is scored per question
type by the table of ``trainer.datamodule.spec`` when the datamodule has one
(:class:`~avmaster.metrics.GroupedAccuracy`), otherwise by plain answer accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from avmaster.data.batch import Batch
from avmaster.data.vocab import NO_LABEL
from avmaster.losses import AVMasterLoss
from avmaster.metrics import GroupedAccuracy
from avmaster.models.avmaster import AVMaster, AVMasterOutput, as_dims
from avmaster.models.combine import top_answers
from avmaster.models.config import (
    FeatureDims,
    InferenceConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    to_dataclass,
)
from avmaster.step_graph import CUDARecorder, Recorder, StepGraph

TOP_K = 5  # answers kept per question by predict (and written to predictions files)
TOP_KEY = "top5"  # their key in predict outputs and predictions files (a stable file format)
PATH_PREFIX = "path/"  # predict_step's per-path softmax keys
EVAL_STAGES = ("val", "test")
FUSED_ADAM_DEVICES = ("cpu", "cuda")


def build_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: OptimConfig, capturable: bool = False
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.StepLR]:
    """Adam (the fused kernel where the parameters' device has one) and its StepLR;
    ``capturable``: its step may be recorded in a CUDA graph (the learning rate is then fixed
    at capture)."""
    params = [p for p in params if p.requires_grad]
    fused = all(p.device.type in FUSED_ADAM_DEVICES for p in params)
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused,
                           capturable=capturable)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_size, gamma=cfg.lr_gamma)
    return opt, sched


class AnswerAccuracy(Metric):
    """Percent of correct predictions; labels equal to :data:`NO_LABEL` always count as wrong."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, label: Tensor, group: Tensor | None = None) -> None:
        self.correct += ((pred == label) & (label != NO_LABEL)).sum()
        self.total += label.numel()

    def compute(self) -> dict[str, float]:
        return {"acc": 100.0 * self.correct.item() / max(self.total.item(), 1)}


class AVMasterModule(L.LightningModule):
    """Trains and evaluates AV-Master.

    ``model_cfg`` / ``loss_cfg`` / ``optim_cfg``: dataclasses, mappings or OmegaConf configs
    (defaults when ``None``); ``dims``: ``{"visual", "audio", "text"}`` feature sizes;
    ``num_answers``: C (``len(answers)`` when 0 and ``answers`` given); ``answers``: the answer
    vocabulary, kept for decoding predictions; ``multiple_choice``: score ``batch["options"]``.
    """

    @classmethod
    def from_checkpoint(cls, contents: Mapping[str, Any], map_location: str | torch.device = "cpu"
                        ) -> AVMasterModule:
        """The module held by a checkpoint's ``contents`` (already read, e.g. by
        :func:`~avmaster.checkpoints.read_checkpoint`): what ``load_from_checkpoint`` does,
        without reading the file a second time."""
        module = cls(**contents["hyper_parameters"])
        module.on_load_checkpoint(dict(contents))
        module.load_state_dict(contents["state_dict"])
        return module.to(map_location)

    def __init__(
        self,
        model_cfg: ModelConfig | Mapping[str, Any] | None = None,
        loss_cfg: LossConfig | Mapping[str, Any] | None = None,
        optim_cfg: OptimConfig | Mapping[str, Any] | None = None,
        dims: FeatureDims | Mapping[str, int] | None = None,
        num_answers: int = 0,
        answers: list[str] | None = None,
        multiple_choice: bool = False,
    ):
        super().__init__()
        model_cfg = to_dataclass(ModelConfig, model_cfg)
        loss_cfg = to_dataclass(LossConfig, loss_cfg)
        optim_cfg = to_dataclass(OptimConfig, optim_cfg)
        dims = as_dims(dims)
        answers = None if answers is None else [str(a) for a in answers]
        if answers is not None and not multiple_choice:
            if num_answers and num_answers != len(answers):
                raise ValueError(f"num_answers={num_answers} but {len(answers)} answers given")
            num_answers = len(answers)
        self.save_hyperparameters(
            {
                "model_cfg": asdict(model_cfg),
                "loss_cfg": asdict(loss_cfg),
                "optim_cfg": asdict(optim_cfg),
                "dims": asdict(dims),
                "num_answers": int(num_answers),
                "answers": answers,
                "multiple_choice": bool(multiple_choice),
            }
        )
        self.model = AVMaster(model_cfg, dims, num_answers, multiple_choice, loss_cfg)
        self.criterion = AVMasterLoss(loss_cfg)
        self.optim_cfg = optim_cfg
        self.answers = answers
        self.inference = InferenceConfig()  # how evaluation and prediction combine the paths
        self.metrics = nn.ModuleDict()  # per evaluation stage; made in setup()
        self.step_graph: StepGraph | None = None  # see use_step_graph()

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Features travel in their stored dtype (float16: half the copy and transfer cost);
        they become float32 on the device (mixed precision then casts as it needs)."""
        return Batch(**{k: v.float() if v.is_floating_point() else v for k, v in batch.items()})

    def forward(self, batch: Batch) -> AVMasterOutput:
        return self.model(batch, readout_step=self.inference.readout_step)

    # -- training --------------------------------------------------------------------------
    def use_step_graph(self, recorder: Callable[[], Recorder] = CUDARecorder) -> StepGraph:
        """Train with each step's forward, losses and backward recorded once as a CUDA graph
        and replayed (:mod:`avmaster.step_graph`; ``cuda_graph=true``). The optimiser step,
        its schedule and Lightning's hooks stay as they are, except that :meth:`backward` and
        :meth:`optimizer_zero_grad` leave the gradients to the graph."""
        self.step_graph = StepGraph(self.model, self._losses, recorder)
        return self.step_graph

    def _losses(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        return self.criterion(model(batch), batch["label"])

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        if self.step_graph is not None:
            losses = self.step_graph(batch)
        else:
            losses = self._losses(self.model, batch)
        self._log_losses("train", losses, batch["label"].shape[0])
        return losses["loss"]

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        if self.step_graph is None:  # with a step graph the training step ran backward itself
            super().backward(loss, *args, **kwargs)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        if self.step_graph is None:  # a step graph overwrites (or zeroes) the gradients
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def configure_optimizers(self) -> dict[str, Any]:
        opt, sched = build_optimizer(self.parameters(), self.optim_cfg)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def _log_losses(self, stage: str, losses: Mapping[str, Tensor], batch_size: int) -> None:
        on_step = stage == "train"
        values = {f"{stage}/loss_{k}": v.detach() for k, v in losses.items() if k != "loss"}
        self.log(f"{stage}/loss", losses["loss"].detach(), prog_bar=True, on_step=on_step,
                 on_epoch=not on_step, batch_size=batch_size, sync_dist=not on_step)
        self.log_dict(values, on_step=on_step, on_epoch=not on_step, batch_size=batch_size,
                      sync_dist=not on_step)

    # -- evaluation ------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """One metric per evaluation stage, made before Lightning moves the module to its
        device (so the metrics move with it); torchmetrics states are not checkpointed."""
        spec = getattr(getattr(self.trainer, "datamodule", None), "spec", None)
        for name in EVAL_STAGES:
            if name not in self.metrics:
                self.metrics[name] = GroupedAccuracy(spec) if spec is not None else AnswerAccuracy()

    def _eval_step(self, batch: Batch, stage: str) -> Tensor:
        out = self(batch)
        label = batch["label"]
        self._log_losses(stage, self.criterion(out, label), label.shape[0])
        pred = out.pred(self.inference)
        group = batch.get("group")
        group = torch.zeros_like(label) if group is None else group
        self.metrics[stage].update(pred, label, group)
        return pred

    def _eval_epoch_end(self, stage: str) -> None:
        metric = self.metrics[stage]
        if not metric.update_called:
            return
        values = metric.compute()  # torchmetrics syncs the states across processes
        metric.reset()
        prefix = f"{stage}/"
        # the values are already global and equal on every rank: sync_dist only averages equal
        # numbers (and keeps Lightning from warning about unsynced epoch-level logs)
        self.log_dict(
            {(k if k.startswith(prefix) else prefix + k): float(v) for k, v in values.items()},
            sync_dist=True,
        )

    def validation_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """``pred [B]``, ``top5 [B, k]`` answer indices with ``top5_prob [B, k]`` (the paths'
        softmaxes combined by :attr:`inference`; k = min(TOP_K, C); the keys are
        :data:`TOP_KEY`), each path's softmax as ``path/<name> [B, C]``, and the batch's
        ``index``, ``label`` and ``group``."""
        out = self(batch)
        probs = out.probs(self.inference)
        values, indices = top_answers(probs, min(TOP_K, probs.shape[-1]))
        result = {"pred": indices[:, 0], TOP_KEY: indices, f"{TOP_KEY}_prob": values}
        result.update({f"{PATH_PREFIX}{k}": v for k, v in out.path_probs().items()})
        result.update({k: batch[k] for k in ("index", "label", "group") if k in batch})
        return result
