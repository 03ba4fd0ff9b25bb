"""A small approval lifecycle: the partner asks, the customer's admin approves by link or it lapses.

Nothing under `workflows/` or `activities/` knows it: the interpreter runs it from this
declaration and its letters, exactly as it runs the relationship.

PYTEST_DONT_REWRITE: passed through the workflow sandbox.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from partnerflow.states.declaration import (
    Add,
    Command,
    CustomerAdmin,
    Deadline,
    Guard,
    LetterFacts,
    Lifecycle,
    PartnerStaff,
    Publish,
    Recipient,
    Row,
    Send,
    Set,
    Snapshot,
    Timer,
    VoidToken,
)
from partnerflow.states.models import AcceptInvitation, InvitationStatus, PartnerCommand, Role, StartRelationship


class ApprovalView(BaseModel):
    model_config = ConfigDict(frozen=True)

    state: str
    approvals: int
    note: str
    partner_id: str
    customer_id: str


STAFF = PartnerStaff(frozenset({Role.GLOBAL_ADMIN, Role.ADMIN_AGENT}))
LIVE = Guard("token_is_valid", "token must be the live approval token", lambda f: f.token_is_live)
AGREED = Guard(
    "agreement_accepted", "accept_agreement must be true to approve", lambda f: f.command.accept_agreement is True
)


def _approval(f: LetterFacts) -> tuple[str, str]:
    return f"{f.partner_name} asks {f.company} for approval", f"Approve here: {f.link}\nIt lapses {f.expires_at}.\n"


def _nudge(f: LetterFacts) -> tuple[str, str]:
    return f"Still waiting: {f.partner_name}'s request", "Use the link in the first email.\n"


def _approved(f: LetterFacts) -> tuple[str, str]:
    return f"{f.company} approved", f"{f.company} approved {f.partner_name}'s request.\n"


# fmt: off
ROWS = (
    Row("request", (),            "requested", "CreateApprovalRequest", STAFF,                 (),             (Send("approval", Recipient.CUSTOMER_ADMIN, token=True), Publish("approval-requested"))),
    Row("approve", ("requested",), "approved", "ApproveRequest",        CustomerAdmin("token"), (LIVE, AGREED), (VoidToken(InvitationStatus.ACCEPTED), Add("approvals"), Set("note", "approved by link"), Send("approved", Recipient.PARTNER_CONTACT), Publish("approval-approved"))),
    Row("lapse",   ("requested",), "lapsed",   "LapseRequest",          Timer(),                (),             (VoidToken(InvitationStatus.EXPIRED), Publish("approval-lapsed"))),
    Row("revoke",  ("approved",),  "revoked",  "RevokeApproval",        STAFF,                  (),             (Set("note", "revoked"), Publish("approval-revoked"))),
)
# fmt: on


def view(snap: Snapshot) -> ApprovalView:
    return ApprovalView(
        state=snap.state,
        approvals=int(snap.fields["approvals"]),
        note=str(snap.fields["note"]),
        partner_id=snap.start.partner.id,
        customer_id=snap.start.customer.id,
    )


APPROVAL = Lifecycle(
    name="approval",
    workflow_type="Approval",
    workflow_id="approval/{partner_id}/{customer_id}",
    states=("requested", "approved", "lapsed", "revoked"),
    final=frozenset({"lapsed", "revoked"}),
    rows=ROWS,
    commands={
        "approve": Command(AcceptInvitation, "the customer's admin approves", "approve"),
        "revoke": Command(PartnerCommand, "the partner withdraws", "revoke"),
    },
    deadlines=(
        Deadline(
            "requested",
            after="invitation_ttl",
            fires="lapse",
            reminders="reminders_before",
            reminder=Send("nudge", Recipient.CUSTOMER_ADMIN),
        ),
    ),
    fields={"approvals": 0, "note": ""},
    flags={},
    start_model=StartRelationship,
    view_model=ApprovalView,
    begin=lambda start: "request",
    view=view,
    summary=lambda s: f"approval: {s.customer.company} ← {s.partner.name}",
    state_attribute="RelationshipState",
    token_expiry_attribute="InvitationExpiresAt",
    token_query="approval",
    table="entities",
    letters={"approval": _approval, "nudge": _nudge, "approved": _approved},
)
