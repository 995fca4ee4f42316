"""Model attestation in the pipeline: which samples are attested, the `gpu` task's work, and
the flags a contributor's pooled attestations raise (the statistics: scoring/attestation.py).

**Choosing** (:func:`on_scored`, called by scoring.pipeline when a sample settles): a sample
whose claimed model is configured (``THINKPOOL_ATTESTATION["models"]``) is attested with
probability ``sample_fraction``, drawn from the operating system's generator
(``random.SystemRandom``) so that no contributor can predict which samples are checked, and
always while its contributor has an open attestation, copy or spot-check flag (not hoarding,
which anyone can earn on purpose). Spot-check replicas are attested like any sample. The
choice is made after the scoring transaction commits and never touches the sample: an
attestation is evidence about the contributor, not part of the sample's judgement.

**Attesting** (:func:`attest_samples`, the ``scoring.attest_samples`` task): fresh rows, the
prompt's chat as the worker sent it (``PromptSet.render_messages``), grouped by claimed model
(the model is loaded once per worker process), one teacher-forced forward pass per batch. Each
sample gets one Verdict(verifier="attestation", version=VERSION): ``pass`` / ``fail`` per the
rule, ``skipped`` when it cannot be judged (too few tokens; a claim out of range), with the
statistics in ``details`` and ``score`` 1.0 for a pass, else 0.0. A sample attested at this
version already is not attested again, so the task is safe to run twice.

**Where the verdict goes.** Not into the sample's status: the pipeline settles a sample from
the verdicts of its set's verifiers only (``attestation`` is none), and keeps verdicts of other
verifiers as they are, so a rescore neither reads nor drops it. Released rows leave it out
(scoring.publishing.rows) and contributors are not shown it (scoring.disclosure): which
samples were drawn and how close they came would help tune a forgery (the claimed model is
public and the thresholds are not secret), and a single sample's result is weak evidence.

**Pooling and flags** (:func:`check_pool`). One sample says little (2-3 % of honest samples
fail alone, mostly a re-tokenization the model never sampled); ``pool_size`` of them say much
(0 % honest pooled fails in the tests, 100 % pooled fails of a wrong claim). After storing, for
each (contributor, model, temperature) touched, the contributor's latest ``pool_size``
attestations of that claim (pass or fail; skipped ones carry nothing) are pooled
(``attestation.pool``); when the pool fails the rule, each failed sample in it is flagged
(``FlagKind.ATTESTATION``, raised together: one failed pool is one finding, one cut of the
contributor's quota in contributors.services.trust), with the pooled and single statistics,
the claim and the pooled sample ids as evidence. A pool that fails though none of its samples
failed alone flags its worst sample, so that every pooled fail raises a flag. Never one
sample's fail alone. Raising the same evidence again changes nothing (scoring.flags).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction

from scoring.attestation import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    VERSION,
    Attestation,
    AttestationError,
    Attester,
    Claim,
    Rule,
    Stats,
    attester_from_settings,
    pool,
    rule_from,
)
from scoring.flags import raise_flags
from scoring.models import Flag, FlagKind, Sample, Verdict, VerdictStatus

logger = logging.getLogger(__name__)

VERIFIER = "attestation"

# An open flag of these kinds has every sample of its contributor attested.
ATTEST_ALL_AFTER = [
    str(FlagKind.ATTESTATION),
    str(FlagKind.COPY),
    str(FlagKind.REPLICA_DISAGREEMENT),
]
# The verdict's version is the statistics' (scoring.attestation.VERSION, imported above): bump
# it there when what they mean changes; verdicts at an older version are neither reused nor
# pooled.

_STATUS = {PASS: VerdictStatus.PASS, FAIL: VerdictStatus.FAIL, INCONCLUSIVE: VerdictStatus.SKIPPED}
_STAT_FIELDS = tuple(f.name for f in fields(Stats))
# Not predictable from anything a contributor sees (the OS's entropy, not a seeded generator).
_draw = random.SystemRandom().random


def conf() -> dict[str, Any]:
    return dict(getattr(settings, "THINKPOOL_ATTESTATION", {}) or {})


def configured_models() -> Mapping[str, Any]:
    return conf().get("models") or {}


# --- choosing ---------------------------------------------------------------------------------


def on_scored(sample: Sample) -> None:
    """The pipeline's hook, when `sample` has settled: decides after commit whether to attest
    it, and queues it if so. No query unless its model is configured; never raises."""
    try:
        if sample.model not in configured_models():
            return
        transaction.on_commit(partial(_choose, sample.pk, sample.contributor_id))
    except Exception:  # attestation must never get in the way of scoring
        logger.exception("sample %s: could not consider it for attestation", sample.pk)


def chosen(*, contributor_id: int) -> bool:
    """Whether a sample of this contributor (of a configured model) is attested: a fresh,
    unpredictable draw under `sample_fraction`, or an open flag on the contributor."""
    fraction = float(conf().get("sample_fraction", 0.0))
    if fraction > 0 and _draw() < fraction:
        return True
    # Flags about what the contributor sends (not hoarding, which anyone can earn on purpose
    # to have every sample attested and learn, flag by flag, how a forgery fares).
    return Flag.objects.filter(
        contributor_id=contributor_id, cleared_at__isnull=True, kind__in=ATTEST_ALL_AFTER
    ).exists()


def _choose(sample_id: int, contributor_id: int) -> None:
    try:
        if chosen(contributor_id=contributor_id):
            from scoring.tasks import queue_attestation

            queue_attestation([sample_id])
    except Exception:
        logger.exception("sample %s: could not queue its attestation", sample_id)


# --- attesting --------------------------------------------------------------------------------


def attest_samples(*, sample_ids: Iterable[int]) -> int:
    """Attests the samples (of configured models) that have no attestation verdict at VERSION,
    stores their verdicts (one upsert per model), then checks the pools they belong to.
    Returns how many verdicts it stored."""
    ids = sorted({int(pk) for pk in sample_ids})
    models = configured_models()
    samples = [
        s
        for s in Sample.objects.filter(pk__in=ids)
        .select_related("prompt__prompt_set")
        .order_by("pk")
        if s.model in models
    ]
    done = set(
        Verdict.objects.filter(
            sample_id__in=[s.pk for s in samples], verifier=VERIFIER, version=VERSION
        ).values_list("sample_id", flat=True)
    )
    by_model: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.pk not in done:
            by_model[s.model].append(s)
    stored = 0
    for model, group in sorted(by_model.items()):
        verdicts = _attest_group(model, group)
        Verdict.objects.upsert(verdicts)
        stored += len(verdicts)
    # Every pool these samples belong to, attested now or before (a rerun mends a pool check
    # that a crash cut short).
    for contributor_id, model, temperature in sorted(
        {(s.contributor_id, s.model, s.temperature) for s in samples}
    ):
        check_pool(contributor_id=contributor_id, model=model, temperature=temperature)
    return stored


def claim_for(sample: Sample) -> Claim:
    """What the sample claims, with the prompt's chat as the worker sent it."""
    prompt = sample.prompt
    sampling = sample.sampling if isinstance(sample.sampling, dict) else {}
    return Claim(
        key=sample.pk,
        messages=prompt.prompt_set.render_messages(prompt.messages),
        completion=sample.completion,
        reasoning=sample.reasoning or None,
        finish_reason=sample.finish_reason,
        temperature=float(sample.temperature),
        top_p=_number(sampling.get("top_p", 1.0)),
    )


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _unattestable(claim: Claim) -> str:
    if not (math.isfinite(claim.temperature) and claim.temperature >= 0):
        return "claimed temperature out of range"
    if not (0.0 < claim.top_p <= 1.0):  # false for NaN too
        return "claimed top_p out of range"
    return ""


