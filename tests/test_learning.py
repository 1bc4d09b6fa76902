"""Learning test: answers that depend on WHEN an event happens and in WHICH modality.

Every video has one audio event (a fixed direction added to the audio features at a random
second) and one visual event (likewise, at another second), over unit Gaussian noise. Questions
(their word and sentence features encode the type):

0. "Does the audio event come before the visual one?"              yes / no
1. "Which modality has its event in the first half?"               audio / visual
2. "Is the audio event in the first half?"                         yes / no

Nothing but the order of the seconds separates the answers, and the model has no positional
encodings: only the AVFC recurrence sees order. A question-only model and the w/o TDPP ablation
(GPAP only: permutation-invariant over seconds) must stay near chance (50%), while the full
model must learn all three types; shuffling the seconds of the test videos must break it. The
margins fail whenever the recurrence stops carrying temporal information (the order-blind w/o
AVFC ablation, trained the same way, also stays at chance).
"""

from __future__ import annotations

import pytest
import torch

from avmaster.config import preset_configs
from avmaster.lightning_module import build_optimizer
from avmaster.losses import AVMasterLoss
from avmaster.models import AVMaster, FeatureDims, ModelConfig, OptimConfig

T = 6
DIMS = FeatureDims(visual=16, audio=12, text=16)
WORDS = 4
YES, NO, AUDIO, VISUAL = range(4)
N_ANSWERS, N_TYPES = 4, 3
EVENT_NORM = 1.5  # event strength in units of the noise's norm
STEPS, BATCH, LR = 200, 64, 3e-3
N_TRAIN, N_TEST = 2048, 512
MIN_FULL_ACC, MIN_MARGIN = 0.75, 0.25  # chance is 0.5


pytestmark = pytest.mark.usefixtures("single_thread")


def event_times(qtype: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct seconds for the audio and visual events; for type 1 exactly one of them falls
    in the first half."""
    n, half = len(qtype), T // 2
    t_a, t_v = torch.empty(n, dtype=torch.long), torch.empty(n, dtype=torch.long)
    todo = torch.ones(n, dtype=torch.bool)
    while todo.any():
        m = int(todo.sum())
        t_a[todo] = torch.randint(0, T, (m,), generator=g)
        t_v[todo] = torch.randint(0, T, (m,), generator=g)
        bad = (t_a == t_v) | ((qtype == 1) & ((t_a < half) == (t_v < half)))
        todo = bad
    return t_a, t_v


def make_data(n: int, seed: int) -> dict[str, torch.Tensor]:
    proto = torch.Generator().manual_seed(1234)  # shared by every split
    e_a, e_v = torch.randn(DIMS.audio, generator=proto), torch.randn(DIMS.visual, generator=proto)
    e_a = EVENT_NORM * DIMS.audio**0.5 * e_a / e_a.norm()
    e_v = EVENT_NORM * DIMS.visual**0.5 * e_v / e_v.norm()
    type_words = torch.randn(N_TYPES, WORDS, DIMS.text, generator=proto)
    type_sentence = torch.randn(N_TYPES, DIMS.text, generator=proto)

    g = torch.Generator().manual_seed(seed)
    qtype = torch.randint(0, N_TYPES, (n,), generator=g)
    t_a, t_v = event_times(qtype, g)
    rows = torch.arange(n)
    audio = torch.randn(n, T, DIMS.audio, generator=g)
    visual = torch.randn(n, T, DIMS.visual, generator=g)
    audio[rows, t_a] += e_a
    visual[rows, t_v] += e_v
    first_half = t_a < T // 2
    label = torch.stack((
        torch.where(t_a < t_v, YES, NO),
        torch.where(first_half, AUDIO, VISUAL),
        torch.where(first_half, YES, NO),
    ))[qtype, rows]
    mask = torch.arange(WORDS)[None] < torch.randint(2, WORDS + 1, (n, 1), generator=g)
    tokens = type_words[qtype] + 0.1 * torch.randn(n, WORDS, DIMS.text, generator=g)
    return {
        "visual": visual,
        "audio": audio,
        "question_tokens": tokens * mask[..., None],
        "question_mask": mask,
        "question": type_sentence[qtype] + 0.1 * torch.randn(n, DIMS.text, generator=g),
        "label": label,
        "qtype": qtype,
    }


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return make_data(N_TRAIN, seed=1), make_data(N_TEST, seed=2)


def accuracy(model: AVMaster, test: dict[str, torch.Tensor]) -> list[float]:
    """Accuracy per question type."""
    model.eval()
    with torch.no_grad():
        hit = model(test).pred() == test["label"]
    return [hit[test["qtype"] == q].float().mean().item() for q in range(N_TYPES)]


def shuffle_seconds(batch: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The same videos with their seconds in a random order (labels kept)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(batch["audio"].shape[:2], generator=g).argsort(dim=1)
    out = dict(batch)
    for key in ("audio", "visual"):
        out[key] = batch[key].gather(1, order[..., None].expand_as(batch[key]))
    return out


def train(name: str, data, seed: int = 0) -> AVMaster:
    """Train the preset ``name`` with Adam on the training split."""
    train, _ = data
    base = ModelConfig(dim=32, heads=4, template_len=4, decoder_depth=1, dropout=0.0)
    cfg, loss_cfg = preset_configs(name, base)
    torch.manual_seed(seed)
    model = AVMaster(cfg, DIMS, N_ANSWERS)
    criterion = AVMasterLoss(loss_cfg)
    opt, _ = build_optimizer(model.parameters(), OptimConfig(lr=LR))
    g = torch.Generator().manual_seed(seed)
    for _ in range(STEPS):
        idx = torch.randint(0, N_TRAIN, (BATCH,), generator=g)
        batch = {k: v[idx] for k, v in train.items()}
        loss = criterion(model(batch), batch["label"])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model


def test_synthetic_data_is_balanced(data) -> None:
    train, _ = data
    for q in range(N_TYPES):
        labels = train["label"][train["qtype"] == q]
        assert 0.4 < labels.eq(labels.min()).float().mean().item() < 0.6


@pytest.mark.slow
def test_full_model_learns_when_and_which_modality(data) -> None:
    test = data[1]
    model = train("full", data)
    full = accuracy(model, test)
    shuffled = accuracy(model, shuffle_seconds(test, seed=3))
    question_only = accuracy(train("question_only", data), test)
    wo_tdpp = accuracy(train("wo_tdpp", data), test)
    report = f"full={full} shuffled={shuffled} question_only={question_only} wo_tdpp={wo_tdpp}"
    mean = lambda acc: sum(acc) / len(acc)  # noqa: E731
    assert min(full) >= MIN_FULL_ACC, report
    assert mean(full) - mean(question_only) >= MIN_MARGIN, report
    assert mean(full) - mean(wo_tdpp) >= MIN_MARGIN, report
    for q in range(N_TYPES):  # every temporal question type, not just on average
        assert full[q] - max(question_only[q], wo_tdpp[q]) >= MIN_MARGIN / 2, report
    # the full model answers from the order of the seconds: shuffling them breaks it
    assert mean(full) - mean(shuffled) >= MIN_MARGIN, report

