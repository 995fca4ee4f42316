"""API v1. Views are thin: parse with an input serializer, call a service or selector, answer
with an output serializer."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from contributors import selectors, services
from contributors.api import serializers as io
from contributors.models import ComputeNode
from contributors.services import trust


class MeView(APIView):
    @extend_schema(responses=io.MeOutSerializer)
    def get(self, request: Request) -> Response:
        profile = services.ensure_profile(user=request.user)
        data = {
            "username": request.user.get_username(),
            "handle": profile.handle,
            "hf_username": profile.hf_username,
            "public_attribution": profile.public_attribution,
            # What this server accepts, so a client sizes its requests to fit.
            "limits": {
                "max_samples_per_upload": settings.THINKPOOL["MAX_SAMPLES_PER_UPLOAD"],
                "max_body_bytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
                "max_completion_chars": settings.THINKPOOL["MAX_COMPLETION_CHARS"],
                "max_prompts_per_lease": settings.THINKPOOL["MAX_PROMPTS_PER_LEASE"],
            },
            "samples": selectors.sample_summary(user=request.user),
            "reputation": trust.standing(user=request.user),
        }
        return Response(io.MeOutSerializer(data).data)


class NodeListView(APIView):
    @extend_schema(responses=io.NodeOutSerializer(many=True))
    def get(self, request: Request) -> Response:
        nodes = ComputeNode.objects.filter(owner_id=request.user.pk).order_by("pk")
        return Response(io.NodeOutSerializer(nodes, many=True).data)

    @extend_schema(
        request=io.NodeInSerializer,
        responses={201: io.NodeOutSerializer, 200: io.NodeOutSerializer},
    )
    def post(self, request: Request) -> Response:
        incoming = io.NodeInSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        node, created = services.register_node(
            owner=request.user,
            name=data["name"],
            backend=data["backend"],
            models_served=[
                {"id": m["id"], "revision": m.get("revision") or None} for m in data["models"]
            ],
            hardware=data["hardware"],
            worker_version=data["worker_version"],
        )
        return Response(
            io.NodeOutSerializer(node).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class NodeHeartbeatView(APIView):
    @extend_schema(request=io.HeartbeatInSerializer, responses=io.HeartbeatOutSerializer)
    def post(self, request: Request, node_id: int) -> Response:
        node = selectors.node_for(user=request.user, node_id=node_id)
        # An empty body is an empty object: a heartbeat that names no lease.
        incoming = io.HeartbeatInSerializer(data=request.data or {})
        incoming.is_valid(raise_exception=True)
        extended, leases = services.heartbeat(
            node=node, lease_ids=incoming.validated_data["leases"]
        )
        out = {
            "id": node.pk,
            "status": node.status,
            "last_heartbeat": node.last_heartbeat,
            "leases_extended": extended,
            "leases": leases,
        }
        return Response(io.HeartbeatOutSerializer(out).data)


class LeaseListView(APIView):
    @extend_schema(
        operation_id="v1_leases_list",
        parameters=[io.LeaseQuerySerializer],
        responses=io.LeaseListOutSerializer,
    )
    def get(self, request: Request) -> Response:
        query = io.LeaseQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        leases = selectors.node_leases(
            user=request.user,
            node_id=query.validated_data["node"],
            state=query.validated_data.get("state"),
        )
        return Response(io.LeaseListOutSerializer({"results": leases}).data)

    @extend_schema(
        request=io.LeaseInSerializer,
        responses={
            201: io.LeaseOutSerializer,
            200: OpenApiResponse(
                io.LeaseOutSerializer, description="The lease this `key` made before."
            ),
            204: OpenApiResponse(description="No work for that model."),
        },
    )
    def post(self, request: Request) -> Response:
        incoming = io.LeaseInSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        node = selectors.node_for(user=request.user, node_id=data["node"])
        lease, made = services.create_lease(
            node=node, model=data["model"], max_prompts=data["max_prompts"], key=data.get("key")
        )
        if lease is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        # A lease made now: every item; one asked for again: what is still open of it.
        items = (
            selectors.lease_items(lease=lease) if made else selectors.open_lease_items(lease=lease)
        )
        return Response(
            io.LeaseOutSerializer(lease, context={"items": items}).data,
            status=status.HTTP_201_CREATED if made else status.HTTP_200_OK,
        )


class LeaseDetailView(APIView):
    @extend_schema(responses=io.LeaseOutSerializer)
    def get(self, request: Request, lease_id: int) -> Response:
        lease = selectors.lease_for(user=request.user, lease_id=lease_id)
        items = selectors.open_lease_items(lease=lease)
        return Response(io.LeaseOutSerializer(lease, context={"items": items}).data)

    @extend_schema(responses=io.ReleaseOutSerializer)
    def delete(self, request: Request, lease_id: int) -> Response:
        lease = selectors.lease_for(user=request.user, lease_id=lease_id)
        released = services.release_lease(lease=lease)
        out = {"id": lease.pk, "state": "released", "released": released}
        return Response(io.ReleaseOutSerializer(out).data)


def _with_page(params: Any, page: int, page_size: int) -> str:
    query = params.copy()
    query["page"] = str(page)
    query["page_size"] = str(page_size)
    return str(query.urlencode())


def _validate_samples(
    raw_samples: list[Any],
    serializer_class: type[io.SampleInSerializer],
    result: services.IngestResult,
) -> list[services.SampleIn]:
    """Validates each sample on its own: one bad sample is rejected with its reasons, the rest
    go on."""
    valid: list[services.SampleIn] = []
    # One serializer for the whole batch, as DRF's ListSerializer does: building one per item
    # deep-copies its fields each time.
    validator = serializer_class()
    for raw in raw_samples:
        client_id = raw.get("client_id") if isinstance(raw, dict) else None
        if not isinstance(raw, dict):
            result.reject(client_id, "invalid", "Each sample must be a JSON object.")
            continue
        try:
            data: dict[str, Any] = dict(validator.run_validation(raw))
        except ValidationError as exc:
            result.reject(client_id, "invalid", "The sample is not valid.", exc.get_full_details())
            continue
        valid.append(services.SampleIn(**data))
    return valid


class LeaseSamplesView(APIView):
    @extend_schema(request=io.UploadEnvelopeSerializer, responses=io.UploadOutSerializer)
    def post(self, request: Request, lease_id: int) -> Response:
        lease = selectors.lease_for(user=request.user, lease_id=lease_id)
        envelope = io.UploadEnvelopeSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        result = services.IngestResult()
        valid = _validate_samples(
            envelope.validated_data["samples"], io.LeaseSampleInSerializer, result
        )
        if valid:
            services.ingest_samples(user=request.user, lease=lease, samples=valid, result=result)
        return Response(io.UploadOutSerializer(result).data)


class SampleListView(APIView):
    @extend_schema(
        operation_id="v1_samples_list",
        parameters=[io.SampleQuerySerializer],
        responses=io.SamplePageOutSerializer,
    )
    def get(self, request: Request) -> Response:
        """The caller's own samples, newest first, paginated."""
        query = io.SampleQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = dict(query.validated_data)
        page, page_size = params.pop("page"), params.pop("page_size")
        count, results = selectors.sample_page(
            user=request.user, page=page, page_size=page_size, **params
        )

        def link(to: int) -> str:
            return request.build_absolute_uri("?" + _with_page(request.query_params, to, page_size))

        out = {
            "count": count,
            "next": link(page + 1) if page * page_size < count else None,
            "previous": link(page - 1) if page > 1 else None,
            "results": results,
        }
        return Response(io.SamplePageOutSerializer(out).data)

    @extend_schema(request=io.UploadEnvelopeSerializer, responses=io.UploadOutSerializer)
    def post(self, request: Request) -> Response:
        """Offline uploads: samples generated outside a lease, matched to prompt ids."""
        envelope = io.UploadEnvelopeSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        result = services.IngestResult()
        valid = _validate_samples(
            envelope.validated_data["samples"], io.OfflineSampleInSerializer, result
        )
        if valid:
            services.ingest_samples(user=request.user, samples=valid, result=result)
        return Response(io.UploadOutSerializer(result).data)


class SampleDetailView(APIView):
    @extend_schema(responses=io.SampleOutSerializer)
    def get(self, request: Request, sample_id: int) -> Response:
        sample = selectors.sample_view(user=request.user, sample_id=sample_id)
        return Response(io.SampleOutSerializer(sample).data)


class PromptDifficultyView(APIView):
    @extend_schema(responses=io.PromptDifficultyOutSerializer)
    def get(self, request: Request, prompt_id: int) -> Response:
        """Per model: pass rate and difficulty of a closed prompt."""
        data = selectors.prompt_difficulty(prompt_id=prompt_id)
        return Response(io.PromptDifficultyOutSerializer(data).data)


class StatsView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list[type] = []

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(selectors.public_stats())
