"""Reward-model scoring with transformers: one scalar per (prompt chat, response).

A reward model here is any checkpoint that ``AutoModelForSequenceClassification`` loads with
exactly one label (Skywork-Reward-V2, the Qwen/Llama reward models, ...). For each sample the
scorer builds the chat ``prompt messages + [{"role": "assistant", "content": response}]``
(the reasoning, when ``include_reasoning`` is set, goes first inside ``<think>…</think>``),
renders it with the tokenizer's own chat template and tokenizes the text **without adding
special tokens again** (the template already writes any BOS; adding it twice shifts every score).

**Truncation.** The limit is the smaller of ``config.max_position_embeddings`` and
``tokenizer.model_max_length`` (values above 10M are tokenizers' "unset" sentinels and ignored),
optionally lowered by ``max_length``. An over-long sample is cut from the **left of the prompt
part** (just after a leading BOS, which is kept) so that the whole response survives; if the
response alone does not fit, the sequence is cut from the **right** instead (the reward model then
sees the start of the chat and the start of the response). Either way ``truncated`` is set and
``tokens`` is the length actually scored.

**Batching** (scoring.batching, shared with attestation). Samples are sorted by token length
(longest first) and grouped so that each batch's padded size, ``longest * batch_size``, stays
within ``max_tokens_per_batch`` (default per device: ``DEFAULT_MAX_TOKENS_PER_BATCH``); a sample
longer than the budget runs alone. Padding is on the right with an attention mask; the model
pools the last non-pad token, as transformers' ``*ForSequenceClassification`` does, so a padded
row scores as it would alone (checked by the tests to 1e-4 in float32). Results come back in
input order.

**Loading.** Models are cached per process, keyed by ``(model, device, dtype)``: constructing a
``RewardScorer`` again (every Celery task does) reuses the loaded weights. bf16 on CUDA, float32 on
CPU unless ``dtype`` says otherwise. Local paths work with ``HF_HUB_OFFLINE=1``; ids need the
checkpoint in the local Hugging Face cache when offline.

Known limit: the rendered chat is tokenized as text, so special-token strings written literally in
a response (``<|im_end|>``) are parsed as special tokens, as they are by every chat-template user.

Raw scores are only comparable between responses to the same prompt: see
:func:`scoring.rewards.normalise_per_prompt`.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scoring.batching import by_token_budget, default_budget

log = logging.getLogger("thinkpool.scoring.rewards")

# tokenizer.model_max_length is 1e30 when a checkpoint does not set it: not a limit.
_SANE_MAX_LENGTH = 10_000_000


class RewardModelError(Exception):
    """The reward model cannot be loaded or used (missing extra, no chat template, not 1 label)."""


@dataclass(frozen=True)
class RewardInput:
    """One sample to score: ``messages`` is the prompt's chat (``[{"role", "content"}, ...]``,
    without the answer), ``response`` the final answer, ``reasoning`` its chain of thought."""

    key: Hashable
    messages: Sequence[Mapping[str, str]]
    response: str
    reasoning: str | None = None


@dataclass(frozen=True)
class RewardResult:
    key: Hashable
    raw: float
    tokens: int  # tokens scored (after truncation)
    truncated: bool


@dataclass(frozen=True)
class Encoded:
    """A sample's token ids as scored, with how many of them belong to the prompt part."""

    ids: list[int]
    prompt_tokens: int
    truncated: bool


# --- the per-process model cache ------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_loads = 0


def load_count() -> int:
    """How many times this process has loaded a reward model from disk (tests, monitoring)."""
    return _loads


def clear_cache() -> None:
    """Drop every cached model (tests; a worker that switches models for good)."""
    global _loads
    with _cache_lock:
        _cache.clear()
        _loads = 0


def _require_models_extra() -> None:
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise RewardModelError(
            f"reward scoring needs {' and '.join(missing)}: install `thinkpool[models]`"
        )


def _pick_device(torch: Any, device: str | None) -> str:
    if device and device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _pick_dtype(torch: Any, device: str, dtype: Any) -> Any:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise RewardModelError(f"unknown dtype {dtype!r}; try bfloat16, float16 or float32")
        return resolved
    if not isinstance(dtype, torch.dtype):
        raise RewardModelError(f"dtype must be a torch.dtype or its name, not {dtype!r}")
    return dtype


