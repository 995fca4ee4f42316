"""Model attestation: does a sample look like the model and sampling settings it claims?

A contributor says which model, temperature and top-p made a sample. Re-running the claimed model
on the prompt + completion in **one forward pass** (teacher forcing) gives, for every completion
token, the distribution the model would have sampled it from: ``softmax(logits / T)`` cut to its
top-p nucleus. Text the claimed model generated with those settings sits inside the nucleus
(nearly always) and has about the log-probability the model expects of its own samples; text from
another model, or written by hand, falls outside the nucleus far more often and is far less
likely than expected. Cost: one prefill instead of a full generation.

**What is scored.** The prompt's chat (as the worker sent it: ``PromptSet.render_messages``) is
rendered with the claimed model's chat template and generation prompt; the completion is appended
as the sample stores it (:func:`completion_text`): the worker strips the ``<think>`` markup into
``reasoning``, so the markup and the whitespace at its joints are rebuilt from
``THINK_FORMAT``. Characters this module inserted are not the contributor's, so tokens that
overlap them are fed to the model but not scored. A sample that stopped on its own
(``finish_reason == "stop"``) ends with the tokenizer's EOS token, which is scored: stopping is
a choice the model makes too.

Re-tokenizing text need not give the token ids the model sampled (a model can emit a
non-canonical split, e.g. ``t`` + ``he`` where the tokenizer writes ``the``); such tokens may land
outside the nucleus. The thresholds leave room for that.

**Statistics** (over the scored tokens, per sample):

* ``mean_logprob``: mean of ``log softmax(logits / T)[token]``;
* ``expected_logprob``: mean of the tempered distribution's own expectation ``sum p log p`` at
  each position (minus the entropy): what an honest sample scores on average, before top-p;
* ``z``: ``sum(log q - E_q[log q]) / sqrt(sum Var_q[log q])`` over the tokens inside the
  nucleus, where ``q`` is the distribution the sampler drew from (tempered, cut to the nucleus,
  renormalised): the Fast-DetectGPT statistic, exact for top-p sampling. For the model's own
  samples it is about N(0, 1) (summed over a sample's tokens); for text it did not write it is
  negative, and strongly so over many tokens (:func:`pool`). It needs no per-model calibration of
  a log-probability level, which differs widely between models and temperatures. Tokens outside
  the nucleus (impossible for an honest sample, bar re-tokenization) count only in the next
  statistic, so that one such token cannot swamp z;
* ``outside_nucleus``: share of tokens outside the top-p nucleus of the tempered distribution
  (probability mass of strictly more likely tokens >= top_p; what transformers' and vLLM's top-p
  filters drop);
* ``tokens``: how many tokens were scored; ``truncated``: the completion was cut to ``max_tokens``.

**Decision** (:class:`Rule`): ``pass`` when ``outside_nucleus <= max_outside`` and
``z >= min_z``; ``fail`` otherwise; ``inconclusive`` when fewer than ``min_tokens`` tokens could be
scored (nothing to judge: the pipeline records it as skipped, never as a pass). Greedy claims
(T <= 1e-5) score against the argmax: every token outside it counts as outside the nucleus, and
``z`` is not used.

**Bounds.** At most ``max_tokens`` completion tokens per sample (the rest is cut, ``truncated``
says so; the prompt is cut from the left when prompt + kept completion exceed the model's
length); batches of padded size within ``max_tokens_per_batch``; the vocabulary projection is done
in chunks of positions, so memory stays ``O(chunk * vocab)`` however long the batch.

Importing this module imports neither torch nor transformers; constructing an :class:`Attester`
does (the model is cached per process, like the reward scorer's).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scoring.batching import by_token_budget, default_budget

log = logging.getLogger("thinkpool.scoring.attestation")

VERSION = 1
PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"

# How the worker's split is undone: reasoning goes between these (DeepSeek-R1 / Qwen3 style).
THINK_FORMAT = {"open": "<think>\n", "close": "\n</think>\n\n"}
# Positions projected onto the vocabulary at once (memory: chunk * vocab floats, a few times over).
_VOCAB_CHUNK_POSITIONS = 512
# Candidates for a top-p nucleus found by partial selection before falling back to a full sort.
_NUCLEUS_TOP_K = 128
_GREEDY_T = 1e-5
_SANE_MAX_LENGTH = 10_000_000


class AttestationError(Exception):
    """The claimed model cannot be loaded or used, or the claim itself is malformed."""


@dataclass(frozen=True)
class Rule:
    """Thresholds of the decision (settings: ``THINKPOOL_ATTESTATION``); see the module doc."""

    max_outside: float = 0.10
    min_z: float = -3.0
    min_tokens: int = 16

    def decide(self, stats: Stats) -> str:
        if stats.tokens < self.min_tokens:
            return INCONCLUSIVE
        if stats.outside_nucleus > self.max_outside:
            return FAIL
        if stats.z is not None and stats.z < self.min_z:
            return FAIL
        return PASS


@dataclass(frozen=True)
class Claim:
    """One sample to attest: the prompt's chat (rendered as sent), the completion as stored."""

    key: Hashable
    messages: Sequence[Mapping[str, str]]
    completion: str
    reasoning: str | None = None
    finish_reason: str = "stop"
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass(frozen=True)
class Stats:
    tokens: int
    mean_logprob: float
    expected_logprob: float
    z: float | None
    outside_nucleus: float
    truncated: bool
    # z's numerator and its variance (sums over the tokens inside the nucleus): what lets
    # :func:`pool` combine samples exactly.
    deviation: float = 0.0
    variance: float = 0.0


