import django.db.models.deletion
from django.db import migrations, models


def number_prompts(apps, schema_editor):
    """Existing prompts get seqs 1, 2, 3, … per set in id order (all committed by now): one
    statement each (PostgreSQL and SQLite >= 3.33 alike), however many prompts."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "UPDATE scoring_prompt SET seq = numbered.n FROM ("
            " SELECT id, ROW_NUMBER() OVER (PARTITION BY prompt_set_id ORDER BY id) AS n"
            " FROM scoring_prompt) AS numbered WHERE scoring_prompt.id = numbered.id"
        )
        cursor.execute(
            "UPDATE scoring_promptset SET last_prompt_seq = COALESCE("
            " (SELECT MAX(seq) FROM scoring_prompt"
            "  WHERE scoring_prompt.prompt_set_id = scoring_promptset.id), 0)"
        )


class Migration(migrations.Migration):
    dependencies = [("scoring", "0002_sample_claims_prompt_closed")]

    operations = [
        migrations.AddField(
            model_name="promptset",
            name="last_prompt_seq",
            field=models.BigIntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name="prompt",
            name="seq",
            field=models.BigIntegerField(editable=False, null=True),
        ),
        migrations.RunPython(number_prompts, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="prompt",
            name="seq",
            field=models.BigIntegerField(editable=False),
        ),
        migrations.AddConstraint(
            model_name="prompt",
            constraint=models.UniqueConstraint(
                fields=("prompt_set", "seq"), name="prompt_unique_seq"
            ),
        ),
        migrations.AlterField(
            model_name="prompt",
            name="prompt_set",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="prompts",
                to="scoring.promptset",
            ),
        ),
        migrations.CreateModel(
            name="Counter",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=64)),
                ("shard", models.PositiveSmallIntegerField()),
                ("value", models.BigIntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("name", "shard"), name="counter_unique_shard")
                ],
            },
        ),
    ]
