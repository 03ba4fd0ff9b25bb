"""What a `Relationship` workflow knows, as pydantic models.

Kept out of `workflows/relationship.py` on purpose: the workflow sandbox re-imports that
module for every workflow it runs, and rebuilding a pydantic class each time costs
milliseconds of CPU and kilobytes of memory per open relationship. Passed through, these
classes are built once per worker.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from states.lifecycle import State
from states.models import AuditEntry, InvitationStatus, StartRelationship


class Who(BaseModel):
    """Who caused a change, as the audit trail names them."""

    user: str
    role: str


SYSTEM = Who(user="partnerflow", role="system")


class RelationshipData(BaseModel):
    """Everything the workflow knows: one object, so it can be handed on whole."""

    start: StartRelationship
    state: State
    seq: int = 0  # changes so far: part of every idempotency key
    purchase_permission: bool = False
    reinstated_count: int = 0
    reinstating: bool = False
    referred_at: datetime | None = None
    invitation_seq: int = 0
    token_sha256: str | None = None
    invited_at: datetime | None = None
    expires_at: datetime | None = None
    reminders_sent: int = 0
    inviter: str = ""
    audit: list[AuditEntry] = []
    # Hashes of tokens that no longer work and why, so a link opened again can say so.
    spent_tokens: list[tuple[str, InvitationStatus]] = []
    claimed_by: str | None = None  # the update that holds the live token while it runs
    recent_updates: list[str] = []  # ids of the last updates applied, carried across runs