def pool(stats: Sequence[Stats]) -> Stats:
    """Several samples of one contributor (and one claim) as if they were one long sample.

    One short sample carries little evidence (a 20-token answer that two models would both write
    says nothing about which one wrote it); the pooled ``z`` and outside share over a
    contributor's attested samples do, and are what a trust flag should rest on.
    """
    n = sum(s.tokens for s in stats)
    if n == 0:
        return Stats(0, 0.0, 0.0, None, 0.0, any(s.truncated for s in stats))
    logp = math.fsum(s.mean_logprob * s.tokens for s in stats)
    expected = math.fsum(s.expected_logprob * s.tokens for s in stats)
    deviation = math.fsum(s.deviation for s in stats)
    variance = math.fsum(s.variance for s in stats)
    greedy = any(s.z is None and s.tokens for s in stats)
    return Stats(
        tokens=n,
        mean_logprob=logp / n,
        expected_logprob=expected / n,
        z=None if greedy else deviation / math.sqrt(max(variance, 1e-9)),
        outside_nucleus=math.fsum(s.outside_nucleus * s.tokens for s in stats) / n,
        truncated=any(s.truncated for s in stats),
        deviation=deviation,
        variance=variance,
    )


@dataclass(frozen=True)
class Attestation:
    key: Hashable
    status: str
    stats: Stats
    details: dict[str, Any] = field(default_factory=dict)

    def verdict_details(self) -> dict[str, Any]:
        """What a Verdict row records (JSON-safe)."""
        return {**asdict(self.stats), **self.details}


def completion_text(
    completion: str,
    reasoning: str | None,
    finish_reason: str = "stop",
    think: Mapping[str, str] = THINK_FORMAT,
    prefix: str = "",
) -> tuple[str, list[tuple[int, int]]]:
    """The assistant's turn as the model wrote it, and the spans (start, end) of the characters
    this function inserted (markup, not the contributor's text).

    ``completion`` / ``reasoning`` are as the sample stores them (see
    ``contributors/worker/reasoning.py``): with a reasoning field the completion is the answer;
    without one the completion is taken verbatim (any ``<think>`` markup in it is the model's).
    With an empty answer the block stays unclosed (the worker stores "<think>x</think>" and an
    unclosed "<think>x" alike; ``encode`` leaves the token after it unscored).
    When the template's generation prompt already opens the think block (``prefix`` ends with
    the opening tag, as DeepSeek-R1's does), the tag is not written again.
    """
    if not reasoning:
        return completion, []
    parts: list[str] = []
    inserted: list[tuple[int, int]] = []
    pos = 0

    def add(text: str, ours: bool) -> None:
        nonlocal pos
        if ours and text:
            inserted.append((pos, pos + len(text)))
        parts.append(text)
        pos += len(text)

    open_tag = think["open"]
    tag = open_tag.strip()
    if tag and prefix.rstrip().endswith(tag):
        # The template opened the block: write only the whitespace after the tag, if the
        # template did not write it already.
        after = open_tag[open_tag.index(tag) + len(tag) :]
        add("" if prefix != prefix.rstrip() else after, True)
    else:
        add(open_tag, True)
    add(reasoning, False)
    if completion:
        add(think["close"], True)
        add(completion, False)
    return "".join(parts), inserted


