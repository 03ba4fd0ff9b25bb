"""The reseller relationship lifecycle (CONTRACT.md), declared: one screen says all it means.

Change the lifecycle here; the workflow, its validators, the records, the letters sent,
the docs, the CLI and the tests are all derived from this table.
"""

from __future__ import annotations

from typing import Any

from partnerflow.states.declaration import (
    Add,
    By,
    Cascade,
    Command,
    CustomerAdmin,
    Deadline,
    Facts,
    Guard,
    Lifecycle,
    PartnerStaff,
    Publish,
    Recipient,
    Row,
    Send,
    Set,
    Snapshot,
    Take,
    Timer,
    VoidToken,
)
from partnerflow.states.models import (
    RELATIONSHIP_ID,
    AcceptInvitation,
    AcceptReferral,
    AuditEntry,
    Cloud,
    DeclineInvitation,
    InvitationStatus,
    PartnerCommand,
    PartnerKind,
    ReasonedCommand,
    RelationshipView,
    RemovePartner,
    Role,
    SetPurchasePermission,
    StartRelationship,
    State,
    SuspendRelationship,
    SuspensionReason,
)
from partnerflow.states.policy import provider_of
from partnerflow.states.relationship_letters import LETTERS

S, R, T = State, Role, InvitationStatus  # T: why a link token stopped working
CUSTOMER, PARTNER, REQUESTER = Recipient.CUSTOMER_ADMIN, Recipient.PARTNER_CONTACT, Recipient.REQUESTER
PROVIDER = Recipient.PROVIDER_CONTACT

# --- who: the role policy. helpdesk_agent is in no row: it reads only. ------------------
STAFF = PartnerStaff(frozenset({R.GLOBAL_ADMIN, R.ADMIN_AGENT, R.SALES_AGENT}))
ADMINS = PartnerStaff(frozenset({R.GLOBAL_ADMIN, R.ADMIN_AGENT}))
# An indirect reseller's relationships are ended by its indirect provider, not by itself; so
# are they suspended (unresumed, a suspension ends the relationship).
NOT_BY_RESELLERS = frozenset({PartnerKind.INDIRECT_RESELLER})
ENDERS: By = PartnerStaff(STAFF.roles, of=("partner", "provider"), kinds_denied=NOT_BY_RESELLERS)
SUSPENDERS: By = PartnerStaff(ADMINS.roles, of=("partner", "provider"), kinds_denied=NOT_BY_RESELLERS)
# No referrals in the US Government cloud; the referring partner makes one.
REFERRER: By = PartnerStaff(STAFF.roles, of=("referrer",), clouds_denied=frozenset({Cloud.USGOV}))
REFERRED: By = PartnerStaff(STAFF.roles, clouds_denied=frozenset({Cloud.USGOV}))
LINK, PORTAL, TIMER = CustomerAdmin("token"), CustomerAdmin("portal"), Timer()

# --- guards, with the rule's words -----------------------------------------------------
LIVE_TOKEN = Guard(
    "token_is_valid",
    "token must be the live invitation token (it is wrong, used, replaced or expired)",
    lambda f: f.token_is_live,
)
AGREEMENT = Guard(
    "agreement_accepted",
    "accept_agreement must be true: the customer agreement has to be accepted",
    lambda f: getattr(f.command, "accept_agreement", False) is True,
)
GRANTS = Guard(
    "grants_purchase",
    "allowed must change the purchase permission",
    lambda f: f.command.allowed is True and not f.fields["purchase_permission"],
)
REVOKES = Guard(
    "revokes_purchase",
    "allowed must change the purchase permission",
    lambda f: f.command.allowed is False and bool(f.fields["purchase_permission"]),
)
SAME_PERMISSION = Guard(
    "permission_unchanged",
    "allowed is already the purchase permission",
    lambda f: f.command.allowed == f.fields["purchase_permission"],
)
NO_SUBSCRIPTIONS = Guard(
    "no_active_subscriptions",
    "the customer must have no active subscriptions before the relationship ends",
    lambda f: f.fact is None or f.fact == 0,
    needs="active_subscriptions",
    # What to cancel first, as the billing feed says: "3 active (2 Azure plan, 1 Microsoft 365 E3)".
    explain=lambda f: (
        f"{f.fact} active"
        + (
            " (" + ", ".join(f"{n} {what}" for what, n in sorted(f.fact_detail.items()) if n) + ")"
            if f.fact_detail
            else ""
        )
    ),
)
SAME_CUSTOMER = Guard(
    "customer_matches",
    "customer_admin.customer_id must be this relationship's customer",
    lambda f: getattr(f.command.customer_admin, "customer_id", None) == f.customer_id,
)

