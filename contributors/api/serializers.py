"""Input and output serializers, one pair per endpoint. Output serializers name every field
they emit: nothing from PromptGold is reachable from here."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.validators import MaxLengthValidator, RegexValidator
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from contributors.models import (
    MODEL_REVISION_RE,
    ComputeNode,
    Lease,
    LeaseItem,
    LeaseState,
    model_id_problem,
)

MAX_JSON_FIELD_CHARS = 8192
# Counters are stored as PostgreSQL `integer`; ids as `bigint`. Bigger numbers are bad input
# (a 400), never a database error.
MAX_INT32 = 2**31 - 1
MAX_ID = 2**63 - 1


class FastProhibitSurrogates(ProhibitSurrogateCharactersValidator):
    """DRF's check walks a string character by character in Python: 0.1 ms per 4 KB completion,
    the largest single cost of an upload. Encoding to UTF-8 finds a lone surrogate in C; the
    slow walk runs only to name the character in the message."""

    def __call__(self, value: Any) -> None:
        try:
            str(value).encode("utf-8")
        except UnicodeEncodeError:
            super().__call__(value)


class StrictCharField(serializers.CharField):
    """A string, and only a string: DRF's CharField would turn 42 or True into text."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators = [
            FastProhibitSurrogates() if isinstance(v, ProhibitSurrogateCharactersValidator) else v
            for v in self.validators
        ]

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def _small_json(value: Any, what: str) -> Any:
    """A small JSON object that every database can store: PostgreSQL's jsonb takes no NUL."""
    if len(json.dumps(value)) > MAX_JSON_FIELD_CHARS:
        raise serializers.ValidationError(
            f"{what} is larger than {MAX_JSON_FIELD_CHARS} characters"
        )
    if _has_nul(value):
        raise serializers.ValidationError(f"{what} contains a NUL character")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


# --- nodes ------------------------------------------------------------------------------------


