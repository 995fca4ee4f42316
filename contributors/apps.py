from django.apps import AppConfig


class ContributorsConfig(AppConfig):
    name = "contributors"
    verbose_name = "Contributors and work distribution"

    def ready(self) -> None:
        # The slot ledger's pre_delete receiver: connected in every process that loads models.
        from contributors.services import ledger  # noqa: F401