# --- effects -----------------------------------------------------------------------------
INVITE = Send("invitation", CUSTOMER, token=True)
# Where the invitation goes: the inviting partner says so, or the referred one when it accepts.
ADMIN_FROM_START, ADMIN_FROM_REFERRED = Take("admin_email", "customer.admin_email"), Take("admin_email", "admin_email")
# An invitation may carry a delegated admin request: answering the invitation answers it too.
CARRIED = Take("admin_request", "delegated_admin.request_id")
CARRIED_APPROVED = Cascade(
    "delegated_admin", "approve_with_invitation", since="carried-admin-request", if_set="admin_request"
)
CARRIED_DECLINED = Cascade(
    "delegated_admin", "decline_with_invitation", since="carried-admin-request", if_set="admin_request"
)
PERMISSION_OFF = Set("purchase_permission", False)  # [ours] the permission ends with the relationship
# Ending the reseller relationship ends the partner's admin access too (the program's rule).
ADMIN_ACCESS_ENDS = Cascade("delegated_admin", "end_with_reseller", since="end-delegated-admin")
ENDED_EFFECTS = (Send("customer_ended", CUSTOMER), ADMIN_ACCESS_ENDS, Publish("reseller-relationship-ended"))

# fmt: off
ROWS: tuple[Row, ...] = (
    #   trigger                    sources                            dest                  operation                            by             guards                        effects
    Row("invite",                  (),                                S.INVITED,            "CreateCustomerInvitation",          STAFF,         (),                           (ADMIN_FROM_START, CARRIED, INVITE, Publish("reseller-relationship-invitation-created"))),
    Row("refer",                   (),                                S.REFERRED,           "CreateReferral",                    REFERRER,      (),                           (Publish("referral-created"),)),
    Row("accept_referral",         (S.REFERRED,),                     S.INVITED,            "UpdateReferral",                    REFERRED,      (),                           (ADMIN_FROM_REFERRED, INVITE, Publish("referral-updated"))),
    Row("decline_referral",        (S.REFERRED,),                     S.REFERRAL_DECLINED,  "UpdateReferral",                    REFERRED,      (),                           (Send("referrer_declined", REQUESTER), Publish("referral-updated"))),
    Row("expire_referral",         (S.REFERRED,),                     S.REFERRAL_EXPIRED,   "UpdateReferral",                    TIMER,         (),                           (Send("referrer_expired", REQUESTER), Publish("referral-expired"))),
    Row("resend_invitation",       (S.INVITED, S.INVITATION_EXPIRED), S.INVITED,            "ResendCustomerInvitation",          STAFF,         (),                           (INVITE, Publish("reseller-relationship-invitation-resent"))),
    Row("cancel_invitation",       (S.INVITED, S.INVITATION_EXPIRED), S.CANCELLED,          "CancelCustomerInvitation",          STAFF,         (),                           (VoidToken(T.CANCELLED), Publish("reseller-relationship-invitation-cancelled"))),
    Row("expire_invitation",       (S.INVITED,),                      S.INVITATION_EXPIRED, "ExpireCustomerInvitation",          TIMER,         (),                           (VoidToken(T.EXPIRED), Send("partner_expired", PARTNER, since="notify-partner-on-invitation-expiry"), Publish("reseller-relationship-invitation-expired"))),
    Row("accept_invitation",       (S.INVITED,),                      S.ACTIVE,             "AddCustomer",                       LINK,          (LIVE_TOKEN, AGREEMENT),      (VoidToken(T.ACCEPTED), Add("reinstated_count", if_set="reinstating"), Set("reinstating", False), Send("partner_accepted", PARTNER), Send("provider_accepted", PROVIDER, since="two-tier"), CARRIED_APPROVED, Publish("reseller-relationship-accepted-by-customer", indirect="indirect-reseller-relationship-accepted-by-customer"))),
    Row("decline_invitation",      (S.INVITED,),                      S.DECLINED,           "DeclineCustomerInvitation",         LINK,          (LIVE_TOKEN,),                (VoidToken(T.DECLINED), CARRIED_DECLINED, Publish("reseller-relationship-declined-by-customer"))),
    Row("set_purchase_permission", (S.ACTIVE,),                       S.ACTIVE,             "CreateSelfServePolicy",             ADMINS,        (GRANTS,),                    (Set("purchase_permission", True), Publish("purchase-permission-changed")), unchanged_if=SAME_PERMISSION),
    Row("set_purchase_permission", (S.ACTIVE,),                       S.ACTIVE,             "DeleteSelfServePolicy",             ADMINS,        (REVOKES,),                   (PERMISSION_OFF, Publish("purchase-permission-changed")), unchanged_if=SAME_PERMISSION),
    Row("suspend",                 (S.ACTIVE,),                       S.SUSPENDED,          "SuspendCustomerRelationship",       SUSPENDERS,     (),                           (PERMISSION_OFF, Take("suspension_reason", "reason"), Send("customer_suspended", CUSTOMER), Publish("reseller-relationship-suspended"))),
    Row("resume",                  (S.SUSPENDED,),                    S.ACTIVE,             "ResumeCustomerRelationship",        SUSPENDERS,     (),                           (Set("suspension_reason", None), Send("customer_resumed", CUSTOMER), Publish("reseller-relationship-resumed"))),
    Row("end_suspended",           (S.SUSPENDED,),                    S.ENDED,              "RemovePartnerCustomerRelationship", TIMER,         (),                           (Set("suspension_reason", None), Send("partner_suspension_ended", PARTNER), *ENDED_EFFECTS)),
    Row("end_relationship",        (S.ACTIVE, S.SUSPENDED),           S.ENDED,              "RemovePartnerCustomerRelationship", ENDERS,        (NO_SUBSCRIPTIONS,),          (PERMISSION_OFF, Set("suspension_reason", None), *ENDED_EFFECTS)),
    Row("remove_partner",          (S.ACTIVE, S.SUSPENDED),           S.ENDED,              "RemovePartnerCustomerRelationship", PORTAL,        (SAME_CUSTOMER,),             (PERMISSION_OFF, Set("suspension_reason", None), Send("partner_removed", PARTNER), ADMIN_ACCESS_ENDS, Publish("reseller-relationship-removed-by-customer"))),
    Row("reinstate",               (S.ENDED,),                        S.INVITED,            "ReinstateCustomer",                 STAFF,         (),                           (Set("reinstating", True), Set("admin_request", None), Send("reinstatement", CUSTOMER, token=True), Publish("reseller-relationship-reinstated"))),
)

