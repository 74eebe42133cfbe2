from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Registry Browser"

    def ready(self) -> None:
        from dashboard import checks, signals  # noqa: F401  (registers checks and receivers)
