"""What a lifecycle's workflow knows, as pydantic models: one object, so it can be handed on whole.

Kept out of the interpreter's module on purpose: the workflow sandbox re-imports that
module for every workflow it runs, and rebuilding a pydantic class each time costs
milliseconds of CPU and kilobytes of memory per open relationship. Passed through, these
classes are built once per worker.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, JsonValue

from partnerflow.states.messages import Audited
from partnerflow.states.models import InvitationStatus


class Who(BaseModel):
    """Who caused a change, as the audit trail names them."""

    model_config = ConfigDict(frozen=True)

    user: str
    role: str


SYSTEM = Who(user="partnerflow", role="system")


class Entry(Audited):
    """One change in the workflow's audit tail (the records keep them all)."""

    seq: int


class LifeData(BaseModel):
    """Everything the workflow knows beyond its start input."""

    state: str
    seq: int = 0  # changes so far: part of every idempotency key
    fields: dict[str, JsonValue] = {}
    entered_at: datetime | None = None  # when the current state's deadline clock started
    entered_seq: int = 0  # the change that started it: part of the reminders' keys
    reminders_sent: int = 0
    token_seq: int = 0  # link tokens issued so far
    token_sha256: str | None = None
    expires_at: datetime | None = None  # the latest link token's deadline
    inviter: str = ""  # the partner user who sent the latest link
    audit: list[Entry] = []
    # Hashes of tokens that no longer work and why, so a link opened again can say so.
    spent_tokens: list[tuple[str, InvitationStatus]] = []
    claimed_by: str | None = None  # the update that holds the live token while it runs
    recent_updates: list[str] = []  # ids of the last updates applied, carried across runs
    proofs_used: list[tuple[str, datetime]] = []  # assertions taken (jti, until when they count)
