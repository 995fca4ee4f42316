import django.db.models.deletion
import django.db.models.functions.text
from django.conf import settings
from django.db import migrations, models
from django.db.models import F, Q


def frontiers_to_seq(apps, schema_editor):
    """A frontier that stood at a prompt id now stands just below the first prompt of its set,
    at or below that id, that has no slot for its (model, temperature): the old id-based
    frontier could pass a prompt whose id committed late, and such a prompt is reached again
    now (slots that exist are kept; making them skips conflicts)."""
    SlotFrontier = apps.get_model("contributors", "SlotFrontier")
    Slot = apps.get_model("contributors", "Slot")
    Prompt = apps.get_model("scoring", "Prompt")
    for frontier in SlotFrontier.objects.all():
        below = Prompt.objects.filter(
            prompt_set_id=frontier.prompt_set_id, pk__lte=frontier.last_seq
        )
        with_slot = Slot.objects.filter(
            prompt_set_id=frontier.prompt_set_id,
            model=frontier.model,
            temperature=frontier.temperature,
        ).values("prompt_id")
        first_gap = (
            below.exclude(pk__in=with_slot).order_by("seq").values_list("seq", flat=True).first()
        )
        if first_gap is not None:
            last_seq = first_gap - 1
        else:
            last_seq = below.order_by("-seq").values_list("seq", flat=True).first() or 0
        SlotFrontier.objects.filter(pk=frontier.pk).update(last_seq=last_seq)


def record_known_models(apps, schema_editor):
    """The names nodes registered before names were recorded: each recorded once, introduced
    by the owner of the first node that has it, with the slots it already opened charged to
    its allowance."""
    ComputeNode = apps.get_model("contributors", "ComputeNode")
    KnownModel = apps.get_model("contributors", "KnownModel")
    Slot = apps.get_model("contributors", "Slot")
    seen: dict[str, int] = {}
    for node in ComputeNode.objects.order_by("pk"):
        for entry in node.models_served or []:
            name = entry.get("id") if isinstance(entry, dict) else None
            if isinstance(name, str) and name and name.lower() not in seen:
                seen[name.lower()] = node.owner_id
                KnownModel.objects.create(
                    model_id=name,
                    introduced_by_id=node.owner_id,
                    slots_opened=Slot.objects.filter(model=name).count(),
                )


def first_samples(apps, schema_editor):
    Profile = apps.get_model("contributors", "Profile")
    Sample = apps.get_model("scoring", "Sample")
    for profile in Profile.objects.all():
        first = (
            Sample.objects.filter(contributor_id=profile.user_id)
            .order_by("received_at")
            .values_list("received_at", flat=True)
            .first()
        )
        if first is not None:
            Profile.objects.filter(pk=profile.pk).update(first_sample_at=first)


class Migration(migrations.Migration):
    dependencies = [
        ("contributors", "0002_lease_seconds_and_slot_frontier"),
        ("scoring", "0003_prompt_seq_and_counters"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="lease",
            name="key",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AddConstraint(
            model_name="lease",
            constraint=models.UniqueConstraint(
                condition=Q(key__isnull=False),
                fields=("node", "key"),
                name="lease_unique_key_per_node",
            ),
        ),
        migrations.AddField(
            model_name="profile",
            name="first_sample_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(first_samples, migrations.RunPython.noop),
        migrations.RenameField(
            model_name="slotfrontier", old_name="last_prompt_id", new_name="last_seq"
        ),
        migrations.RunPython(frontiers_to_seq, migrations.RunPython.noop),
        migrations.RemoveIndex(
            model_name="slot",
            name="contributor_prompt__f126af_idx",
        ),
        migrations.AddIndex(
            model_name="slot",
            index=models.Index(
                condition=Q(target__gt=F("filled") + F("outstanding")),
                fields=["prompt_set", "model", "filled", "outstanding", "prompt", "temperature"],
                name="slot_open_by_coverage",
            ),
        ),
        migrations.AlterField(
            model_name="lease",
            name="node",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="leases",
                to="contributors.computenode",
            ),
        ),
        migrations.AlterField(
            model_name="lease",
            name="contributor",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="leases",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="slot",
            name="prompt_set",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="slots",
                to="scoring.promptset",
            ),
        ),
        migrations.CreateModel(
            name="KnownModel",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("model_id", models.CharField(max_length=200, unique=True)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("unreviewed", "Unreviewed"),
                            ("allowed", "Allowed"),
                            ("blocked", "Blocked"),
                        ],
                        default="unreviewed",
                        max_length=16,
                    ),
                ),
                ("slots_opened", models.PositiveIntegerField(default=0)),
                ("first_seen", models.DateTimeField(auto_now_add=True)),
                ("note", models.TextField(blank=True)),
                (
                    "introduced_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        django.db.models.functions.text.Lower("model_id"),
                        name="knownmodel_unique_lower_id",
                    )
                ],
                "indexes": [
                    models.Index(
                        fields=["introduced_by", "status"], name="knownmodel_introduced_status"
                    )
                ],
            },
        ),
        migrations.RunPython(record_known_models, migrations.RunPython.noop),
]
