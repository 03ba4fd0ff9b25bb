"""The delegated admin (GDAP) lifecycle, declared: admin roles a partner asks a customer for.

States as Microsoft Graph names them. The partner creates the request (`created`), may
change its roles, then locks it for approval: the customer's global admin gets a link
(`approvalPending`, 90 days). Approved, it steps through `approved` and `activating` to
`active` for its duration; its last 30 days are `expiring` (warnings 30, 7 and 1 days
before the end); then it renews itself by 180 days where allowed, else `expired` (for
good: the partner re-issues it). Either side may end it: `terminationRequested`,
`terminating`, `terminated`. Everything else is derived from this table.
"""

from __future__ import annotations

from partnerflow.states.declaration import (
    N_,
    Command,
    CustomerAdmin,
    Deadline,
    Facts,
    Guard,
    Keep,
    Lifecycle,
    Mark,
    PartnerStaff,
    Publish,
    Recipient,
    Row,
    Send,
    Set,
    Snapshot,
    Take,
    Timer,
    Until,
    Upstream,
    VoidToken,
)
from partnerflow.states.delegated_admin_letters import LETTERS
from partnerflow.states.delegated_admin_models import (
    DELEGATED_ADMIN_ID,
    AccessAssignment,
    AccessStatus,
    AdminAuditEntry,
    ApproveRequest,
    AssignAccess,
    DeclineRequest,
    DelegatedAdminView,
    RemoveAccess,
    StartDelegatedAdmin,
    TerminateByCustomer,
    TerminateByPartner,
    UpdateRoles,
)
from partnerflow.states.models import AdminRole, InvitationStatus, PartnerCommand, Role, refuses_auto_extension

CREATED, PENDING, APPROVED, ACTIVATING = "created", "approvalPending", "approved", "activating"
ACTIVE, EXPIRING, EXPIRED = "active", "expiring", "expired"
TERMINATION_REQUESTED, TERMINATING, TERMINATED = "terminationRequested", "terminating", "terminated"
STATES = (
    CREATED, PENDING, APPROVED, ACTIVATING, ACTIVE, EXPIRING, EXPIRED, TERMINATION_REQUESTED, TERMINATING, TERMINATED
)  # fmt: skip
CUSTOMER, PARTNER = Recipient.CUSTOMER_ADMIN, Recipient.PARTNER_CONTACT

# --- who: the program lets admin agents (and global admins) manage delegated admin ------
ADMINS = PartnerStaff(frozenset({Role.GLOBAL_ADMIN, Role.ADMIN_AGENT}))
LINK, PORTAL, TIMER, UPSTREAM = CustomerAdmin("token"), CustomerAdmin("portal"), Timer(), Upstream()

# --- guards ----------------------------------------------------------------------------
LIVE_TOKEN = Guard(
    "token_is_valid",
    "token must be the live approval token (it is wrong, used, replaced or expired)",
    lambda f: f.token_is_live,
)
NO_SELF_EXTENDING_GLOBAL_ADMIN = Guard(
    "no_auto_extend_with_global_admin",
    "roles may include Global Administrator only when auto_extend is PT0S",
    lambda f: not (f.fields["auto_extend"] and refuses_auto_extension(f.command.roles)),
)
SAME_ROLES = Guard("roles_unchanged", "roles are already these", lambda f: list(f.command.roles) == f.fields["roles"])
AUTO_EXTENDS = Guard("auto_extends", "auto_extend must be P180D", lambda f: bool(f.fields["auto_extend"]))


def _outside(f: Facts) -> list[str]:
    return [str(r) for r in f.command.roles if r not in (f.fields["roles"] or ())]


ROLES_APPROVED = Guard(
    "roles_approved",
    "roles must be among the relationship's approved roles",
    lambda f: not _outside(f),
    explain=lambda f: ", ".join(_outside(f)) + " is not approved",
)


def _status(f: Facts) -> str | None:
    found = (f.fields["assignments"] or {}).get(f.command.group_id)
    return found["status"] if found else None


