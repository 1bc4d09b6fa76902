"""Autocast queries that also hold on devices without autocast (e.g. ``meta``)."""

from __future__ import annotations

import contextlib

import torch


def autocast_dtype(device: str) -> torch.dtype | None:
    """The dtype autocast casts matrix products to on ``device``, or ``None`` when it is off
    (or the device has no autocast)."""
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def no_autocast(device: str) -> contextlib.AbstractContextManager:
    """Autocast off on ``device`` (nothing to do where autocast does not exist)."""
    if torch.amp.is_autocast_available(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()
