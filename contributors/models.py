"""The crowd: profiles, API tokens, compute nodes, and the slots and leases that hand out work."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.utils import timezone

from scoring.models import Prompt, PromptSet, Sample

TOKEN_PREFIX = "tp_"

# A Hugging Face repository id: `org/name`, each part letters, digits and `-_.`, starting and
# ending with a letter or digit, at most 96 characters (the Hub's own limits).
_HF_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
MODEL_ID_RE = re.compile(rf"{_HF_PART}/{_HF_PART}")
# A revision: a branch, tag or commit hash.
MODEL_REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")


def model_id_problem(value: str) -> str | None:
    """Why `value` is not a model id Thinkpool takes, or None. Model ids name slots, releases
    and dataset rows, so they are Hugging Face ids, never whatever a local server calls a
    model (a path, `qwen3:8b`)."""
    if MODEL_ID_RE.fullmatch(value) and ".." not in value and "--" not in value:
        return None
    if value.startswith(("/", "~", ".")) or "\\" in value or value.count("/") > 1:
        return (
            f"{value!r} looks like a local path. Name the model by its Hugging Face id "
            "(org/name, e.g. Qwen/Qwen3-8B) and serve it under that name: vLLM "
            "--served-model-name, SGLang --served-model-name, or the worker's --backend-model "
            "for the local path."
        )
    return (
        f"{value!r} is not a Hugging Face model id. Use org/name (e.g. Qwen/Qwen3-8B), the name "
        "the OpenAI-compatible server serves it under (vLLM --served-model-name); a revision "
        "goes in its own field."
    )


class Profile(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    handle = models.CharField(max_length=64, unique=True)
    hf_username = models.CharField("Hugging Face username", max_length=96, blank=True)
    public_attribution = models.BooleanField(
        default=True, help_text="Appear by handle in releases; otherwise 'anonymous'."
    )
    quota_samples_per_day = models.PositiveIntegerField(null=True, blank=True)
    banned = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by the first upload that stores a sample: the public count of contributors is then
    # kept as work happens instead of a DISTINCT over every sample.
    first_sample_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Handles name people on pages and in releases: `Alice` is not a second `alice`, even
        # when two sign-ups race past the form's check.
        constraints = [
            models.UniqueConstraint(Lower("handle"), name="profile_unique_lower_handle"),
        ]

    def __str__(self) -> str:
        return self.handle


def normalise_temperature(value: float) -> float:
    """Temperatures are matched to slots after rounding: 0.6000001 from a client is 0.6."""
    return round(float(value), 4)


def hash_token(raw: str) -> str:
    # Tokens carry 256 bits of randomness, so a plain SHA-256 is enough (no slow KDF needed),
    # and it lets authentication look a token up by its digest in one indexed query.
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def live(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, help_text="The first characters, to recognise it.")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @staticmethod
    def generate() -> str:
        return TOKEN_PREFIX + secrets.token_urlsafe(32)

    @property
    def is_live(self) -> bool:
        return self.revoked_at is None


class NodeStatus(models.TextChoices):
    ACTIVE = "active"
    IDLE = "idle"
    LOST = "lost"


class ComputeNode(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="nodes"
    )
    name = models.CharField(max_length=100)
    backend = models.CharField(max_length=32)
    models_served = models.JSONField(default=list, help_text="[{id, revision}]")
    hardware = models.JSONField(default=dict)
    worker_version = models.CharField(max_length=32, blank=True)
    registered_at = models.DateTimeField(auto_now_add=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="node_unique_name")]

    def __str__(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def status(self) -> str:
        """Derived from the last heartbeat, so it can never go stale in the table."""
        return self.status_given(leasing=None)

    def status_given(self, *, leasing: bool | None) -> str:
        """The status, given whether the node holds a live lease (None: look it up), so a list
        of nodes asks once for all of them."""
        if self.last_heartbeat is None:
            return NodeStatus.IDLE
        cfg = settings.THINKPOOL
        lost_after = timedelta(
            seconds=cfg["HEARTBEAT_INTERVAL_S"] * cfg["LOST_AFTER_MISSED_HEARTBEATS"]
        )
        if timezone.now() - self.last_heartbeat > lost_after:
            return NodeStatus.LOST
        if leasing is None:
            leasing = self.leases.filter(state=LeaseState.LIVE).exists()
        return NodeStatus.ACTIVE if leasing else NodeStatus.IDLE


class Slot(models.Model):
    """(prompt, model, temperature): needs `target` samples.

    Invariant, kept by the leasing and upload services under row locks:
        0 <= filled + outstanding <= target
    `outstanding` counts samples promised by live lease items; `filled` counts samples
    received that were counted towards the target.
    """

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="slots")
    # No index of its own: lookups by set go through `slot_open_by_coverage`. A plain index on
    # the set tempts PostgreSQL's planner into reading every slot of a set made since the last
    # ANALYZE (a new set looks tiny) and sorting them, instead of the open ones in order.
    prompt_set = models.ForeignKey(
        PromptSet, on_delete=models.CASCADE, related_name="slots", db_index=False
    )
    model = models.CharField(max_length=200)
    temperature = models.FloatField()
    target = models.PositiveIntegerField()
    filled = models.PositiveIntegerField(default=0)
    outstanding = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "model", "temperature"], name="slot_unique_key"
            ),
            models.CheckConstraint(
                condition=Q(filled__gte=0)
                & Q(outstanding__gte=0)
                & Q(target__gte=F("filled") + F("outstanding")),
                name="slot_never_over_assigned",
            ),
        ]
        indexes = [
            # Serves the leasing query: equality on set and model, least covered first, then
            # prompt by prompt across the plan's temperatures. Partial: only slots still short
            # of their target are in it, so a set whose slots are all filled costs one empty
            # index probe, however many slots it has.
            models.Index(
                fields=["prompt_set", "model", "filled", "outstanding", "prompt", "temperature"],
                condition=Q(target__gt=F("filled") + F("outstanding")),
                name="slot_open_by_coverage",
            ),
        ]

    def __str__(self) -> str:
        return f"prompt {self.prompt_id} / {self.model} @ {self.temperature}"

    @property
    def short_by(self) -> int:
        return self.target - self.filled - self.outstanding


class SlotFrontier(models.Model):
    """How far slots are made, per (set, model, temperature): prompts of the set with a higher
    `Prompt.seq` have no slot yet. Not the prompt id: ids come from one sequence shared by
    concurrent imports, which commit in any order, so a lower id can become visible after a
    higher one was passed. A set's `seq` is handed out under the set's row lock and committed
    before the next import takes it, so seqs become visible in order."""

    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="frontiers")
    model = models.CharField(max_length=200)
    temperature = models.FloatField()
    last_seq = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["prompt_set", "model", "temperature"], name="frontier_unique_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prompt_set_id} / {self.model} @ {self.temperature}: {self.last_seq}"


class LeaseState(models.TextChoices):
    LIVE = "live"
    DONE = "done"
    RELEASED = "released"
    EXPIRED = "expired"


class Lease(models.Model):
    # PROTECT: a cascade would delete live leases without giving their slots back. A node is
    # deleted through contributors.services.nodes.delete_node, which releases them first; a
    # user with leases is not deleted (like one with samples).
    node = models.ForeignKey(ComputeNode, on_delete=models.PROTECT, related_name="leases")
    contributor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="leases"
    )
    model = models.CharField(max_length=200)
    # Chosen by the client and journaled before it asks: a request whose answer was lost is
    # asked again with the same key and gets the same lease, never a second one it cannot see.
    # NULL, not "", for no key: the unique constraint below skips NULLs.
    key = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    state = models.CharField(max_length=16, choices=LeaseState.choices, default=LeaseState.LIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    # How far each heartbeat pushes the deadline: the shortest of its prompt sets' leases.
    lease_seconds = models.PositiveIntegerField(default=3600)
    deadline = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["node", "key"],
                condition=Q(key__isnull=False),
                name="lease_unique_key_per_node",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "deadline"]),
            models.Index(fields=["contributor", "state"]),
            models.Index(fields=["node", "state"]),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} ({self.state})"

    @property
    def effective_state(self) -> str:
        """What a client should act on: a live lease past its deadline is expired, whether or
        not the periodic expiry has closed it yet (it no longer takes heartbeats)."""
        if self.state == LeaseState.LIVE and self.deadline <= timezone.now():
            return LeaseState.EXPIRED
        return self.state


class LeaseItem(models.Model):
    """One slot handed to one lease: `n` samples asked for."""

    lease = models.ForeignKey(Lease, on_delete=models.CASCADE, related_name="items")
    slot = models.ForeignKey(Slot, on_delete=models.CASCADE, related_name="lease_items")
    n = models.PositiveIntegerField()
    received = models.PositiveIntegerField(default=0, help_text="Samples uploaded for this item.")
    # Set when the lease closes: how many of `n` went back to the pool unfulfilled.
    returned = models.PositiveIntegerField(default=0)
    # Asked for a spot check (SpotCheck.replica): its samples are compared with another
    # contributor's and touch none of the slot's counters (`filled`, `outstanding`).
    replica = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["lease", "slot"], name="leaseitem_unique_slot"),
        ]

    def __str__(self) -> str:
        return f"item {self.pk} of lease {self.lease_id}"

    @property
    def pending(self) -> int:
        """Samples still promised by this item (counted in the slot's `outstanding`, unless it
        is a replica)."""
        return max(self.n - self.received - self.returned, 0)


class SampleOrigin(models.Model):
    """Where a sample came from: kept here so the dataset (scoring) needs no crowd tables."""

    sample = models.OneToOneField(
        Sample, on_delete=models.CASCADE, primary_key=True, related_name="origin"
    )
    node = models.ForeignKey(ComputeNode, on_delete=models.SET_NULL, null=True, blank=True)
    lease_item = models.ForeignKey(LeaseItem, on_delete=models.SET_NULL, null=True, blank=True)

    def __str__(self) -> str:
        return f"origin of sample {self.sample_id}"


class ModelStatus(models.TextChoices):
    UNREVIEWED = "unreviewed"
    ALLOWED = "allowed"
    BLOCKED = "blocked"


class KnownModel(models.Model):
    """A model id some node registered. A contributor names models freely, so a name nobody
    reviewed opens at most THINKPOOL["UNREVIEWED_MODEL_MAX_SLOTS"] slots (across every set that
    takes any model) until a maintainer allows it; a blocked one is refused outright. A set
    that names the model in its `models_allowed` has allowed it for that set already."""

    model_id = models.CharField(max_length=200, unique=True)
    status = models.CharField(
        max_length=16, choices=ModelStatus.choices, default=ModelStatus.UNREVIEWED
    )
    # Slots made for this model in sets that admit it only by a pattern or by taking any
    # model: what the cap above counts.
    slots_opened = models.PositiveIntegerField(default=0)
    introduced_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    first_seen = models.DateTimeField(auto_now_add=True)
    note = models.TextField(blank=True)

    class Meta:
        # The Hub treats ids case-insensitively: `Org/Model` is not a second name (nor a
        # second allowance, nor n more guesses per prompt).
        constraints = [
            models.UniqueConstraint(Lower("model_id"), name="knownmodel_unique_lower_id"),
        ]
        indexes = [
            models.Index(fields=["introduced_by", "status"], name="knownmodel_introduced_status")
        ]

    def __str__(self) -> str:
        return f"{self.model_id} ({self.status})"


class BountyKind(models.TextChoices):
    DATA = "data", "data: reach a number of verified samples"
    ENGINEERING = "engineering", "engineering: a piece of work judged by maintainers"


class BountyStatus(models.TextChoices):
    OPEN = "open"
    IN_PROGRESS = "in_progress", "in progress"
    COMPLETED = "completed"
    AWARDED = "awarded"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


# Statuses a bounty can still move out of by work (progress, completion, expiry).
BOUNTY_LIVE = (BountyStatus.OPEN, BountyStatus.IN_PROGRESS)


class Bounty(models.Model):
    """A call for work. `data`: reach `target_verified` verified samples of a prompt set or a
    domain (optionally of models matching `model_pattern`, of prompts in `language`); progress
    is counted by contributors.services.bounties from disclosed verdicts, never typed in.
    `engineering`: a piece of work a maintainer judges, completed with a link to it.

    Status moves only forward: open -> in_progress -> completed -> awarded, or to expired /
    cancelled from open or in progress; each move is one conditional UPDATE (services)."""

    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=16, choices=BountyKind.choices, default=BountyKind.DATA)
    status = models.CharField(
        max_length=16, choices=BountyStatus.choices, default=BountyStatus.OPEN, db_index=True
    )
    # --- the target of a data bounty: a set, or a domain ---
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.PROTECT, null=True, blank=True)
    domain = models.CharField(max_length=16, blank=True)
    model_pattern = models.CharField(
        max_length=200, blank=True, help_text='fnmatch pattern of model ids ("Qwen/*"). Empty: any.'
    )
    language = models.CharField(
        max_length=16, blank=True, help_text="Language of the prompts (set's language). Empty: any."
    )
    target_verified = models.PositiveIntegerField(
        default=0, help_text="Verified samples to reach (data bounties)."
    )
    # --- the reward ---
    reward_points = models.PositiveIntegerField(default=0)
    sponsor_prize = models.CharField(max_length=200, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)
    # --- what happened ---
    progress = models.PositiveIntegerField(
        default=0, help_text="Verified samples counted toward the target (kept by a task)."
    )
    work_url = models.URLField(max_length=500, blank=True, help_text="Engineering: the work.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    awarded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "bounties"
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.title

    def clean(self) -> None:
        # Not a database constraint: bounties made before kinds existed have no target.
        from django.core.exceptions import ValidationError

        if self.kind == BountyKind.DATA:
            if not self.target_verified:
                raise ValidationError({"target_verified": "A data bounty needs a target."})
            if not self.prompt_set_id and not self.domain:
                raise ValidationError("A data bounty targets a prompt set or a domain.")

    @property
    def percent(self) -> int:
        if not self.target_verified:
            return 100 if self.status in (BountyStatus.COMPLETED, BountyStatus.AWARDED) else 0
        return min(100, self.progress * 100 // self.target_verified)


class ClaimStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class BountyClaim(models.Model):
    """A contributor's claim on a bounty. For an engineering bounty a maintainer approves it
    and sets its `share`; for a data bounty the award writes each contributor's share from
    their verified samples toward the target."""

    bounty = models.ForeignKey(Bounty, on_delete=models.CASCADE, related_name="claims")
    contributor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bounty_claims"
    )
    status = models.CharField(
        max_length=16, choices=ClaimStatus.choices, default=ClaimStatus.PENDING
    )
    share = models.FloatField(null=True, blank=True, help_text="Fraction of the points, 0..1.")
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bounty", "contributor"], name="claim_unique"),
            models.CheckConstraint(
                condition=Q(share__isnull=True) | (Q(share__gte=0) & Q(share__lte=1)),
                name="claim_share_fraction",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.contributor} on {self.bounty_id} ({self.status})"


class BountyContribution(models.Model):
    """A contributor's verified samples counted toward a data bounty (kept with `progress`)."""

    bounty = models.ForeignKey(Bounty, on_delete=models.CASCADE, related_name="contributions")
    contributor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    verified = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bounty", "contributor"], name="contribution_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.contributor}: {self.verified} toward {self.bounty_id}"