NEW_GROUP = Guard(
    "group_unassigned",
    "group_id must have no access yet (change an existing group's roles with update_assignment)",
    lambda f: _status(f) in (None, AccessStatus.DELETED),
)
KNOWN_GROUP = Guard(
    "group_assigned", "group_id must have access (assign it first)", lambda f: _status(f) == AccessStatus.ACTIVE
)


def _carried(f: Facts) -> bool:
    """This request was started to be carried by an invitation, and the records name it as the
    request the customer's invitation carried (a request the partner locked itself never is)."""
    return bool(f.fields["carried"]) and bool(f.fact_detail.get(str(f.fields["request_id"])))


INVITATION_ACCEPTED = Guard(
    "invitation_accepted",
    "the reseller invitation that carried this request must have been accepted",
    lambda f: f.fact == 1 and _carried(f),
    needs="invitation_answer",
)
INVITATION_DECLINED = Guard(
    "invitation_declined",
    "the reseller invitation that carried this request must have been declined",
    lambda f: f.fact == 2 and _carried(f),
    needs="invitation_answer",
)
RESELLER_ENDED = Guard(
    "reseller_relationship_ended",
    "the partner's reseller relationship with the customer must have ended",
    lambda f: f.fact == 1,
    needs="reseller_ended",
)
SAME_CUSTOMER = Guard(
    "customer_matches",
    "customer_admin.customer_id must be this relationship's customer",
    lambda f: getattr(f.command.customer_admin, "customer_id", None) == f.customer_id,
)

# --- effects -----------------------------------------------------------------------------
TERM = Until("ends_at", "duration")  # the term runs from activation
RENEWAL = Until("ends_at", "auto_extend", since="ends_at")  # from the old end, however late the timer
ENDED = Set("ends_at", None)
TOLD_OF_TERMINATION = (Send("admin_terminated", CUSTOMER), Send("admin_partner_terminated", PARTNER))
REQUEST = (
    Take("request_id", "request_id"),
    Take("roles", "roles"),
    Take("auto_extend", "auto_extends"),
    Take("carried", "with_invitation"),
)
ENDABLE = (CREATED, PENDING, APPROVED, ACTIVATING, ACTIVE, EXPIRING)
AFTER_CREATED = ENDABLE[1:]  # the customer has seen it: ended in steps, both sides told
ACCESS = (("roles", "roles"),)
GIVE, TAKE_BACK = AccessStatus.ACTIVE, AccessStatus.DELETED
WITHDRAWING = Mark("assignments", AccessStatus.DELETING, among=(AccessStatus.ACTIVE,))
WITHDRAWN = Mark("assignments", AccessStatus.DELETED, among=(AccessStatus.ACTIVE, AccessStatus.DELETING))

