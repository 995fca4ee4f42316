"""Any OpenAI-compatible chat-completions server: vLLM, SGLang, Ollama, llama.cpp server, TGI,
LM Studio, ``transformers serve``.

``n`` > 1 is asked of the server in one request; servers that ignore it (``transformers serve``,
llama.cpp, TGI answer with one choice) are detected from the reply and the missing samples are
requested one by one. The worker sends the lease's messages unchanged.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..errors import BackendError, BackendUnreachable, ModelNotServed
from ..net import RetryPolicy, send_with_retry
from ..reasoning import split_reasoning
from . import Generation, GenRequest, OnResult, ServedModel, elapsed_ms

log = logging.getLogger("thinkpool.worker")


class OpenAIBackend:
    name = "openai"
    batch_size = 1

    def __init__(
        self,
        http: httpx.Client,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        revision: str | None = None,
        max_parallel: int = 4,
        request_timeout_s: float = 1800.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.http = http
        self.base = base_url.rstrip("/")
        self.model = model
        self.revision = revision
        self.max_parallel = max_parallel
        self.timeout = httpx.Timeout(request_timeout_s, connect=10.0)
        # A backend that restarts or hiccups gets a few tries; a dead one fails the item.
        self.policy = policy or RetryPolicy(base_s=1.0, cap_s=30.0, max_attempts=5)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.supports_n: bool | None = None  # learnt from the first n > 1 reply

    # --- discovery -------------------------------------------------------------------------

    def served_models(self) -> list[ServedModel]:
        url = f"{self.base}/models"
        try:
            response = self.http.get(url, headers=self.headers, timeout=15.0)
        except httpx.TransportError as exc:
            raise BackendUnreachable(
                f"cannot reach the model server at {self.base} ({type(exc).__name__}); is it "
                "running, and is --base-url right (it usually ends in /v1)?"
            ) from exc
        if response.status_code != 200:
            raise BackendError(
                f"the model server at {url} answered {response.status_code}; is --base-url an "
                "OpenAI-compatible endpoint (it usually ends in /v1)?"
            )
        try:
            data = response.json().get("data") or []
        except (ValueError, AttributeError) as exc:
            raise BackendError(f"the model server at {url} did not answer a model list") from exc
        return [
            ServedModel(str(m["id"]), m.get("revision") or None)
            for m in data
            if isinstance(m, dict) and "id" in m
        ]

    def check_model(self, model: str) -> ServedModel:
        served = self.served_models()
        for m in served:
            if m.id == model:
                if self.revision is None and m.revision:
                    self.revision = m.revision
                return m
        names = ", ".join(m.id for m in served) or "nothing"
        raise ModelNotServed(
            f"the model server at {self.base} does not serve '{model}' (it serves: {names}); "
            "start it with that model or pass the name it uses with --backend-model"
        )

    # --- generation ------------------------------------------------------------------------

    def close(self) -> None:
        pass  # the shared httpx client belongs to the caller

    def generate_batch(self, requests: list[GenRequest], on_result: OnResult) -> None:
        for i, req in enumerate(requests):
            self.generate(req, functools.partial(on_result, i))

    def generate(
        self, req: GenRequest, on_result: Callable[[list[Generation]], None] | None = None
    ) -> list[Generation]:
        out: list[Generation] = []

        def got(gens: list[Generation]) -> None:
            gens = gens[: req.n - len(out)]
            out.extend(gens)
            if on_result is not None and gens:
                on_result(gens)

        if req.n > 1 and self.supports_n is not False:
            got(self._call(req, req.n))
            if self.supports_n is None:
                self.supports_n = len(out) >= req.n
                if not self.supports_n:
                    log.info("the model server ignores n > 1; sending one request per sample")
        while len(out) < req.n:
            got(self._call(req, 1))
        return out

    def _call(self, req: GenRequest, n: int) -> list[Generation]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": req.messages,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "max_tokens": req.max_tokens,
            "stream": False,
        }
        if n > 1:
            body["n"] = n
        url = f"{self.base}/chat/completions"
        started = time.perf_counter()
        try:
            response = send_with_retry(
                lambda: self.http.post(url, json=body, headers=self.headers, timeout=self.timeout),
                self.policy,
                what="generation request",
            )
        except httpx.TransportError as exc:
            raise BackendUnreachable(
                f"the model server at {self.base} stopped answering ({type(exc).__name__})"
            ) from exc
        ms = elapsed_ms(started)
        if response.status_code == 404:
            raise ModelNotServed(
                f"the model server at {self.base} answered 404 for model '{self.model}': "
                f"{response.text[:200]}"
            )
        if response.status_code != 200:
            raise BackendError(
                f"the model server answered {response.status_code}: {response.text[:300]}"
            )
        return self._parse(response.json(), n, ms, req)

    def _parse(self, data: dict[str, Any], n: int, ms: int, req: GenRequest) -> list[Generation]:
        choices = data.get("choices") or []
        usage = data.get("usage") or {}
        model = str(data.get("model") or self.model)
        revision = self.revision or data.get("revision")
        prompt_tokens = usage.get("prompt_tokens")
        total_completion = usage.get("completion_tokens")
        token_counts, apportioned = _per_choice_tokens(choices, total_completion, req.max_tokens)
        out = []
        for choice, tokens in zip(choices, token_counts, strict=True):
            message = choice.get("message") or {}
            completion, reasoning = split_reasoning(
                message.get("content"),
                message.get("reasoning_content") or message.get("reasoning"),
            )
            extra: dict[str, Any] = {}
            if apportioned:
                extra["completion_tokens_apportioned"] = True
            out.append(
                Generation(
                    completion=completion,
                    reasoning=reasoning,
                    finish_reason=str(choice.get("finish_reason") or "unknown"),
                    prompt_tokens=prompt_tokens,
                    completion_tokens=tokens,
                    # One request's time, shared by the samples it produced.
                    generation_ms=max(1, ms // max(1, len(choices))),
                    model=model,
                    model_revision=revision,
                    extra=extra,
                )
            )
        return out


def _per_choice_tokens(
    choices: list[dict[str, Any]], total: int | None, max_tokens: int
) -> tuple[list[int | None], bool]:
    """Completion tokens per choice, and whether they had to be apportioned.

    OpenAI-compatible servers report ``usage`` for the whole request. With one choice that is
    exact. With n choices we use per-choice usage when the server gives it; otherwise choices cut
    at ``max_tokens`` ("length") are exact, and the rest of the total is shared among the others
    in proportion to their text length, so the counts still sum to the server's total (flagged
    ``completion_tokens_apportioned`` in the sample's sampling metadata).
    """
    if len(choices) == 1:
        return [total], False
    per_choice = [(c.get("usage") or {}).get("completion_tokens") for c in choices]
    if all(isinstance(t, int) for t in per_choice):
        return per_choice, False
    if total is None:
        return [None] * len(choices), False
    counts: list[int | None] = [None] * len(choices)
    rest = total
    open_idx = []
    for i, c in enumerate(choices):
        if c.get("finish_reason") == "length":
            counts[i] = max_tokens
            rest -= max_tokens
        else:
            open_idx.append(i)
    if open_idx:
        rest = max(rest, 0)
        lengths = [max(1, _text_length(choices[i].get("message") or {})) for i in open_idx]
        whole = sum(lengths)
        shares = [rest * ln // whole for ln in lengths]
        shares[-1] += rest - sum(shares)
        for i, share in zip(open_idx, shares, strict=True):
            counts[i] = share
    return counts, True


def _text_length(message: dict[str, Any]) -> int:
    return sum(len(message.get(key) or "") for key in ("content", "reasoning_content", "reasoning"))
