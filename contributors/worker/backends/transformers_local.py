"""In-process generation with transformers (the ``models`` extra).

For contributors without a serving stack: a local path or Hugging Face id, its chat template,
batched sampling (all samples of several items in one ``generate`` call, left-padded), device and
dtype picked automatically (cuda > mps > cpu; bf16/fp16 on accelerators, fp32 on CPU) unless
given. Messages go through the model's own chat template unchanged.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
import time
from typing import Any

from ..errors import BackendError, MissingExtra, ModelNotServed
from ..reasoning import split_reasoning
from . import Generation, GenRequest, OnResult, ServedModel, elapsed_ms

log = logging.getLogger("thinkpool.worker")

_SNAPSHOT = re.compile(r"/snapshots/([0-9a-f]{40})(?:/|$)")


def require_models_extra() -> None:
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(
            f"the transformers backend needs {' and '.join(missing)}, which are not installed: "
            "run `pip install 'thinkpool[models]'` (or use --backend openai with a model server)"
        )


def pick_device(torch: Any, requested: str | None) -> str:
    if requested and requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(torch: Any, device: str, requested: str | None) -> Any:
    if requested and requested != "auto":
        dtype = getattr(torch, requested, None)
        if not isinstance(dtype, torch.dtype):
            raise BackendError(f"unknown --dtype {requested!r}; try bfloat16, float16 or float32")
        return dtype
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.startswith("mps"):
        return torch.float16
    return torch.float32


class TransformersBackend:
    name = "transformers"
    max_parallel = 1  # one generate() at a time; parallelism comes from batching

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        max_batch_sequences: int = 64,
    ) -> None:
        require_models_extra()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.model_id = model
        self.device = pick_device(torch, device)
        self.dtype = pick_dtype(torch, self.device, dtype)
        self.batch_size = batch_size
        self.max_batch_sequences = max_batch_sequences
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, revision=revision)
            loaded = AutoModelForCausalLM.from_pretrained(
                model, revision=revision, dtype=self.dtype
            )
            self.model = loaded.to(self.device)  # type: ignore[arg-type]
        except OSError as exc:
            raise ModelNotServed(
                f"cannot load model '{model}' ({str(exc).splitlines()[0]}); pass a local path or "
                "a Hugging Face id you have downloaded"
            ) from exc
        self.model.eval()
        if self.tokenizer.chat_template is None:
            raise BackendError(
                f"model '{model}' has no chat template; Thinkpool prompts are chat messages"
            )
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.revision = revision or _revision_of(model, self.model)
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self._lock = threading.Lock()
        log.info("loaded %s on %s (%s)", model, self.device, str(self.dtype).split(".")[-1])

    def served_models(self) -> list[ServedModel]:
        return [ServedModel(self.model_id, self.revision)]

    def check_model(self, model: str) -> ServedModel:
        return self.served_models()[0]

    def close(self) -> None:
        pass

    def generate_batch(self, requests: list[GenRequest], on_result: OnResult) -> None:
        """All samples of ``requests`` in as few ``generate`` calls as sampling settings allow."""
        # generate() takes one temperature/top_p/max_tokens: group requests that share them.
        groups: dict[tuple[float, float, int], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.temperature, r.top_p, r.max_tokens), []).append(i)
        for (temperature, top_p, max_tokens), idxs in groups.items():
            chunk: list[int] = []
            seqs = 0
            for i in idxs:
                if chunk and seqs + requests[i].n > self.max_batch_sequences:
                    self._run(requests, chunk, temperature, top_p, max_tokens, on_result)
                    chunk, seqs = [], 0
                chunk.append(i)
                seqs += requests[i].n
            if chunk:
                self._run(requests, chunk, temperature, top_p, max_tokens, on_result)

    def _run(
        self,
        requests: list[GenRequest],
        idxs: list[int],
        temperature: float,
        top_p: float,
        max_tokens: int,
        on_result: OnResult,
    ) -> None:
        torch = self.torch
        prompts = [
            self.tokenizer.apply_chat_template(
                requests[i].messages, add_generation_prompt=True, tokenize=False
            )
            for i in idxs
        ]
        # Each prompt repeated n times: one row per sample, all sampled in one pass.
        rows = [p for i, p in zip(idxs, prompts, strict=True) for _ in range(requests[i].n)]
        owners = [i for i in idxs for _ in range(requests[i].n)]
        enc = self.tokenizer(rows, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.device)
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p}
            if temperature > 0
            else {"do_sample": False}
        )
        started = time.perf_counter()
        with self._lock, torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        ms = elapsed_ms(started)
        width = enc["input_ids"].shape[1]
        results: dict[int, list[Generation]] = {i: [] for i in idxs}
        for row, owner in enumerate(owners):
            new = out[row, width:].tolist()
            stop_at = next((k for k, t in enumerate(new) if t in self.eos_ids), None)
            tokens = new if stop_at is None else new[: stop_at + 1]
            text = str(self.tokenizer.decode(tokens, skip_special_tokens=True))
            completion, reasoning = split_reasoning(text)
            results[owner].append(
                Generation(
                    completion=completion,
                    reasoning=reasoning,
                    finish_reason="length" if stop_at is None else "stop",
                    prompt_tokens=int(prompt_lens[row]),
                    completion_tokens=len(tokens),
                    generation_ms=max(1, ms // len(owners)),
                    model=self.model_id,
                    model_revision=self.revision,
                    extra={"device": self.device, "dtype": str(self.dtype).split(".")[-1]},
                )
            )
        for i in idxs:
            on_result(i, results[i])


def _revision_of(model_id: str, model: Any) -> str | None:
    """The commit of a Hub snapshot when the weights came from the HF cache, else None."""
    for candidate in (model_id, getattr(model.config, "_name_or_path", "")):
        path = os.path.realpath(candidate) if os.path.exists(candidate) else candidate
        if m := _SNAPSHOT.search(path):
            return m.group(1)
    commit = getattr(model.config, "_commit_hash", None)
    return str(commit) if commit else None