# fmt: off
ROWS: tuple[Row, ...] = (
    #   trigger                 sources                   dest                   operation                                      by       guards                              effects
    Row("create",               (),                       CREATED,               "CreateDelegatedAdminRelationship",            ADMINS,  (),                                 (*REQUEST, Publish("granular-admin-relationship-created"))),
    Row("create_with_invitation", (),                     PENDING,               "CreateDelegatedAdminRelationshipRequest",     ADMINS,  (),                                 (*REQUEST, Publish("granular-admin-relationship-approval-requested"))),
    Row("update_roles",         (CREATED,),               CREATED,               "UpdateDelegatedAdminRelationship",            ADMINS,  (NO_SELF_EXTENDING_GLOBAL_ADMIN,),  (Take("roles", "roles"), Publish("granular-admin-relationship-updated")), unchanged_if=SAME_ROLES),
    Row("lock_for_approval",    (CREATED,),               PENDING,               "CreateDelegatedAdminRelationshipRequest",     ADMINS,  (),                                 (Send("approval_request", CUSTOMER, token=True), Publish("granular-admin-relationship-approval-requested"))),
    Row("approve",              (PENDING,),               APPROVED,              "ApproveDelegatedAdminRelationship",           LINK,    (LIVE_TOKEN,),                      (VoidToken(InvitationStatus.ACCEPTED), Send("admin_approved", PARTNER), Publish("granular-admin-relationship-approved"))),
    Row("approve_with_invitation", (PENDING,),            APPROVED,              "ApproveDelegatedAdminRelationship",           UPSTREAM, (INVITATION_ACCEPTED,),            (VoidToken(InvitationStatus.ACCEPTED), Send("admin_approved", PARTNER), Publish("granular-admin-relationship-approved"))),
    Row("decline_with_invitation", (PENDING,),            TERMINATED,            "DeclineDelegatedAdminRelationship",           UPSTREAM, (INVITATION_DECLINED,),            (VoidToken(InvitationStatus.DECLINED), Send("admin_declined", PARTNER), Publish("granular-admin-relationship-declined-by-customer"))),
    Row("decline",              (PENDING,),               TERMINATED,            "DeclineDelegatedAdminRelationship",           LINK,    (LIVE_TOKEN,),                      (VoidToken(InvitationStatus.DECLINED), Send("admin_declined", PARTNER), Publish("granular-admin-relationship-declined-by-customer"))),
    Row("expire_request",       (PENDING,),               EXPIRED,               "ExpireDelegatedAdminRelationshipRequest",     TIMER,   (),                                 (VoidToken(InvitationStatus.EXPIRED), Send("admin_request_expired", PARTNER), Publish("granular-admin-relationship-expired"))),
    Row("begin_activation",     (APPROVED,),              ACTIVATING,            "ActivateDelegatedAdminRelationship",          TIMER,   (),                                 (Publish("granular-admin-relationship-activating"),)),
    Row("activate",             (ACTIVATING,),            ACTIVE,                "ActivateDelegatedAdminRelationship",          TIMER,   (),                                 (TERM, Publish("granular-admin-relationship-activated"))),
    Row("begin_expiring",       (ACTIVE,),                EXPIRING,              "ExpiringDelegatedAdminRelationship",          TIMER,   (),                                 (Publish("granular-admin-relationship-expiring"),)),
    Row("end_term",             (EXPIRING,),              ACTIVE,                "ExtendDelegatedAdminRelationship",            TIMER,   (AUTO_EXTENDS,),                    (RENEWAL, Send("admin_extended", CUSTOMER), Publish("granular-admin-relationship-auto-extended"))),
    Row("end_term",             (EXPIRING,),              EXPIRED,               "ExpireDelegatedAdminRelationship",            TIMER,   (),                                 (ENDED, WITHDRAWN, Send("admin_expired", CUSTOMER), Send("admin_partner_expired", PARTNER), Publish("granular-admin-relationship-expired"))),
    Row("assign",               (ACTIVE,),                ACTIVE,                "CreateDelegatedAdminAccessAssignment",        ADMINS,  (NEW_GROUP, ROLES_APPROVED),        (Keep("assignments", "group_id", ACCESS, GIVE), Publish("granular-admin-access-assignment-created"))),
    Row("assign",               (EXPIRING,),              EXPIRING,              "CreateDelegatedAdminAccessAssignment",        ADMINS,  (NEW_GROUP, ROLES_APPROVED),        (Keep("assignments", "group_id", ACCESS, GIVE), Publish("granular-admin-access-assignment-created"))),
    Row("update_assignment",    (ACTIVE,),                ACTIVE,                "UpdateDelegatedAdminAccessAssignment",        ADMINS,  (KNOWN_GROUP, ROLES_APPROVED),      (Keep("assignments", "group_id", ACCESS, GIVE), Publish("granular-admin-access-assignment-updated"))),
    Row("update_assignment",    (EXPIRING,),              EXPIRING,              "UpdateDelegatedAdminAccessAssignment",        ADMINS,  (KNOWN_GROUP, ROLES_APPROVED),      (Keep("assignments", "group_id", ACCESS, GIVE), Publish("granular-admin-access-assignment-updated"))),
    Row("delete_assignment",    (ACTIVE,),                ACTIVE,                "DeleteDelegatedAdminAccessAssignment",        ADMINS,  (KNOWN_GROUP,),                     (Keep("assignments", "group_id", status=TAKE_BACK), Publish("granular-admin-access-assignment-deleted"))),
    Row("delete_assignment",    (EXPIRING,),              EXPIRING,              "DeleteDelegatedAdminAccessAssignment",        ADMINS,  (KNOWN_GROUP,),                     (Keep("assignments", "group_id", status=TAKE_BACK), Publish("granular-admin-access-assignment-deleted"))),
    Row("terminate",            (CREATED,),               TERMINATED,            "TerminateDelegatedAdminRelationship",         ADMINS,  (),                                 (Set("terminated_by", "partner"), Publish("granular-admin-relationship-terminated"))),
    Row("terminate",            AFTER_CREATED,                  TERMINATION_REQUESTED, "TerminateDelegatedAdminRelationship",         ADMINS,  (),                                 (VoidToken(InvitationStatus.CANCELLED), Set("terminated_by", "partner"), Publish("granular-admin-relationship-termination-requested"))),
    Row("terminate_by_customer", ENDABLE,                 TERMINATION_REQUESTED, "TerminateDelegatedAdminRelationshipByCustomer", PORTAL, (SAME_CUSTOMER,),                   (VoidToken(InvitationStatus.CANCELLED), Set("terminated_by", "customer"), Publish("granular-admin-relationship-termination-requested-by-customer"))),
    Row("end_with_reseller",    ENDABLE,                  TERMINATION_REQUESTED, "TerminateDelegatedAdminRelationship",         UPSTREAM, (RESELLER_ENDED,),                 (VoidToken(InvitationStatus.CANCELLED), Set("terminated_by", "reseller_relationship_ended"), Publish("granular-admin-relationship-termination-requested"))),
    Row("begin_termination",    (TERMINATION_REQUESTED,), TERMINATING,           "TerminatingDelegatedAdminRelationship",       TIMER,   (),                                 (WITHDRAWING, Publish("granular-admin-relationship-terminating"))),
    Row("finish_termination",   (TERMINATING,),           TERMINATED,            "TerminatedDelegatedAdminRelationship",        TIMER,   (),                                 (ENDED, WITHDRAWN, *TOLD_OF_TERMINATION, Publish("granular-admin-relationship-terminated"))),
)