def _attest_group(model: str, samples: list[Sample]) -> list[Verdict]:
    """Verdicts for samples claiming `model`; none when the model cannot be loaded (logged:
    a configuration problem, which no verdict should record against the contributor)."""
    started = time.perf_counter()
    try:
        attester = attester_from_settings(model)
    except AttestationError:
        logger.exception("cannot attest %d samples of %s", len(samples), model)
        return []
    if attester is None:  # unconfigured since the samples were read
        return []
    verdicts: dict[int, Verdict] = {}
    claims: list[Claim] = []
    for s in samples:
        claim = claim_for(s)
        reason = _unattestable(claim)
        if reason:
            verdicts[s.pk] = _skipped(s, attester, reason)
        else:
            claims.append(claim)
    by_pk = {s.pk: s for s in samples}
    for key, result in _attest_each(attester, claims).items():
        sample = by_pk[int(key)]
        if isinstance(result, str):
            verdicts[sample.pk] = _skipped(sample, attester, result)
        else:
            verdicts[sample.pk] = _verdict(sample, attester, result)
    duration = int((time.perf_counter() - started) * 1000 / max(len(samples), 1))
    for v in verdicts.values():
        v.duration_ms = duration
    return [verdicts[pk] for pk in sorted(verdicts)]


def _attest_each(attester: Attester, claims: list[Claim]) -> dict[Any, Attestation | str]:
    """Attestations by claim key; a claim the attester refuses (a malformed chat) gets the
    reason instead, without costing the others theirs."""
    if not claims:
        return {}
    try:
        return {a.key: a for a in attester.attest(claims)}
    except (ValueError, AttestationError):
        pass  # one bad claim: judge them one by one to find it
    out: dict[Any, Attestation | str] = {}
    for claim in claims:
        try:
            (out[claim.key],) = attester.attest([claim])
        except (ValueError, AttestationError) as exc:
            logger.warning("sample %s cannot be attested: %s", claim.key, exc)
            out[claim.key] = f"cannot be attested: {type(exc).__name__}"
    return out


