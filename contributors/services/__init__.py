"""Writes for the crowd side, by concern. Every function is keyword-only and transactional.

- accounts: profiles and API tokens
- nodes: registration and heartbeats
- model_policy: which model names may make slots
- ledger: the slot ledger (`Slot.filled`, `Slot.outstanding`): its one owner
- leasing: handing out slots, closing leases
- uploads: storing samples and counting them
"""

from contributors.services.accounts import (
    ensure_profile,
    issue_token,
    revoke_token,
    sign_up,
    update_profile,
)
from contributors.services.errors import ServiceError
from contributors.services.leasing import create_lease, expire_overdue_leases, release_lease
from contributors.services.nodes import delete_node, heartbeat, register_node
from contributors.services.uploads import IngestResult, SampleIn, ingest_samples

__all__ = [
    "IngestResult",
    "SampleIn",
    "ServiceError",
    "create_lease",
    "delete_node",
    "ensure_profile",
    "expire_overdue_leases",
    "heartbeat",
    "ingest_samples",
    "issue_token",
    "register_node",
    "release_lease",
    "revoke_token",
    "sign_up",
    "update_profile",
]