COMMANDS: dict[str, Command] = {
    "update_roles":          Command(UpdateRoles,         "change the roles asked for (only while created)",      "roles"),
    "lock_for_approval":     Command(PartnerCommand,      "lock the roles and mail the approval link to the customer", "lock"),
    "approve":               Command(ApproveRequest,      "the customer's global admin approves (approval page)", "approve"),
    "decline":               Command(DeclineRequest,      "the customer's global admin declines (approval page)", "decline"),
    "assign":                Command(AssignAccess,        "give a partner security group some of the approved roles", "assign"),
    "update_assignment":     Command(AssignAccess,        "change the roles of a group that has access", "update-assignment"),
    "delete_assignment":     Command(RemoveAccess,        "take a group's access away",                     "unassign"),
    "terminate":             Command(TerminateByPartner,  "end the relationship (or withdraw the request)",       "terminate"),
    "terminate_by_customer": Command(TerminateByCustomer, "the customer ends the partner's admin access (its admin center)", "terminate-by-customer"),
}

DEADLINES: tuple[Deadline, ...] = (
    Deadline(PENDING,               after="approval_ttl", fires="expire_request", reminders="approval_reminders_before", reminder=Send("approval_request_reminder", CUSTOMER)),
    Deadline(APPROVED,              after="step",         fires="begin_activation"),
    Deadline(ACTIVATING,            after="step",         fires="activate"),
    Deadline(ACTIVE,                until="ends_at",      lead="expiring_before", fires="begin_expiring"),
    Deadline(EXPIRING,              until="ends_at",      fires="end_term", reminders="expiry_warnings_before",
             reminder=(Send("admin_expiry_warning", CUSTOMER), Send("admin_partner_expiry_warning", PARTNER))),
    Deadline(TERMINATION_REQUESTED, after="step",         fires="begin_termination"),
    Deadline(TERMINATING,           after="step",         fires="finish_termination"),
)
# fmt: on