def _base_details(sample: Sample, attester: Attester) -> dict[str, Any]:
    return {
        "claimed_model": sample.model,
        "attester": attester.details(),
    }


def _verdict(sample: Sample, attester: Attester, result: Attestation) -> Verdict:
    status = _STATUS[result.status]
    return Verdict(
        sample_id=sample.pk,
        verifier=VERIFIER,
        version=VERSION,
        status=status,
        score=1.0 if status == VerdictStatus.PASS else 0.0,
        details=_json_safe(
            {
                **result.verdict_details(),
                **_base_details(sample, attester),
                "decision": result.status,
            }
        ),
    )


def _skipped(sample: Sample, attester: Attester, reason: str) -> Verdict:
    return Verdict(
        sample_id=sample.pk,
        verifier=VERIFIER,
        version=VERSION,
        status=VerdictStatus.SKIPPED,
        score=0.0,
        details=_json_safe({**_base_details(sample, attester), "reason": reason}),
    )


def _json_safe(value: Any) -> Any:
    """JSON that PostgreSQL's jsonb takes: no NaN or infinities (None instead)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# --- pooling and flags ------------------------------------------------------------------------


def stats_from(details: Mapping[str, Any]) -> Stats | None:
    """The statistics a verdict recorded; None when they are missing or malformed."""
    try:
        values = {name: details[name] for name in _STAT_FIELDS}
        stats = Stats(
            tokens=int(values["tokens"]),
            mean_logprob=float(values["mean_logprob"]),
            expected_logprob=float(values["expected_logprob"]),
            z=None if values["z"] is None else float(values["z"]),
            outside_nucleus=float(values["outside_nucleus"]),
            truncated=bool(values["truncated"]),
            deviation=float(values["deviation"]),
            variance=float(values["variance"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    return stats


def check_pool(
    *,
    contributor_id: int,
    model: str,
    temperature: float,
    rule: Rule | None = None,
    pool_size: int | None = None,
) -> list[int]:
    """Pools the contributor's latest `pool_size` attestations (pass or fail) of one claim;
    when the pool fails `rule`, flags its failed samples (or, if none failed alone, its worst).
    Returns the sample ids flagged (raised or refreshed); none while fewer are available."""
    c = conf()
    rule = rule or rule_from(c)
    size = int(pool_size or c.get("pool_size", 10))
    rows = list(
        Verdict.objects.filter(
            verifier=VERIFIER,
            version=VERSION,
            status__in=[VerdictStatus.PASS, VerdictStatus.FAIL],
            sample__contributor_id=contributor_id,
            sample__model=model,
            sample__temperature=temperature,
        )
        .order_by("-sample_id")
        .values_list("sample_id", "status", "details")[:size]
    )
    members = [(pk, status, s) for pk, status, d in rows if (s := stats_from(d)) is not None]
    if len(members) < size:
        return []
    pooled = pool([s for _, _, s in members])
    if rule.decide(pooled) != FAIL:
        return []
    flagged = [(pk, s) for pk, status, s in members if status == VerdictStatus.FAIL]
    if not flagged:
        flagged = [_worst(members, pooled, rule)]
    common = {
        "claimed_model": model,
        "temperature": temperature,
        "version": VERSION,
        "rule": asdict(rule),
        "pooled": asdict(pooled),
        "pooled_samples": sorted(pk for pk, _, _ in members),
        "pooled_failed": sorted(pk for pk, status, _ in members if status == VerdictStatus.FAIL),
    }
    # One failed pool is one finding: raised together, one cut of the contributor's quota.
    raise_flags(
        kind=FlagKind.ATTESTATION,
        evidence={pk: _json_safe({**common, "sample": asdict(stats)}) for pk, stats in flagged},
    )
    logger.info(
        "contributor %s, %s at T=%s: %d pooled attestations fail (z %s, outside %.3f); "
        "flagged samples %s",
        contributor_id,
        model,
        temperature,
        len(members),
        pooled.z,
        pooled.outside_nucleus,
        [pk for pk, _ in flagged],
    )
    return sorted(pk for pk, _ in flagged)


def _worst(
    members: Sequence[tuple[int, str, Stats]], pooled: Stats, rule: Rule
) -> tuple[int, Stats]:
    """The member that weighs most on the pool's failure: the most tokens outside the nucleus
    when that share failed, else the lowest z."""
    if pooled.outside_nucleus > rule.max_outside:
        pk, _, stats = max(members, key=lambda m: (m[2].outside_nucleus, -m[0]))
    else:
        pk, _, stats = min(
            members, key=lambda m: (m[2].z if m[2].z is not None else math.inf, m[0])
        )
    return pk, stats
