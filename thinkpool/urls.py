from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from thinkpool import views

urlpatterns = [
    path("", include("thinkpool.web.dataset")),
    path("", include("thinkpool.web.account")),
    path("bounties/", include("thinkpool.web.bounties")),
    path("leaderboard/", include("thinkpool.web.leaderboard")),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("admin/queue-health/", views.queue_health, name="queue-health"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(("contributors.api.urls", "api"), namespace="api")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's set-up script as a file of its own (the CSP allows
    # no inline script), and the template takes its inline <style> out to a stylesheet.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(
            url_name="schema", template_name="thinkpool/swagger_ui.html"
        ),
        name="api-docs",
    ),
]

handler404 = "thinkpool.views.not_found"
handler500 = "thinkpool.views.server_error"
