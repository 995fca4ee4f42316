"""Reward models: score (prompt chat, response) pairs and normalise the scores per prompt.

The library half of issue 9's reward ranking; see :mod:`scoring.rewards.scorer` for the rules
(chat rendering, truncation, token-budget batching, per-process model cache). Importing this
package does not import torch or transformers: that happens when a scorer is constructed.
"""

from scoring.batching import DEFAULT_MAX_TOKENS_PER_BATCH

from .scorer import (
    Encoded,
    RewardInput,
    RewardModelError,
    RewardResult,
    RewardScorer,
    clear_cache,
    load_count,
    normalise_per_prompt,
)

__all__ = [
    "DEFAULT_MAX_TOKENS_PER_BATCH",
    "Encoded",
    "RewardInput",
    "RewardModelError",
    "RewardResult",
    "RewardScorer",
    "clear_cache",
    "load_count",
    "normalise_per_prompt",
]
