from django.apps import AppConfig


class ThinkpoolConfig(AppConfig):
    name = "thinkpool"
    verbose_name = "Thinkpool"
