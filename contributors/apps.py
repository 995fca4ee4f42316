from django.apps import AppConfig


class ContributorsConfig(AppConfig):
    name = "contributors"
    verbose_name = "Contributors and work distribution"

    def ready(self) -> None:
        from contributors.selectors import public_handles

        # The slot ledger's pre_delete receiver: connected in every process that loads models.
        from contributors.services import ledger  # noqa: F401
        from scoring.publishing import attribution

        # Releases credit contributors by the choice kept here; scoring cannot import it.
        attribution.register(public_handles)

        # The disclosed_changed receivers of bounties (a recount of the data bounties it
        # touches) and of credit (below).
        import contributors.services.bounties  # noqa: F401

        # Credit's and trust's disclosed_changed receivers: settle the credit of prompts whose
        # disclosed verdicts changed, and count those verdicts toward trust and quotas.
        from contributors.services import credit, trust  # noqa: F401