# --- credit ---------------------------------------------------------------------------------


class PromptCredit(models.Model):
    """A contributor's credit for one prompt, as last settled (contributors.services.credit):
    their verified samples of it (disclosed ones only) and the points those earn. Settling
    compares with this row and writes the difference to the ledger."""

    contributor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    verified = models.PositiveIntegerField(default=0)
    points = models.FloatField(default=0.0)
    settled_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["prompt", "contributor"], name="promptcredit_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.contributor} / prompt {self.prompt_id}: {self.points}"


class CreditKind(models.TextChoices):
    SAMPLES = "samples"
    BOUNTY = "bounty"


class CreditEntry(models.Model):
    """The credit ledger: every change of a contributor's credit, with when and why. A
    contributor's credit over a period is the sum of their entries in it."""

    contributor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credit_entries"
    )
    kind = models.CharField(max_length=16, choices=CreditKind.choices)
    points = models.FloatField()
    verified = models.IntegerField(default=0, help_text="Change in verified samples credited.")
    prompt = models.ForeignKey(
        Prompt, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    bounty = models.ForeignKey(
        Bounty, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "credit entries"
        indexes = [
            models.Index(fields=["contributor", "at"], name="credit_contributor_at"),
            models.Index(fields=["at"], name="credit_at"),
        ]
        constraints = [
            # A bounty pays each contributor once.
            models.UniqueConstraint(
                fields=["bounty", "contributor"],
                condition=Q(kind="bounty"),
                name="credit_bounty_once",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.contributor} {self.points:+.2f} ({self.kind})"


class Period(models.TextChoices):
    WEEK = "week"
    MONTH = "month"
    ALL = "all", "all time"


class LeaderboardRow(models.Model):
    """The leaderboard as last computed (contributors.tasks.refresh_leaderboard, every minute):
    pages read these few rows, never the ledger."""

    period = models.CharField(max_length=8, choices=Period.choices)
    rank = models.PositiveIntegerField()
    contributor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    handle = models.CharField(max_length=64)
    points = models.FloatField()
    verified = models.IntegerField()
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["period", "rank"], name="leaderboard_unique_rank"),
            models.UniqueConstraint(
                fields=["period", "contributor"], name="leaderboard_unique_contributor"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.period} #{self.rank}: {self.handle}"


# --- trust and quotas (contributors.services.trust) -----------------------------------------


class ReputationFields(models.Model):
    """What trust and the daily quota are made of; kept per contributor and per node by
    contributors.services.trust, and shown to the contributor. Correctness moves them only
    once disclosed (the sample's prompt closed); expired lease items move them at once."""

    streak = models.PositiveIntegerField(default=0, help_text="Consecutive valid samples.")
    valid = models.PositiveIntegerField(default=0)
    invalid = models.PositiveIntegerField(default=0)
    expired = models.PositiveIntegerField(
        default=0, help_text="Lease items that expired with samples still owed (hoarding)."
    )
    flagged = models.PositiveIntegerField(
        default=0, help_text="Automatic flags raised (copying, attestation, spot checks)."
    )
    trust = models.FloatField(default=0.0)
    daily_quota = models.PositiveIntegerField(help_text="Prompts it may lease per UTC day.")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True


class Reputation(ReputationFields):
    contributor = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reputation"
    )

    def __str__(self) -> str:
        return f"reputation of {self.contributor}"


class NodeReputation(ReputationFields):
    node = models.OneToOneField(ComputeNode, on_delete=models.CASCADE, related_name="reputation")

    def __str__(self) -> str:
        return f"reputation of node {self.node_id}"


class ReputationKind(models.TextChoices):
    VALID = "valid"
    INVALID = "invalid"
    EXPIRED = "expired"
    FLAGGED = "flagged"


class ReputationEvent(models.Model):
    """The reputation ledger: each thing that moved a contributor's (and their node's)
    reputation, once. A judged sample moves it exactly once (`valid` or `invalid`, one row per
    sample), an expired lease item once (`expired`, one row per item): settling again finds
    the row and moves nothing."""

    contributor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    node = models.ForeignKey(
        ComputeNode, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    kind = models.CharField(max_length=16, choices=ReputationKind.choices)
    sample = models.ForeignKey(
        Sample, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    lease_item = models.ForeignKey(
        LeaseItem, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # For `flagged`: the flag. Deleted with it (a maintainer clearing a flag voids its event:
    # contributors.services.trust replays the rest).
    flag = models.ForeignKey(
        "scoring.Flag", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    # Whether this (bad) event cut the quota: one expired lease or one finding (the flags one
    # check raised together) cuts once, however many items or samples it holds. Kept so that
    # replaying the ledger gives exactly what recording did.
    cuts = models.BooleanField(default=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sample"],
                condition=Q(kind__in=["valid", "invalid"]),
                name="repevent_sample_once",
            ),
            models.UniqueConstraint(
                fields=["lease_item"],
                condition=Q(kind="expired"),
                name="repevent_item_once",
            ),
            models.UniqueConstraint(
                fields=["flag"], condition=Q(kind="flagged"), name="repevent_flag_once"
            ),
        ]
        indexes = [models.Index(fields=["contributor", "at"], name="repevent_contributor_at")]

    def __str__(self) -> str:
        return f"{self.contributor} {self.kind}"


class LeaseDay(models.Model):
    """Prompts (lease items) leased in one UTC day, per contributor (`node` NULL) and per node:
    the daily quota's counter, added to in the leasing transaction under the profile lock."""

    contributor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    node = models.ForeignKey(
        ComputeNode, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    day = models.DateField()
    prompts = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["contributor", "day"],
                condition=Q(node__isnull=True),
                name="leaseday_unique_contributor",
            ),
            models.UniqueConstraint(
                fields=["node", "day"],
                condition=Q(node__isnull=False),
                name="leaseday_unique_node",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.contributor} / {self.node_id or '-'} {self.day}: {self.prompts}"


class SpotCheckState(models.TextChoices):
    OPEN = "open"  # waiting for a second contributor to lease it
    LEASED = "leased"  # its replica item is out (or came back with samples)
    COMPARED = "compared"  # both sides judged and compared, once the prompt closed
    VOID = "void"  # nothing to compare (the prompt closed with one side empty)


class SpotCheck(models.Model):
    """Spot-check replication (contributors.services.spotchecks): the samples asked of one
    lease item (`original`) are asked again, for the same (prompt, model, temperature), of a
    second, independent contributor (`replica`, an item of their lease). Once the prompt
    closes the two are compared: pass rates for verifiable prompts, reward and length for the
    others. The replica's samples are a check, not data (Sample.replica)."""

    original = models.OneToOneField(LeaseItem, on_delete=models.CASCADE, related_name="spot_check")
    slot = models.ForeignKey(Slot, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=200)  # the slot's, for the leasing query
    # The original's contributor: the replica is never leased to them.
    contributor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    n = models.PositiveIntegerField()
    replica = models.OneToOneField(
        LeaseItem, on_delete=models.SET_NULL, null=True, blank=True, related_name="replica_of"
    )
    replica_contributor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    state = models.CharField(
        max_length=16, choices=SpotCheckState.choices, default=SpotCheckState.OPEN
    )
    created_at = models.DateTimeField(default=timezone.now)
    compared_at = models.DateTimeField(null=True, blank=True)
    agree = models.BooleanField(null=True, blank=True)
    evidence = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            # Leasing looks for open checks of a model's slots, oldest first.
            models.Index(
                fields=["model", "created_at"],
                condition=Q(state="open"),
                name="spotcheck_open",
            ),
            models.Index(fields=["contributor", "compared_at"], name="spotcheck_by_original"),
            models.Index(
                fields=["replica_contributor", "compared_at"], name="spotcheck_by_replica"
            ),
        ]

    def __str__(self) -> str:
        return f"spot check of item {self.original_id} ({self.state})"
