"""The batch: what the dataset yields and the model reads, named once."""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor


class Batch(TypedDict, total=False):
    """One batch of B questions (features in their stored dtype until the LightningModule's
    transfer hook makes them float32). ``options`` only for multiple choice; ``label``,
    ``group`` and ``index`` only where the questions come from a dataset."""

    visual: Tensor  # [B, T, Dv] one feature per second
    audio: Tensor  # [B, T, Da]
    question: Tensor  # [B, Dq] sentence feature
    question_tokens: Tensor  # [B, L, Dq] word features
    question_mask: Tensor  # [B, L] bool, True at real words
    options: Tensor  # [B, K, Dq] sentence features of the options
    label: Tensor  # [B] answer (or option) index; NO_LABEL where there is none
    group: Tensor  # [B] the question's group in the dataset's table
    index: Tensor  # [B] the question's row in the dataset
