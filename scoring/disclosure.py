"""What a contributor may learn about the judgement of their samples, and when.

The rule (DESIGN.md: "verdicts are not an oracle"), in one place:

* Gold-dependent verifiers are the correctness verifiers (`pipeline.CORRECTNESS_VERIFIERS`:
  math, code, mcq, string). Their results, and everything derived from them (the sample's
  status verified / rejected / error, its status_reason, verdict rows, scores, and the moment
  any of these change), are withheld until the sample's prompt is closed to collection
  (`Prompt.closed_at`). Before that, no number of uploads tells a contributor which guess was
  right.
* Gold-free checks (format, truncation, repetition, language, and any other verifier that is
  not a correctness verifier) are shown at once. They are computed here, on read, from the
  stored text with the same verifier objects and the set's verifier_config, and never with the
  gold (`Gold()`): what the contributor sees is a pure function of what they uploaded, not of
  how far the scoring queue has got. (A stored gold-free verdict appears only after the
  gold-dependent verifiers that ran before it in the same task, so its timing would leak.)
* While the prompt is open the visible status is `rejected` when a gold-free check failed
  (reason such as "format: fail"), else `accepted` (reason: correctness is disclosed when the
  prompt closes); never received / scoring / verified / error.
* Once the prompt is closed: the real status, status_reason and verdict statuses (never
  `details` or `score`: details can quote a hidden test, and a code score is tests passed /
  total). Model attestation verdicts (scoring/attesting.py) are never listed: they judge
  the contributor's claim, not the sample, and which samples were drawn and how they fared
  would help tune a forgery (a flag they lead to shows only in the contributor's counts).
* Aggregates (a contributor's own counts, the public totals) split by status only samples of
  closed prompts; samples of open prompts are one number, `awaiting_disclosure`.

Nothing here touches PromptGold.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.db.models import Count, QuerySet

from scoring.attesting import VERIFIER as ATTESTATION_VERIFIER
from scoring.models import Prompt, PromptSet, Sample, SampleStatus, VerdictStatus
from scoring.pipeline import CORRECTNESS_VERIFIERS, candidate_for

if TYPE_CHECKING:
    from scoring.verifiers.base import Verifier

logger = logging.getLogger(__name__)

GOLD_DEPENDENT = CORRECTNESS_VERIFIERS

# The statuses a contributor sees while the prompt is open.
ACCEPTED = "accepted"
REJECTED = str(SampleStatus.REJECTED)
AWAITING_REASON = "correctness is disclosed when the prompt closes"
# The key under which aggregates count samples of open prompts.
AWAITING_DISCLOSURE = "awaiting_disclosure"

_FAILED = (VerdictStatus.FAIL, VerdictStatus.TIMEOUT)
# Verdicts about the contributor, not the sample, never listed to them: model attestation
# (scoring/attesting.py; which samples were drawn, and how they fared, would help a forger).
NOT_SHOWN = frozenset({ATTESTATION_VERIFIER})


def is_disclosed(prompt: Prompt) -> bool:
    """Whether the gold-dependent judgement of the prompt's samples may be shown."""
    return prompt.closed_at is not None


def gold_free_verifiers(prompt_set: PromptSet) -> list[Verifier]:
    """The set's verifiers that never need the gold, in the pipeline's order."""
    # Imported here, as the pipeline does: the verifiers pull in heavy modules.
    from scoring.verifiers import verifiers_for

    try:
        verifiers = verifiers_for(prompt_set.domain, prompt_set.verifier_config or {})
    except ValueError:
        # A maintainer's typo in verifier_config: the pipeline marks every sample `error`;
        # that is no property of the sample, so there is nothing to show before closing.
        return []
    return [v for v in verifiers if v.name not in GOLD_DEPENDENT]


def gold_free_checks(sample: Sample) -> list[dict[str, Any]]:
    """The gold-free verdicts of a sample, computed now from its text (never from the gold and
    never from stored verdict rows). `sample.prompt.prompt_set` should be loaded."""
    from scoring.verifiers.base import Gold

    prompt_set = sample.prompt.prompt_set
    config = prompt_set.verifier_config or {}
    candidate = candidate_for(sample)
    checks = []
    for verifier in gold_free_verifiers(prompt_set):
        try:
            status = str(verifier.verify(candidate, Gold(), config).status)
        except Exception:  # a broken verifier shows as `error`, never as a pass
            logger.exception("verifier %s crashed on read", verifier.name)
            status = str(VerdictStatus.ERROR)
        checks.append({"verifier": verifier.name, "version": verifier.version, "status": status})
    return checks


def contributor_view(sample: Sample) -> dict[str, Any]:
    """What the sample's contributor sees of its judgement: `disclosed`, `status`,
    `status_reason` and `verdicts` ([{verifier, version, status}])."""
    if is_disclosed(sample.prompt):
        verdicts = [
            {"verifier": v.verifier, "version": v.version, "status": v.status}
            # Through the relation, so a list that prefetched `verdicts` costs no query here.
            for v in sorted(sample.verdicts.all(), key=lambda v: v.pk)
            if v.verifier not in NOT_SHOWN
        ]
        return {
            "disclosed": True,
            "status": sample.status,
            "status_reason": sample.status_reason,
            "verdicts": verdicts,
        }
    checks = gold_free_checks(sample)
    failed = [f"{c['verifier']}: {c['status']}" for c in checks if c["status"] in _FAILED]
    return {
        "disclosed": False,
        "status": REJECTED if failed else ACCEPTED,
        "status_reason": "; ".join(failed) if failed else AWAITING_REASON,
        "verdicts": checks,
    }


def awaiting_view() -> dict[str, Any]:
    """A sample of an open prompt where its checks are not computed (a list): only that its
    judgement awaits the prompt's closing."""
    return {
        "disclosed": False,
        "status": AWAITING_DISCLOSURE,
        "status_reason": AWAITING_REASON,
        "verdicts": [],
    }


def status_counts(samples: QuerySet[Sample]) -> dict[str, int]:
    """Counts for an aggregate over `samples`: by real status for samples of closed prompts,
    one `awaiting_disclosure` count for samples of open prompts. Every key is always there."""
    awaiting = samples.filter(prompt__closed_at__isnull=True).count()
    by_status = dict(
        samples.filter(prompt__closed_at__isnull=False)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    counts = {AWAITING_DISCLOSURE: awaiting}
    counts.update({status: by_status.get(status, 0) for status in SampleStatus.values})
    return counts
