from django.urls import path

from contributors.api import views

urlpatterns = [
    path("me/", views.MeView.as_view(), name="me"),
    path("nodes/", views.NodeListView.as_view(), name="nodes"),
    path(
        "nodes/<int:node_id>/heartbeat/", views.NodeHeartbeatView.as_view(), name="node-heartbeat"
    ),
    path("leases/", views.LeaseListView.as_view(), name="leases"),
    path("leases/<int:lease_id>/", views.LeaseDetailView.as_view(), name="lease"),
    path("leases/<int:lease_id>/samples/", views.LeaseSamplesView.as_view(), name="lease-samples"),
    path("samples/", views.SampleListView.as_view(), name="samples"),
    path("samples/<int:sample_id>/", views.SampleDetailView.as_view(), name="sample"),
    path(
        "prompts/<int:prompt_id>/difficulty/",
        views.PromptDifficultyView.as_view(),
        name="prompt-difficulty",
    ),
    path("stats/", views.StatsView.as_view(), name="stats"),
]