COMMANDS: dict[str, Command] = {
    "accept_referral":         Command(AcceptReferral,        "accept a referral: the invitation goes to admin_email", "accept-referral"),
    "decline_referral":        Command(ReasonedCommand,       "decline a referral",                                 "decline-referral"),
    "resend_invitation":       Command(PartnerCommand,        "send a new invitation (the old link stops working)", "resend"),
    "cancel_invitation":       Command(ReasonedCommand,       "cancel an invitation",                               "cancel"),
    "accept_invitation":       Command(AcceptInvitation,      "the customer's global admin accepts (invitation page)", "accept-invitation"),
    "decline_invitation":      Command(DeclineInvitation,     "the customer's global admin declines (invitation page)", "decline-invitation"),
    "set_purchase_permission": Command(SetPurchasePermission, "allow or stop self-service purchases",               "permission", {"allowed": ("--allow", "--deny")}),
    "suspend":                 Command(SuspendRelationship,   "suspend an active relationship (non-payment, compliance, ...)", "suspend"),
    "resume":                  Command(PartnerCommand,        "resume a suspended relationship",                    "resume"),
    "end_relationship":        Command(ReasonedCommand,       "end an active or suspended relationship",            "end"),
    "remove_partner":          Command(RemovePartner,         "the customer removes its reseller (customer portal)", "remove-partner"),
    "reinstate":               Command(PartnerCommand,        "invite an ended relationship's customer again",      "reinstate"),
}

