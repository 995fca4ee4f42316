"""Batches for a model's forward passes within a token budget (reward scoring, attestation)."""

from __future__ import annotations

from collections.abc import Sequence

# Padded tokens per forward pass when not given: on a GPU, what a ~0.5B model takes in bf16 with
# room to spare; on CPU, batches past a few thousand tokens stop paying (bench/rewards.py).
DEFAULT_MAX_TOKENS_PER_BATCH = {"cuda": 16_384, "cpu": 4_096}


def default_budget(device: str) -> int:
    """The token budget per forward pass on `device` ("cuda:1" is a cuda device)."""
    return DEFAULT_MAX_TOKENS_PER_BATCH.get(
        device.split(":")[0], DEFAULT_MAX_TOKENS_PER_BATCH["cpu"]
    )


def by_token_budget(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices of `lengths` grouped into batches, longest first, so that each batch's padded
    size (its longest times its count) stays within `budget` tokens; an item longer than the
    budget is a batch of its own. Sorting by length keeps padding small."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    out: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        n = max(lengths[i], 1)
        if current and max(width, n) * (len(current) + 1) > budget:
            out.append(current)
            current, width = [], 0
        current.append(i)
        width = max(width, n)
    if current:
        out.append(current)
    return out
