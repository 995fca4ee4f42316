from django.db import migrations, models
from django.db.models import F


def mark_received_as_queued(apps, schema_editor):
    """Samples waiting at migration time were queued by the code before this one (or are left
    to the SWEEP_AFTER_S sweep, as before): the minute sweep must not send them all again."""
    Sample = apps.get_model("scoring", "Sample")
    Sample.objects.filter(status="received").update(queued_at=F("status_changed_at"))


class Migration(migrations.Migration):
    dependencies = [("scoring", "0003_prompt_seq_and_counters")]

    operations = [
        migrations.AddField(
            model_name="sample",
            name="queued_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(mark_received_as_queued, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="sample",
            index=models.Index(
                condition=models.Q(("queued_at__isnull", True), ("status", "received")),
                fields=["status_changed_at"],
                name="sample_unqueued_idx",
            ),
        ),
    ]