def _load(model_id: str, device: str, dtype: Any) -> tuple[Any, Any]:
    global _loads
    key = (model_id, device, str(dtype))
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            return hit
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(model_id)
            model = AutoModelForSequenceClassification.from_pretrained(model_id, dtype=dtype)
        except OSError as exc:
            raise RewardModelError(
                f"cannot load reward model {model_id!r} ({str(exc).splitlines()[0]}); pass a local "
                "path or a Hugging Face id present in the local cache"
            ) from exc
        if model.config.num_labels != 1:
            raise RewardModelError(
                f"{model_id!r} has {model.config.num_labels} labels; a reward model has one"
            )
        if not getattr(tokenizer, "chat_template", None):
            raise RewardModelError(f"{model_id!r} has no chat template")
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise RewardModelError(f"{model_id!r} has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            # transformers pools the last non-pad token, and refuses batches without a pad id.
            model.config.pad_token_id = tokenizer.pad_token_id
        tokenizer.padding_side = "right"
        model = model.to(device)
        model.eval()
        _loads += 1
        log.info("loaded reward model %s on %s (%s)", model_id, device, str(dtype).split(".")[-1])
        _cache[key] = (model, tokenizer)
        return model, tokenizer


# --- the scorer -----------------------------------------------------------------------------------


class RewardScorer:
    """Scores samples with one reward model; cheap to construct once the model is cached."""

    def __init__(
        self,
        model_path_or_id: str,
        *,
        version: int,
        device: str | None = None,
        dtype: Any = None,
        max_tokens_per_batch: int | None = None,
        include_reasoning: bool = False,
        max_length: int | None = None,
    ) -> None:
        if max_tokens_per_batch is not None and max_tokens_per_batch < 1:
            raise ValueError("max_tokens_per_batch must be at least 1")
        if max_length is not None and max_length < 2:
            raise ValueError("max_length must be at least 2")
        _require_models_extra()
        import torch

        self.torch = torch
        self.model_id = str(model_path_or_id)
        self.version = version
        self.device = _pick_device(torch, device)
        self.dtype = _pick_dtype(torch, self.device, dtype)
        self.max_tokens_per_batch = max_tokens_per_batch or default_budget(self.device)
        self.include_reasoning = include_reasoning
        self.model, self.tokenizer = _load(self.model_id, self.device, self.dtype)
        self.max_length = self._model_limit(max_length)
        bos = self.tokenizer.bos_token_id
        self._bos_id: int | None = bos if isinstance(bos, int) else None

    def _model_limit(self, cap: int | None) -> int:
        limits = [
            int(v)
            for v in (
                getattr(self.model.config, "max_position_embeddings", None),
                getattr(self.tokenizer, "model_max_length", None),
                cap,
            )
            if isinstance(v, int | float) and 1 < v < _SANE_MAX_LENGTH
        ]
        if not limits:
            raise RewardModelError(f"{self.model_id!r} states no sane maximum sequence length")
        return min(limits)

    def details(self) -> dict[str, Any]:
        """What to record next to the scores (model, version, limits, device)."""
        return {
            "model": self.model_id,
            "version": self.version,
            "max_length": self.max_length,
            "include_reasoning": self.include_reasoning,
            "device": self.device,
            "dtype": str(self.dtype).split(".")[-1],
        }

    # --- rendering and tokenization ---------------------------------------------------------------

    def chat(self, item: RewardInput) -> list[dict[str, str]]:
        """The chat the reward model judges: prompt messages + the assistant's answer."""
        _validate(item)
        content = item.response
        if self.include_reasoning and item.reasoning:
            content = f"<think>\n{item.reasoning.strip()}\n</think>\n\n{item.response}"
        return [
            *({"role": m["role"], "content": m["content"]} for m in item.messages),
            {"role": "assistant", "content": content},
        ]

    def encode(self, item: RewardInput) -> Encoded:
        """Token ids as they will be scored (rendered, tokenized once, truncated)."""
        chat = self.chat(item)
        text = str(self.tokenizer.apply_chat_template(chat, tokenize=False))
        prefix = str(
            self.tokenizer.apply_chat_template(
                chat[:-1], tokenize=False, add_generation_prompt=True
            )
        )
        ids, prompt_tokens = self._tokenize(text, prefix)
        return self._truncate(ids, prompt_tokens)

    def _tokenize(self, text: str, prefix: str) -> tuple[list[int], int]:
        """Ids of ``text`` (no special tokens added) and how many lie in the prompt part.

        The prompt part is the rendered prompt with its generation header, when the full chat
        starts with it; otherwise (unusual templates) the whole sequence counts as prompt and
        truncation can only cut from the right.
        """
        boundary = len(prefix) if text.startswith(prefix) else len(text)
        if getattr(self.tokenizer, "is_fast", False):
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = list(enc["input_ids"])
            offsets = enc["offset_mapping"]
            prompt_tokens = next(
                (i for i, (start, _end) in enumerate(offsets) if start >= boundary), len(ids)
            )
            return ids, prompt_tokens
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        head = self.tokenizer(text[:boundary], add_special_tokens=False)["input_ids"]
        return ids, min(len(head), len(ids))

    def _truncate(self, ids: list[int], prompt_tokens: int) -> Encoded:
        limit = self.max_length
        if len(ids) <= limit:
            return Encoded(ids, prompt_tokens, False)
        keep_head = (
            1 if prompt_tokens and self._bos_id is not None and ids[0] == self._bos_id else 0
        )
        prompt = ids[keep_head:prompt_tokens]
        response = ids[prompt_tokens:]
        room = limit - keep_head - len(response)
        if room >= 0:
            # Cut the oldest prompt tokens (after a leading BOS); the response stays whole.
            kept = prompt[len(prompt) - room :] if room else []
            return Encoded(ids[:keep_head] + kept + response, keep_head + len(kept), True)
        # The response alone does not fit: keep the start of the chat.
        return Encoded(ids[:limit], min(prompt_tokens, limit), True)

    # --- scoring ----------------------------------------------------------------------------------

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped into batches: longest first, padded size within the token budget."""
        return by_token_budget(lengths, self.max_tokens_per_batch)

    def score(self, items: Iterable[RewardInput]) -> list[RewardResult]:
        """One result per item, in input order."""
        items = list(items)
        if not items:
            return []
        encoded = [self.encode(item) for item in items]
        raws: list[float] = [math.nan] * len(items)
        for batch in self.batches([len(e.ids) for e in encoded]):
            for i, value in zip(batch, self._forward([encoded[i].ids for i in batch]), strict=True):
                raws[i] = value
        return [
            RewardResult(item.key, raws[i], len(encoded[i].ids), encoded[i].truncated)
            for i, item in enumerate(items)
        ]

    def _forward(self, rows: list[list[int]]) -> list[float]:
        torch = self.torch
        width = max(len(r) for r in rows)
        pad = int(self.tokenizer.pad_token_id)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, ids in enumerate(rows):
            if ids:
                input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention[r, : len(ids)] = 1
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device)
            ).logits
        return [float(v) for v in logits[:, 0].float().cpu().tolist()]


def _validate(item: RewardInput) -> None:
    if not isinstance(item.response, str):
        raise ValueError(f"sample {item.key!r}: response must be a string")
    if item.reasoning is not None and not isinstance(item.reasoning, str):
        raise ValueError(f"sample {item.key!r}: reasoning must be a string or None")
    if isinstance(item.messages, str | bytes) or not item.messages:
        raise ValueError(f"sample {item.key!r}: messages must be a non-empty list of messages")
    for m in item.messages:
        if (
            not isinstance(m, Mapping)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise ValueError(
                f"sample {item.key!r}: each message needs a string 'role' and 'content'"
            )


# --- per-prompt normalisation -------------------------------------------------------------------


def normalise_per_prompt(
    results_by_prompt: Mapping[Hashable, Sequence[RewardResult | float]],
) -> dict[Hashable, list[float]]:
    """Z-scores of raw rewards within each prompt, in the order given.

    Raw scores of a reward model are only comparable between responses to the same prompt, so
    each prompt's scores are centred on their mean and divided by their population standard
    deviation. A prompt with one sample, or whose scores are all equal (to 1e-9 relative), gets
    0.0 for each. Values must be finite. The result changes as a prompt gains samples: recompute
    the prompt's values (O(samples of the prompt)) whenever a score lands.
    """
    out: dict[Hashable, list[float]] = {}
    for prompt, entries in results_by_prompt.items():
        values = [float(e.raw if isinstance(e, RewardResult) else e) for e in entries]
        if any(not math.isfinite(v) for v in values):
            raise ValueError(f"prompt {prompt!r}: reward scores must be finite")
        n = len(values)
        if n < 2:
            out[prompt] = [0.0] * n
            continue
        mean = math.fsum(values) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / n)
        scale = max(abs(v) for v in values)
        if std <= 1e-9 * max(scale, 1.0):
            out[prompt] = [0.0] * n
            continue
        out[prompt] = [(v - mean) / std for v in values]
    return out
