from django.apps import AppConfig


class ScoringConfig(AppConfig):
    name = "scoring"
    verbose_name = "Dataset and scoring"

    def ready(self) -> None:
        # Registers the start-up checks of scoring's timing relations (scoring/checks.py).
        from scoring import checks  # noqa: F401