# --- the per-process model cache ------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _load(model_id: str, device: str, dtype: Any) -> tuple[Any, Any]:
    key = (model_id, device, str(dtype))
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            return hit
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(model_id)
            model: Any = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype)
        except OSError as exc:
            raise AttestationError(
                f"cannot load model {model_id!r} ({str(exc).splitlines()[0]}); pass a local path "
                "or a Hugging Face id present in the local cache"
            ) from exc
        if not getattr(tokenizer, "chat_template", None):
            raise AttestationError(f"{model_id!r} has no chat template")
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise AttestationError(f"{model_id!r} has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        model = model.to(device)
        model.eval()
        log.info("loaded attestation model %s on %s", model_id, device)
        _cache[key] = (model, tokenizer)
        return model, tokenizer


@dataclass
class _Encoded:
    ids: list[int]
    start: int  # index of the first completion token
    scored: list[bool]  # per completion token: the contributor's text (not our markup)
    truncated: bool


class Attester:
    """Attests samples against one claimed model; cheap to construct once the model is cached."""

    def __init__(
        self,
        model_path_or_id: str,
        *,
        rule: Rule | None = None,
        device: str | None = None,
        dtype: Any = None,
        max_tokens: int = 4096,
        max_tokens_per_batch: int | None = None,
        think: Mapping[str, str] = THINK_FORMAT,
    ) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        import torch

        self.torch = torch
        self.model_id = str(model_path_or_id)
        self.rule = rule or Rule()
        self.device = (
            device
            if device and device != "auto"
            else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        if dtype is None or dtype == "auto":
            dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.dtype = dtype
        self.max_tokens = max_tokens
        self.max_tokens_per_batch = max_tokens_per_batch or default_budget(self.device)
        self.think = dict(think)
        self.model, self.tokenizer = _load(self.model_id, self.device, self.dtype)
        limits = [
            int(v)
            for v in (
                getattr(self.model.config, "max_position_embeddings", None),
                getattr(self.tokenizer, "model_max_length", None),
            )
            if isinstance(v, int | float) and 1 < v < _SANE_MAX_LENGTH
        ]
        self.max_length = min(limits) if limits else 32_768
        self.softcap = getattr(self.model.config, "final_logit_softcapping", None)

    def details(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "version": VERSION,
            "max_tokens": self.max_tokens,
            "device": self.device,
            "dtype": str(self.dtype).split(".")[-1],
            "rule": asdict(self.rule),
        }

    # --- rendering and tokenization ---------------------------------------------------------------

    def encode(self, claim: Claim) -> _Encoded:
        if not claim.messages or isinstance(claim.messages, str | bytes):
            raise ValueError(f"sample {claim.key!r}: messages must be a non-empty list")
        prefix = str(
            self.tokenizer.apply_chat_template(
                [{"role": m["role"], "content": m["content"]} for m in claim.messages],
                tokenize=False,
                add_generation_prompt=True,
            )
        )
        body, inserted = completion_text(
            claim.completion or "", claim.reasoning, claim.finish_reason, self.think, prefix
        )
        eos = self.tokenizer.eos_token if claim.finish_reason == "stop" else None
        text = prefix + body + (eos or "")
        if eos and claim.reasoning and not claim.completion:
            # The worker stores "<think>x</think>" (empty answer) and an unclosed "<think>x" that
            # stopped alike: what came after the reasoning is unknown, so the EOS is not scored.
            inserted = [*inserted, (len(body), len(body) + len(eos))]
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offsets = enc["offset_mapping"]
        boundary = len(prefix)
        start = next((i for i, (s, _e) in enumerate(offsets) if s >= boundary), len(ids))
        spans = [(boundary + a, boundary + b) for a, b in inserted]
        scored = [
            not any(s < b and a < max(e, s + 1) for a, b in spans) for s, e in offsets[start:]
        ]
        truncated = False
        if len(ids) - start > self.max_tokens:
            ids, scored, truncated = ids[: start + self.max_tokens], scored[: self.max_tokens], True
        overflow = len(ids) - self.max_length
        if overflow > 0:  # cut the oldest prompt tokens; never more than the prompt
            cut = min(overflow, max(start - 1, 0))
            ids, start = ids[cut:], start - cut
            if len(ids) > self.max_length:
                keep = self.max_length - start
                ids, scored, truncated = ids[: self.max_length], scored[:keep], True
        return _Encoded(ids, start, scored, truncated)

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped longest first so that each batch's padded size fits the budget."""
        return by_token_budget(lengths, self.max_tokens_per_batch)

    # --- attestation ------------------------------------------------------------------------------

    def attest(self, claims: Iterable[Claim]) -> list[Attestation]:
        """One attestation per claim, in input order."""
        claims = list(claims)
        for c in claims:
            if not (0.0 < c.top_p <= 1.0) or not math.isfinite(c.temperature) or c.temperature < 0:
                raise AttestationError(
                    f"sample {c.key!r}: claimed temperature {c.temperature!r} / top_p "
                    f"{c.top_p!r} out of range"
                )
        encoded = [self.encode(c) for c in claims]
        out: list[Attestation | None] = [None] * len(claims)
        for batch in self.batches([len(e.ids) for e in encoded]):
            rows = self._forward([encoded[i] for i in batch], [claims[i] for i in batch])
            for i, stats in zip(batch, rows, strict=True):
                out[i] = Attestation(
                    claims[i].key,
                    self.rule.decide(stats),
                    stats,
                    {
                        "model": self.model_id,
                        "version": VERSION,
                        "temperature": claims[i].temperature,
                        "top_p": claims[i].top_p,
                    },
                )
        return [a for a in out if a is not None]

    def _forward(self, rows: list[_Encoded], claims: list[Claim]) -> list[Stats]:
        torch = self.torch
        width = max(len(r.ids) for r in rows)
        pad = int(self.tokenizer.pad_token_id)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, enc in enumerate(rows):
            input_ids[r, : len(enc.ids)] = torch.tensor(enc.ids, dtype=torch.long)
            attention[r, : len(enc.ids)] = 1
        with torch.no_grad():
            hidden = self._hidden(input_ids.to(self.device), attention.to(self.device))
            head = self.model.get_output_embeddings()
            results = []
            for r, (enc, claim) in enumerate(zip(rows, claims, strict=True)):
                # Position p predicts token p + 1: completion tokens start..len-1.
                targets = torch.tensor(enc.ids[enc.start :], dtype=torch.long, device=self.device)
                mask = torch.tensor(enc.scored, dtype=torch.bool, device=self.device)
                if enc.start == 0:  # no context for the first token: never scored
                    mask[:1] = False
                positions = torch.arange(
                    max(enc.start - 1, 0), max(enc.start - 1, 0) + len(targets), device=self.device
                )
                results.append(self._stats(hidden[r], head, positions, targets, mask, claim, enc))
        return results

    def _hidden(self, input_ids: Any, attention: Any) -> Any:
        decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else None
        if decoder is not None:
            return decoder(input_ids=input_ids, attention_mask=attention).last_hidden_state
        out = self.model(input_ids=input_ids, attention_mask=attention, output_hidden_states=True)
        return out.hidden_states[-1]

    def _stats(
        self,
        hidden: Any,
        head: Any,
        positions: Any,
        targets: Any,
        mask: Any,
        claim: Claim,
        enc: _Encoded,
    ) -> Stats:
        torch = self.torch
        greedy = claim.temperature <= _GREEDY_T
        temp = 1.0 if greedy else claim.temperature
        logp_sum = exp_sum = dev_sum = var_sum = 0.0
        outside = 0
        n = 0
        for lo in range(0, len(targets), _VOCAB_CHUNK_POSITIONS):
            sel = mask[lo : lo + _VOCAB_CHUNK_POSITIONS]
            if not bool(sel.any()):
                continue
            pos = positions[lo : lo + _VOCAB_CHUNK_POSITIONS][sel]
            tgt = targets[lo : lo + _VOCAB_CHUNK_POSITIONS][sel]
            logits = head(hidden[pos]).float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            logp = torch.log_softmax(logits / temp, dim=-1)
            del logits
            tok_logp = logp.gather(-1, tgt[:, None])[:, 0]
            logp_sum += float(tok_logp.sum())
            p = logp.exp()
            # log p where p > 0 (an entry that underflowed carries no mass; 0 * -inf is NaN).
            safe = torch.where(p > 0, logp, torch.zeros_like(logp))
            plogp = p * safe
            exp_sum += float(plogp.sum())
            n += int(tgt.numel())
            if greedy:
                outside += int((logp.argmax(-1) != tgt).sum())
                continue
            keep = _nucleus(torch, p, claim.top_p)
            inside = keep.gather(-1, tgt[:, None])[:, 0]
            outside += int((~inside).sum())
            if not bool(inside.any()):
                continue
            # z: the written tokens inside the nucleus against the distribution the sampler
            # actually drew from, q = p / mass on the nucleus (tempered, cut, renormalised).
            # log q = log p - log mass, so log q's deviation from its mean and its variance
            # under q are log p's: masked sums over the row, no second (positions x vocab)
            # array of log q.
            mass = torch.where(keep, p, torch.zeros_like(p)).sum(-1)
            kept_plogp = torch.where(keep, plogp, torch.zeros_like(plogp))
            mean = kept_plogp.sum(-1) / mass
            second = (kept_plogp * safe).sum(-1) / mass
            var = (second - mean * mean).clamp_min(0)
            dev_sum += float((tok_logp - mean)[inside].sum())
            var_sum += float(var[inside].sum())
        if n == 0:
            return Stats(0, 0.0, 0.0, None, 0.0, enc.truncated)
        z = None if greedy else dev_sum / math.sqrt(max(var_sum, 1e-9))
        return Stats(
            tokens=n,
            mean_logprob=logp_sum / n,
            expected_logprob=exp_sum / n,
            z=z,
            outside_nucleus=outside / n,
            truncated=enc.truncated,
            deviation=dev_sum,
            variance=var_sum,
        )


def _nucleus(torch: Any, p: Any, top_p: float) -> Any:
    """Per row, the tokens a top-p sampler keeps: those whose strictly more likely tokens hold
    less than ``top_p`` of the mass (transformers' and vLLM's rule; 1e-6 of slack for float sums;
    the most likely token always).

    A nucleus is usually far smaller than the vocabulary: the most likely ``_NUCLEUS_TOP_K``
    (a partial selection, much cheaper than sorting 150k entries per position) settle most
    rows; only a row whose nucleus reaches past them is sorted in full."""
    if top_p >= 1.0:
        return torch.ones_like(p, dtype=torch.bool)
    k = min(_NUCLEUS_TOP_K, p.shape[-1])
    ordered, order = torch.topk(p, k, dim=-1, sorted=True)
    keep_sorted = _kept(ordered, top_p)
    keep = torch.zeros_like(p, dtype=torch.bool).scatter(-1, order, keep_sorted)
    longer = keep_sorted[:, -1] if k < p.shape[-1] else None
    if longer is not None and bool(longer.any()):
        rows = longer.nonzero()[:, 0]
        ordered, order = torch.sort(p[rows], dim=-1, descending=True)
        keep[rows] = torch.zeros_like(ordered, dtype=torch.bool).scatter(
            -1, order, _kept(ordered, top_p)
        )
    return keep


def _kept(ordered: Any, top_p: float) -> Any:
    """Which of the descending-ordered probabilities a top-p sampler keeps."""
    before = ordered.cumsum(-1) - ordered
    keep_sorted = before < top_p + 1e-6
    keep_sorted[..., 0] = True
    return keep_sorted


# --- settings -------------------------------------------------------------------------------------


def resolve_model(claimed: str, models: Mapping[str, Any]) -> tuple[str, dict[str, str]] | None:
    """The local path or id that attests a claimed model name, and its think markup; None when
    the name is not configured (an unconfigured claim cannot be attested: the pipeline skips it).

    An entry is a path or id, or ``{"path": ..., "think": {"open": ..., "close": ...}}`` for a
    model whose reasoning markup is not ``THINK_FORMAT``'s."""
    entry = models.get(claimed)
    if entry is None:
        return None
    if isinstance(entry, str):
        return entry, dict(THINK_FORMAT)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
        raise AttestationError(f"attestation model {claimed!r}: expected a path or {{'path': ...}}")
    return entry["path"], {**THINK_FORMAT, **dict(entry.get("think") or {})}


def rule_from(conf: Mapping[str, Any]) -> Rule:
    return Rule(
        max_outside=float(conf.get("max_outside", Rule.max_outside)),
        min_z=float(conf.get("min_z", Rule.min_z)),
        min_tokens=int(conf.get("min_tokens", Rule.min_tokens)),
    )


def attester_from_settings(claimed_model: str) -> Attester | None:
    """An :class:`Attester` for ``claimed_model`` per ``settings.THINKPOOL_ATTESTATION``."""
    from django.conf import settings

    conf = dict(getattr(settings, "THINKPOOL_ATTESTATION", {}) or {})
    resolved = resolve_model(claimed_model, conf.get("models") or {})
    if resolved is None:
        return None
    path, think = resolved
    return Attester(
        path,
        rule=rule_from(conf),
        max_tokens=int(conf.get("max_tokens", 4096)),
        max_tokens_per_batch=conf.get("max_tokens_per_batch"),
        think=think,
    )