#: Each role in plain words, for the approval page (msgids: the reader gets their language).
ROLE_WORDS: dict[AdminRole, str] = {
    AdminRole.GLOBAL_ADMINISTRATOR: N_("everything in your tenant, including other admins' roles"),
    AdminRole.GLOBAL_READER: N_("read everything a Global Administrator can, change nothing"),
    AdminRole.USER_ADMINISTRATOR: N_("create and manage users and groups, reset their passwords"),
    AdminRole.HELPDESK_ADMINISTRATOR: N_("reset passwords of users who are not admins"),
    AdminRole.LICENSE_ADMINISTRATOR: N_("assign and remove licenses"),
    AdminRole.BILLING_ADMINISTRATOR: N_("buy, manage subscriptions and read invoices"),
    AdminRole.EXCHANGE_ADMINISTRATOR: N_("manage Exchange Online mailboxes and mail flow"),
    AdminRole.SHAREPOINT_ADMINISTRATOR: N_("manage SharePoint and OneDrive"),
    AdminRole.TEAMS_ADMINISTRATOR: N_("manage Microsoft Teams"),
    AdminRole.SECURITY_ADMINISTRATOR: N_("manage security settings and read security reports"),
    AdminRole.SECURITY_READER: N_("read security settings and reports"),
    AdminRole.SERVICE_SUPPORT_ADMINISTRATOR: N_("open and read support requests with Microsoft"),
    AdminRole.DIRECTORY_READERS: N_("read the directory: users, groups and apps"),
}


def view(snap: Snapshot) -> DelegatedAdminView:
    s = snap.start
    ends_at = snap.fields.get("ends_at")
    return DelegatedAdminView(
        state=snap.state,
        cloud=s.cloud,
        partner_id=s.partner.id,
        customer_id=s.customer.id,
        request_id=s.request_id,
        partner_name=s.partner.name or s.partner.id,
        company=s.customer.company,
        display_name=s.display_name,
        roles=tuple(snap.fields["roles"] or ()),
        duration=s.duration,
        auto_extend=s.auto_extend,
        ends_at=ends_at if snap.state in (ACTIVE, EXPIRING) else None,
        approval_expires_at=snap.token_expires_at if snap.state == PENDING else None,
        assignments=tuple(
            AccessAssignment(group_id=group, **entry) for group, entry in (snap.fields.get("assignments") or {}).items()
        ),
        audit=tuple(AdminAuditEntry.model_validate(e, from_attributes=True) for e in snap.audit),
    )


DELEGATED_ADMIN = Lifecycle(
    name="delegated_admin",
    workflow_type="DelegatedAdmin",
    workflow_id=DELEGATED_ADMIN_ID,
    states=STATES,
    final=frozenset({EXPIRED, TERMINATED}),
    rows=ROWS,
    commands=COMMANDS,
    deadlines=DEADLINES,
    fields={
        "request_id": None,
        "carried": False,
        "roles": None,
        "auto_extend": False,
        "ends_at": None,
        "terminated_by": None,
        "assignments": {},
    },
    flags={},
    start_model=StartDelegatedAdmin,
    view_model=DelegatedAdminView,
    begin=lambda start: "create_with_invitation" if start.with_invitation else "create",
    view=view,
    summary=lambda s: f"{s.display_name}: {s.customer.company} ← {s.partner.id} ({s.cloud.value})",
    state_attribute="DelegatedAdminState",
    web_ui_codes=("terminated_by",),
    token_expiry_attribute="InvitationExpiresAt",
    moment_attributes={"AdminAccessEndsAt": "ends_at"},
    token_query="approval",
    table="entities",
    letters=LETTERS,
)

__all__ = ["DELEGATED_ADMIN", "ROLE_WORDS"]