DEADLINES: tuple[Deadline, ...] = (
    Deadline(S.REFERRED, after="referral_ttl",   fires="expire_referral"),
    Deadline(S.INVITED,  after="invitation_ttl", fires="expire_invitation", reminders="reminders_before", reminder=Send("reminder", CUSTOMER)),
    Deadline(S.SUSPENDED, after="suspension_ttl", fires="end_suspended",  reminders="suspension_warnings_before",
             reminder=(Send("suspension_warning", CUSTOMER), Send("partner_suspension_warning", PARTNER))),
)
# fmt: on


def view(snap: Snapshot) -> RelationshipView:
    s = snap.start
    return RelationshipView(
        state=State(snap.state),
        purchase_permission=bool(snap.fields["purchase_permission"]),
        reinstated_count=int(snap.fields["reinstated_count"]),
        cloud=s.cloud,
        partner_id=s.partner.id,
        customer_id=s.customer.id,
        partner_name=s.partner.name or s.partner.id,
        company=s.customer.company,
        admin_email=admin_email(snap),
        admin_request=snap.fields.get("admin_request"),
        indirect_provider_id=provider_of(s),
        suspension_reason=SuspensionReason(reason) if (reason := snap.fields.get("suspension_reason")) else None,
        suspension_ends_at=snap.deadline_at if snap.state == S.SUSPENDED else None,
        origin=s.origin,
        invitation_expires_at=snap.token_expires_at if snap.state == S.INVITED else None,
        audit=tuple(AuditEntry.model_validate(e, from_attributes=True) for e in snap.audit),
    )


def admin_email(snap: Snapshot) -> str | None:
    """The field, or the start input's for a relationship begun before the field was kept."""
    found = snap.fields.get("admin_email") or snap.start.customer.admin_email
    return str(found) if found else None


def from_v2(continued: dict[str, Any]) -> dict[str, Any]:
    """A run continued by the workflow before the engine carried `RelationshipData`'s shape."""
    if "fields" in continued:
        return continued
    v = dict(continued)
    v["fields"] = {k: v.pop(k) for k in ("purchase_permission", "reinstated_count", "reinstating") if k in v}
    v["token_seq"] = v.pop("invitation_seq", 0)
    invited_at, referred_at = v.pop("invited_at", None), v.pop("referred_at", None)
    v["entered_at"] = invited_at if v.get("state") == S.INVITED else referred_at
    return v


RELATIONSHIP = Lifecycle(
    name="relationship",
    workflow_type="Relationship",
    workflow_id=RELATIONSHIP_ID,
    states=tuple(State),
    final=frozenset({S.REFERRAL_DECLINED, S.REFERRAL_EXPIRED, S.DECLINED, S.CANCELLED}),
    rows=ROWS,
    commands=COMMANDS,
    deadlines=DEADLINES,
    fields={
        "purchase_permission": False,
        "reinstated_count": 0,
        "admin_email": None,
        "suspension_reason": None,
        "admin_request": None,
    },
    flags={"reinstating": False},
    start_model=StartRelationship,
    view_model=RelationshipView,
    begin=lambda start: "refer" if start.origin == "referral" else "invite",
    view=view,
    # The partner's id, not a name: the registry's name is in the details, once the start is admitted.
    summary=lambda s: f"{s.customer.company} ← {s.partner.id} ({s.cloud.value})",
    state_attribute="RelationshipState",
    web_ui_codes=("suspension_reason",),
    # Two tiers: the indirect provider the registry names for the reseller, in its customer list too.
    from_start={"indirect_provider_id": provider_of},
    token_expiry_attribute="InvitationExpiresAt",
    token_query="invitation",
    table="customers",
    letters=LETTERS,
    upgrade=from_v2,
)

__all__ = ["RELATIONSHIP", "Facts"]
