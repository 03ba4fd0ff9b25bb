"""The delegated admin (GDAP) lifecycle's payloads: what callers send and what they read back.

Shapes follow Microsoft Graph's `delegatedAdminRelationship` where it has one (a display
name, an ISO 8601 duration, Entra roles by name, `autoExtendDuration`), in the contract's
snake_case; the rules that need no state are checked here, where a refusal names the field.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import model_validator
from pydantic.json_schema import SkipJsonSchema

from partnerflow.states.models import (
    Actor,
    AdminRequest,
    Cloud,
    Customer,
    CustomerAdmin,
    GroupId,
    Partner,
    PartnerCommand,
    Proof,
    Reason,
    RemovingAdmin,
    Roles,
    Token,
    _Model,
)

#: One delegated admin relationship: a partner may ask one customer for several (by role set).
DELEGATED_ADMIN_ID = "delegated-admin/{partner_id}/{customer_id}/{request_id}"


class DelegatedAdminTimers(_Model):
    """The waits of a delegated admin relationship; configurable so tests can shorten them."""

    approval_ttl: timedelta = timedelta(days=90)  # unapproved, the request expires (the program's 90 days)
    approval_reminders_before: tuple[timedelta, ...] = (timedelta(days=30), timedelta(days=7), timedelta(days=1))
    expiring_before: timedelta = timedelta(days=30)  # `expiring` for the last part of a term
    expiry_warnings_before: tuple[timedelta, ...] = (timedelta(days=30), timedelta(days=7), timedelta(days=1))
    step: timedelta = timedelta(0)  # approved → activating → active, terminationRequested → … → terminated

    @model_validator(mode="after")
    def _sane(self) -> DelegatedAdminTimers:
        if self.approval_ttl <= timedelta(0):
            raise ValueError("approval_ttl must be positive")
        for before in self.approval_reminders_before:
            if not timedelta(0) < before < self.approval_ttl:
                raise ValueError("each of approval_reminders_before must be between 0 and approval_ttl")
        for before in (self.expiring_before, *self.expiry_warnings_before):
            if before <= timedelta(0):
                raise ValueError("expiring_before and expiry_warnings_before must be positive")
        if self.step < timedelta(0):
            raise ValueError("step must not be negative")
        return self


class StartDelegatedAdmin(AdminRequest):
    """The workflow's start input: a partner asks a customer for admin roles (status `created`);
    `with_invitation`: carried by a reseller invitation, whose acceptance approves it (it waits
    in `approvalPending` with no link of its own)."""

    cloud: Cloud
    partner: Partner
    customer: Customer
    actor: Actor
    with_invitation: bool = False
    proof: Proof | None = None  # a signed assertion that the actor may start it (SECURITY.md)
    timers: DelegatedAdminTimers = DelegatedAdminTimers()
    continued: SkipJsonSchema[dict[str, Any] | None] = None  # set by partnerflow on continue-as-new

    @model_validator(mode="after")
    def _mailed_to_someone(self) -> StartDelegatedAdmin:
        if not self.customer.admin_email:
            raise ValueError("customer.admin_email is required: the approval link goes there")
        return self

    @property
    def auto_extends(self) -> bool:
        return bool(self.auto_extend)


class UpdateRoles(PartnerCommand):
    """The partner changes the roles it asks for (only while `created`)."""

    roles: Roles


class AssignAccess(PartnerCommand):
    """A partner security group gets some of the approved roles (or, for an existing group, these now)."""

    group_id: GroupId  # the partner's security group (its Entra object id)
    roles: Roles


class RemoveAccess(PartnerCommand):
    group_id: GroupId


class AccessStatus(StrEnum):
    """An access assignment's status, as the program names them. partnerflow records the grant:
    `active` once assigned, `deleting` while its relationship terminates, then `deleted`.
    `pending` and `error` are the program's provisioning states: partnerflow keeps no link to
    the tenant that would set them (an adapter that provisions the groups would)."""

    PENDING = "pending"
    ACTIVE = "active"
    DELETING = "deleting"
    DELETED = "deleted"
    ERROR = "error"


class AccessAssignment(_Model):
    group_id: str
    roles: tuple[str, ...]
    status: AccessStatus


class ApproveRequest(_Model):
    """The customer's global admin approves the roles (approval page)."""

    token: Token
    customer_admin: CustomerAdmin


class DeclineRequest(_Model):
    """The customer's global admin declines (approval page)."""

    token: Token
    customer_admin: CustomerAdmin
    reason: Reason = ""


class TerminateByPartner(PartnerCommand):
    reason: Reason = ""


class TerminateByCustomer(_Model):
    """The customer ends the partner's admin access (its admin center: a customer assertion)."""

    customer_admin: RemovingAdmin
    reason: Reason = ""
    proof: Proof | None = None  # the customer portal's signed assertion (SECURITY.md)


class AdminAuditEntry(_Model):
    seq: int
    operation: str
    actor_user: str
    actor_role: str
    from_state: str | None
    to_state: str
    at: datetime
    reason: str = ""


class DelegatedAdminView(_Model):
    """What a caller reads back: the relationship as the records keep it."""

    state: str
    cloud: Cloud
    partner_id: str
    customer_id: str
    request_id: str
    partner_name: str
    company: str
    display_name: str
    roles: tuple[str, ...]
    duration: timedelta
    auto_extend: timedelta
    ends_at: datetime | None = None  # while active or expiring: when the term ends (unless extended)
    approval_expires_at: datetime | None = None  # while approvalPending: when the request lapses
    assignments: tuple[AccessAssignment, ...] = ()  # partner security groups and their roles
    audit: tuple[AdminAuditEntry, ...]