class ModelIdField(StrictCharField):
    """A Hugging Face model id (contributors.models.model_id_problem says why not)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=200, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        problem = model_id_problem(value)
        if problem is not None:
            raise serializers.ValidationError(problem, code="invalid_model_id")
        return value


class ModelRefSerializer(serializers.Serializer):
    id = ModelIdField()
    revision = StrictCharField(max_length=100, allow_null=True, allow_blank=True, required=False)

    def validate_revision(self, value: str | None) -> str | None:
        if value and not MODEL_REVISION_RE.fullmatch(value):
            raise serializers.ValidationError(
                "A revision is a branch, tag or commit hash (letters, digits, `._/-`)."
            )
        return value


class NodeInSerializer(serializers.Serializer):
    name = serializers.RegexField(r"^[\w.@+-][\w .@+-]*$", max_length=100)
    backend = StrictCharField(max_length=32)
    models = ModelRefSerializer(many=True, allow_empty=False, max_length=64)  # type: ignore[call-arg]
    hardware = serializers.DictField(required=False, default=dict)
    worker_version = StrictCharField(max_length=32, required=False, allow_blank=True, default="")

    def validate_hardware(self, value: dict[str, Any]) -> dict[str, Any]:
        return _small_json(value, "hardware")


class NodeOutSerializer(serializers.ModelSerializer):
    models = serializers.JSONField(source="models_served")
    status = serializers.CharField()
    heartbeat_interval_s = serializers.SerializerMethodField()

    class Meta:
        model = ComputeNode
        fields = [
            "id",
            "name",
            "backend",
            "models",
            "hardware",
            "worker_version",
            "status",
            "registered_at",
            "last_heartbeat",
            "heartbeat_interval_s",
        ]

    def get_heartbeat_interval_s(self, node: ComputeNode) -> int:
        return int(settings.THINKPOOL["HEARTBEAT_INTERVAL_S"])


class HeartbeatInSerializer(serializers.Serializer):
    # Only the leases named here are extended (services.nodes.heartbeat says why).
    leases = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        max_length=64,
        required=False,
        default=list,
    )


class LeaseStateOutSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    state = serializers.CharField(source="effective_state")
    deadline = serializers.DateTimeField()


class HeartbeatOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    last_heartbeat = serializers.DateTimeField()
    leases_extended = serializers.IntegerField()
    leases = LeaseStateOutSerializer(many=True)


# --- leases -----------------------------------------------------------------------------------


class LeaseInSerializer(serializers.Serializer):
    node = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    model = ModelIdField()
    max_prompts = serializers.IntegerField(min_value=1, default=16)
    # The client's key for this request (services.leasing.create_lease): the same key again
    # returns the same lease.
    key = StrictCharField(
        max_length=64,
        required=False,
        allow_null=True,
        validators=[RegexValidator(r"^[A-Za-z0-9_-]+$", "Letters, digits, `_` and `-` only.")],
    )

    def validate_max_prompts(self, value: int) -> int:
        cap = settings.THINKPOOL["MAX_PROMPTS_PER_LEASE"]
        if value > cap:
            raise serializers.ValidationError(f"at most {cap} prompts per lease")
        return value


class LeaseItemOutSerializer(serializers.ModelSerializer):
    prompt = serializers.SerializerMethodField()
    sampling = serializers.SerializerMethodField()

    class Meta:
        model = LeaseItem
        fields = ["id", "prompt", "sampling"]

    def get_prompt(self, item: LeaseItem) -> dict[str, Any]:
        prompt = item.slot.prompt
        return {"id": prompt.pk, "messages": prompt.prompt_set.render_messages(prompt.messages)}

    def get_sampling(self, item: LeaseItem) -> dict[str, Any]:
        plan = item.slot.prompt.prompt_set
        return {
            "temperature": item.slot.temperature,
            "top_p": plan.top_p,
            "max_tokens": plan.max_tokens,
            "n": item.n,
        }


class LeaseOutSerializer(serializers.ModelSerializer):
    node = serializers.IntegerField(source="node_id")
    state = serializers.CharField(source="effective_state")
    items = serializers.SerializerMethodField()

    class Meta:
        model = Lease
        fields = ["id", "key", "node", "model", "state", "deadline", "created_at", "items"]

    def get_items(self, lease: Lease) -> list[dict[str, Any]]:
        return LeaseItemOutSerializer(self.context["items"], many=True).data  # type: ignore[return-value]


class LeaseQuerySerializer(serializers.Serializer):
    node = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    state = serializers.ChoiceField(choices=LeaseState.values, required=False)


class LeaseSummaryOutSerializer(serializers.ModelSerializer):
    node = serializers.IntegerField(source="node_id")
    state = serializers.CharField(source="effective_state")
    items_open = serializers.IntegerField(help_text="Items still waiting for samples.")

    class Meta:
        model = Lease
        fields = ["id", "key", "node", "model", "state", "deadline", "created_at", "items_open"]


class LeaseListOutSerializer(serializers.Serializer):
    results = LeaseSummaryOutSerializer(many=True)


class ReleaseOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()
    released = serializers.IntegerField()


# --- samples ----------------------------------------------------------------------------------


class SamplingSerializer(serializers.Serializer):
    temperature = serializers.FloatField(min_value=0.0, max_value=10.0)
    top_p = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    max_tokens = serializers.IntegerField(min_value=1, max_value=MAX_INT32, required=False)
    n = serializers.IntegerField(min_value=1, max_value=MAX_INT32, required=False)


class SampleInSerializer(serializers.Serializer):
    client_id = serializers.UUIDField()
    # May be empty: a generation cut off inside its reasoning has nothing after it, and the
    # truncation verifier, not the upload, is what judges that.
    completion = StrictCharField(trim_whitespace=False, allow_blank=True)
    reasoning = StrictCharField(
        trim_whitespace=False, allow_null=True, allow_blank=True, required=False, default=None
    )
    model = ModelIdField()
    model_revision = StrictCharField(
        max_length=100, allow_null=True, allow_blank=True, required=False, default=""
    )
    sampling = serializers.DictField()
    finish_reason = StrictCharField(max_length=32)
    prompt_tokens = serializers.IntegerField(
        min_value=0, max_value=MAX_INT32, allow_null=True, required=False, default=None
    )
    completion_tokens = serializers.IntegerField(
        min_value=0, max_value=MAX_INT32, allow_null=True, required=False, default=None
    )
    generation_ms = serializers.IntegerField(
        min_value=0, max_value=MAX_INT32, allow_null=True, required=False, default=None
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = settings.THINKPOOL["MAX_COMPLETION_CHARS"]
        for name in ("completion", "reasoning"):
            field = self.fields[name]
            assert isinstance(field, serializers.CharField)
            field.max_length = limit
            field.validators.append(MaxLengthValidator(limit))
        # One nested validator per serializer, reused for every sample of a batch: a new
        # serializer per sample deep-copies its fields, the largest cost of an upload.
        self._sampling = SamplingSerializer()

    def validate_sampling(self, value: dict[str, Any]) -> dict[str, Any]:
        _small_json(value, "sampling")
        known = self._sampling.run_validation(value)
        return {**value, **known}

    def validate_model_revision(self, value: str | None) -> str:
        return value or ""


class LeaseSampleInSerializer(SampleInSerializer):
    item = serializers.IntegerField(min_value=1, max_value=MAX_ID)


class OfflineSampleInSerializer(SampleInSerializer):
    prompt = serializers.IntegerField(min_value=1, max_value=MAX_ID)


class UploadEnvelopeSerializer(serializers.Serializer):
    samples = serializers.ListField(child=serializers.JSONField(), allow_empty=False)

    def validate_samples(self, value: list[Any]) -> list[Any]:
        cap = settings.THINKPOOL["MAX_SAMPLES_PER_UPLOAD"]
        if len(value) > cap:
            raise serializers.ValidationError(f"at most {cap} samples per request")
        return value


class UploadOutSerializer(serializers.Serializer):
    accepted = serializers.ListField(child=serializers.DictField())
    duplicates = serializers.ListField(child=serializers.DictField())
    rejected = serializers.ListField(child=serializers.DictField())


class VerdictOutSerializer(serializers.Serializer):
    # No `details` (they can quote the reference answer or a hidden test) and no `score` (for
    # code it is tests passed / total, which tells how many hidden tests there are).
    verifier = serializers.CharField()
    version = serializers.IntegerField()
    status = serializers.CharField()


class SampleOutSerializer(serializers.Serializer):
    """A sample as its contributor sees it (scoring/disclosure.py decides the judgement part):
    while the prompt is open, `disclosed` is false, `status` is `accepted` or `rejected` (by a
    gold-free check) and `verdicts` are the gold-free checks only; once it is closed, the real
    status, reason and verdict statuses."""

    id = serializers.IntegerField()
    client_id = serializers.UUIDField()
    prompt = serializers.IntegerField(source="prompt_id")
    model = serializers.CharField()
    model_revision = serializers.CharField()
    temperature = serializers.FloatField()
    finish_reason = serializers.CharField()
    counted = serializers.BooleanField()
    disclosed = serializers.BooleanField()
    status = serializers.CharField()
    status_reason = serializers.CharField()
    received_at = serializers.DateTimeField()
    verdicts = VerdictOutSerializer(many=True)


class ModelDifficultyOutSerializer(serializers.Serializer):
    model = serializers.CharField()
    samples = serializers.IntegerField()
    judged = serializers.IntegerField()
    verified = serializers.IntegerField()
    pass_rate = serializers.FloatField(allow_null=True)
    difficulty = serializers.FloatField(allow_null=True, help_text="1 - pass rate.")


class PromptDifficultyOutSerializer(serializers.Serializer):
    prompt = serializers.IntegerField()
    disclosed = serializers.BooleanField(
        help_text="False while the prompt is open: its pass rates are verdicts, shown at close."
    )
    models = ModelDifficultyOutSerializer(many=True)


class LimitsOutSerializer(serializers.Serializer):
    max_samples_per_upload = serializers.IntegerField()
    max_body_bytes = serializers.IntegerField()
    max_completion_chars = serializers.IntegerField()
    max_prompts_per_lease = serializers.IntegerField()


class StatusCountsOutSerializer(serializers.Serializer):
    received = serializers.IntegerField()
    scoring = serializers.IntegerField()
    verified = serializers.IntegerField()
    rejected = serializers.IntegerField()
    error = serializers.IntegerField()


class ReasonCountOutSerializer(serializers.Serializer):
    status = serializers.CharField()
    reason = serializers.CharField()
    count = serializers.IntegerField()


class SampleSummaryOutSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    awaiting_disclosure = serializers.IntegerField(
        help_text="Samples of prompts still open: their correctness is not disclosed yet."
    )
    disclosed = StatusCountsOutSerializer(help_text="Samples of closed prompts, by status.")
    top_reasons = ReasonCountOutSerializer(
        many=True, help_text="The most frequent reasons among disclosed samples not verified."
    )


# Values of `GET /samples/?status=`: a real status matches samples of closed prompts only
# (scoring.disclosure); `awaiting_disclosure` matches the samples of open prompts.
SAMPLE_STATUS_FILTERS = [
    "awaiting_disclosure",
    "received",
    "scoring",
    "verified",
    "rejected",
    "error",
]


class SampleQuerySerializer(serializers.Serializer):
    node = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False)
    status = serializers.ChoiceField(choices=SAMPLE_STATUS_FILTERS, required=False)
    since = serializers.DateTimeField(required=False)
    page = serializers.IntegerField(min_value=1, max_value=MAX_INT32, default=1)
    page_size = serializers.IntegerField(min_value=1, max_value=500, default=100)


class SamplePageOutSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = SampleOutSerializer(many=True)


class StandingOutSerializer(serializers.Serializer):
    trust = serializers.FloatField(help_text="0..1: min(1, streak / trust_streak) x good share.")
    streak = serializers.IntegerField(help_text="Consecutive valid samples (disclosed ones).")
    valid = serializers.IntegerField()
    invalid = serializers.IntegerField()
    expired = serializers.IntegerField(help_text="Lease items left to expire owing samples.")
    flagged = serializers.IntegerField(
        help_text="Automatic flags raised on your samples or conduct (not cleared)."
    )
    daily_quota = serializers.IntegerField(help_text="Prompts it may lease per UTC day.")
    leased_today = serializers.IntegerField()
    left_today = serializers.IntegerField()
    resets_at = serializers.DateTimeField(help_text="When the day's count starts again (UTC).")


class NodeStandingOutSerializer(StandingOutSerializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class ReputationOutSerializer(StandingOutSerializer):
    nodes = NodeStandingOutSerializer(many=True, help_text="The same, per node.")


class MeOutSerializer(serializers.Serializer):
    username = serializers.CharField()
    handle = serializers.CharField()
    hf_username = serializers.CharField()
    public_attribution = serializers.BooleanField()
    limits = LimitsOutSerializer()
    samples = SampleSummaryOutSerializer()
    reputation = ReputationOutSerializer(
        help_text="Trust and the daily lease quota (settings THINKPOOL_TRUST); correctness "
        "counts only once a prompt closes."
    )
