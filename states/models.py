"""The public JSON contract (CONTRACT.md) as pydantic models.

Field names are the wire names. Each model checks shape only (types, formats,
fields required together); who may do what lives in `states.policy` and when in
`states.lifecycle`. Extra fields are ignored so callers can send more.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from email.utils import parseaddr
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema


# A relationship's states (CONTRACT.md): also the values of the search attribute
# `RelationshipState`. (A comment, not a docstring: it would change the published schemas.)
class State(StrEnum):
    REFERRED = "referred"
    REFERRAL_DECLINED = "referral_declined"
    REFERRAL_EXPIRED = "referral_expired"
    INVITED = "invited"
    INVITATION_EXPIRED = "invitation_expired"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    ENDED = "ended"


class Cloud(StrEnum):
    PUBLIC = "public"
    USGOV = "usgov"


class Role(StrEnum):
    GLOBAL_ADMIN = "global_admin"
    ADMIN_AGENT = "admin_agent"
    SALES_AGENT = "sales_agent"
    HELPDESK_AGENT = "helpdesk_agent"


class PartnerKind(StrEnum):
    DIRECT = "direct"
    INDIRECT_RESELLER = "indirect_reseller"
    INDIRECT_PROVIDER = "indirect_provider"


class Origin(StrEnum):
    INVITATION = "invitation"
    REFERRAL = "referral"


#: A relationship's workflow id (CONTRACT.md): one per partner and customer.
RELATIONSHIP_ID = "relationship/{partner_id}/{customer_id}"


def workflow_id(partner_id: str, customer_id: str) -> str:
    return RELATIONSHIP_ID.format(partner_id=partner_id, customer_id=customer_id)


#: Validation context for input that arrives now (a caller's start or update). Without it the
#: models read as they always did: a workflow replaying a start or an update accepted under
#: older rules must read it the same way, or its history no longer replays.
STRICT: dict[str, bool] = {"strict_input": True}

_NOT_IN_ADDRESS = "@\\s<>\"',;\x00-\x1f\x7f"  # nor control characters: they would reach RCPT TO
_LENIENT_EMAIL = re.compile(f"[^{_NOT_IN_ADDRESS}]+@[^{_NOT_IN_ADDRESS}]+\\.[^{_NOT_IN_ADDRESS}]+")
# Strict, for new input: the address validated is the address delivered. A dot-atom local part
# (no quotes, comments, route or group syntax: `list:@evil.example` is a group), and a domain
# of DNS labels ending in a letter TLD (no IP literal: `a@[10.0.0.1].x` was delivered to the IP).
_ATOM = r"[A-Za-z0-9!#$%&*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
# RFC 2047 encoded words: an email library may decode one inside a header it writes out,
# line breaks and all (CPython's email package on 3.11.7 does), so none go in.
_ENCODED_WORD = "=?"


def _strict(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("strict_input"))


def _email(value: str, info: ValidationInfo) -> str:
    if not _LENIENT_EMAIL.fullmatch(value) or _ENCODED_WORD in value:
        raise ValueError("must be an email address like name@example.com")
    if _strict(info) and (not _EMAIL.fullmatch(value) or parseaddr(value) != ("", value)):
        raise ValueError("must be an email address like name@example.com")
    return value.lower()


def _identifier(value: str, info: ValidationInfo) -> str:
    # New input is case-folded: `P-100` and `p-100` are one partner (and one workflow id).
    return value.lower() if _strict(info) else value


def _plain_text(value: str) -> str:
    # Names end up in email headers and pages: no line breaks or control characters.
    if _CONTROL.search(value):
        raise ValueError("must not contain line breaks or control characters")
    if _ENCODED_WORD in value:
        raise ValueError("must not contain '=?' (email header encoding syntax)")
    return value


Email = Annotated[str, Field(max_length=254), AfterValidator(_email)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"), AfterValidator(_identifier)]
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_plain_text)]
Reason = Annotated[str, Field(max_length=1000)]
#: A BCP 47 language tag, e.g. `de` or `de-CH`: the reader's language (partnerflow writes en, de,
#: fr, es and ja; any other reads English).
LocaleTag = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")]
Token = Annotated[str, Field(min_length=1, max_length=200)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)


Proof = Annotated[str, Field(min_length=1, max_length=8192)]


class Actor(_Model):
    """The partner user acting, as the calling service authenticated them (and proves: `proof`)."""

    user: Email
    role: Role
    partner_id: Identifier


class Partner(_Model):
    """The reseller that keeps the customer account. In a start only `id` is believed: every other
    fact is the partner registry's (a start for a partner not in it is refused)."""

    id: Identifier
    name: Name | None = None
    kind: PartnerKind = PartnerKind.DIRECT
    indirect_provider_id: Identifier | None = None
    contact_email: Email | None = None  # where partner notices go; else the inviting user
    locale: LocaleTag | None = None  # the language of its notices (unset: English)

    @model_validator(mode="after")
    def _provider_for_resellers(self, info: ValidationInfo) -> Partner:
        if self.kind is PartnerKind.INDIRECT_RESELLER and not self.indirect_provider_id:
            raise ValueError("indirect_provider_id is required when kind is indirect_reseller")
        if _strict(info) and self.indirect_provider_id and self.kind is not PartnerKind.INDIRECT_RESELLER:
            raise ValueError("indirect_provider_id is for an indirect_reseller only (it names the reseller's provider)")
        return self


class Customer(_Model):
    """The customer company (tenant) and its global admin's address."""

    id: Identifier
    company: Name
    # Required to invite. A referral leaves it out: the referred partner decides it (accept_referral).
    admin_email: Email | None = None
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "US"
    # The admin's language for the invitation, its reminders and the page (unset: the country's).
    locale: LocaleTag | None = None


class Timers(_Model):
    """Durations of the lifecycle's waits; configurable so tests can shorten them."""

    referral_ttl: timedelta = timedelta(days=14)
    invitation_ttl: timedelta = timedelta(days=30)
    reminders_before: tuple[timedelta, ...] = (timedelta(days=7), timedelta(days=1))
    # Unresumed, a suspended relationship ends by itself (as Partner Center deletes a suspended
    # account's data after 90 days); both sides are warned before.
    suspension_ttl: timedelta = timedelta(days=90)
    suspension_warnings_before: tuple[timedelta, ...] = (timedelta(days=30), timedelta(days=7), timedelta(days=1))

    @model_validator(mode="after")
    def _sane(self) -> Timers:
        for name in ("referral_ttl", "invitation_ttl", "suspension_ttl"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        for befores, ttl in (("reminders_before", "invitation_ttl"), ("suspension_warnings_before", "suspension_ttl")):
            for before in getattr(self, befores):
                if not timedelta(0) < before < getattr(self, ttl):
                    raise ValueError(f"each of {befores} must be between 0 and {ttl}")
        return self


# --- delegated admin requests (their lifecycle: states/delegated_admin.py) ----------------

#: The program's bounds on a relationship's duration, and its only auto-extension.
SHORTEST, LONGEST = timedelta(days=1), timedelta(days=730)
AUTO_EXTENSION = timedelta(days=180)


class AdminRole(StrEnum):
    """The Microsoft Entra built-in roles a partner may ask for, by the names the admin center shows."""

    GLOBAL_ADMINISTRATOR = "Global Administrator"
    GLOBAL_READER = "Global Reader"
    USER_ADMINISTRATOR = "User Administrator"
    HELPDESK_ADMINISTRATOR = "Helpdesk Administrator"
    LICENSE_ADMINISTRATOR = "License Administrator"
    BILLING_ADMINISTRATOR = "Billing Administrator"
    EXCHANGE_ADMINISTRATOR = "Exchange Administrator"
    SHAREPOINT_ADMINISTRATOR = "SharePoint Administrator"
    TEAMS_ADMINISTRATOR = "Teams Administrator"
    SECURITY_ADMINISTRATOR = "Security Administrator"
    SECURITY_READER = "Security Reader"
    SERVICE_SUPPORT_ADMINISTRATOR = "Service Support Administrator"
    DIRECTORY_READERS = "Directory Readers"


def _unique(roles: tuple[AdminRole, ...]) -> tuple[AdminRole, ...]:
    if len(set(roles)) != len(roles):
        raise ValueError("each role may be named once")
    return roles


Roles = Annotated[
    tuple[AdminRole, ...],
    Field(min_length=1, max_length=len(AdminRole), examples=[["Helpdesk Administrator"]]),
    AfterValidator(_unique),
]
RequestId = Annotated[str, Field(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")]
DisplayName = Annotated[Name, Field(max_length=50)]
GroupId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", examples=["helpdesk-agents"])]


def _auto_extension(value: timedelta) -> timedelta:
    if value not in (timedelta(0), AUTO_EXTENSION):
        raise ValueError("must be PT0S (off) or P180D")
    return value


AutoExtend = Annotated[timedelta, AfterValidator(_auto_extension)]


def refuses_auto_extension(roles: tuple[AdminRole, ...] | list[str]) -> bool:
    """The program's rule: a relationship with Global Administrator never extends itself."""
    return AdminRole.GLOBAL_ADMINISTRATOR in roles


class AdminRequest(_Model):
    """What a partner asks a customer for admin roles with: a display name, a duration, the roles
    and whether it renews itself. A reseller invitation may carry one (`delegated_admin`)."""

    request_id: RequestId  # the caller's name for it, unique per partner and customer: part of its workflow id
    display_name: DisplayName
    duration: timedelta  # ISO 8601, P1D to P2Y
    roles: Roles
    auto_extend: AutoExtend = timedelta(0)  # PT0S or P180D

    @field_validator("duration")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if not SHORTEST <= value <= LONGEST:
            raise ValueError("must be between P1D and P2Y (730 days)")
        return value

    @model_validator(mode="after")
    def _no_self_extending_global_admin(self) -> AdminRequest:
        if self.auto_extend and refuses_auto_extension(self.roles):
            raise ValueError("auto_extend must be PT0S when roles include Global Administrator")
        return self


class StartRelationship(_Model):
    """The workflow's start input: invite a customer, or record a referral."""

    cloud: Cloud
    partner: Partner
    customer: Customer
    origin: Origin
    actor: Actor
    referred_by: Identifier | None = None
    proof: Proof | None = None  # a signed assertion that the actor may start it (SECURITY.md)
    timers: Timers = Timers()
    # An invitation may carry a delegated admin request: the customer accepts both in one visit.
    delegated_admin: AdminRequest | None = None
    # The state a continued run (continue-as-new) carries on. Internal: not in the
    # published schema, and refused unless the run really is a continuation.
    continued: SkipJsonSchema[dict[str, Any] | None] = None

    @model_validator(mode="after")
    def _referrer_for_referrals(self, info: ValidationInfo) -> StartRelationship:
        if self.origin is Origin.REFERRAL and not self.referred_by:
            raise ValueError("referred_by is required when origin is referral")
        if self.origin is Origin.INVITATION and not self.customer.admin_email:
            raise ValueError("customer.admin_email is required when origin is invitation")
        if self.origin is Origin.REFERRAL and self.delegated_admin is not None:
            raise ValueError("delegated_admin is for an invitation (a referral's partner asks once it accepts)")
        if self.origin is Origin.REFERRAL and self.customer.admin_email and _strict(info):
            # The referrer never chooses where the referred partner's invitation goes.
            raise ValueError(
                "customer.admin_email must be left out of a referral: the referred partner gives it in accept_referral"
            )
        return self

    @property
    def workflow_id(self) -> str:
        return workflow_id(self.partner.id, self.customer.id)


# --- update payloads ------------------------------------------------------------


class PartnerCommand(_Model):
    """An update sent by a partner user (resend_invitation, reinstate)."""

    actor: Actor
    proof: Proof | None = None  # a signed assertion that `actor` may send it (SECURITY.md)


class AcceptReferral(PartnerCommand):
    """The referred partner takes the referral on, and says where the invitation goes."""

    # Optional only so that a referral accepted before this field existed replays; new input needs it.
    admin_email: Annotated[Email | None, Field(validate_default=True)] = None

    @field_validator("admin_email")
    @classmethod
    def _address_for_new_input(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and _strict(info):
            raise ValueError("is required: the customer's global admin, who gets the invitation")
        return value


class ReasonedCommand(PartnerCommand):
    """decline_referral, cancel_invitation, end_relationship."""

    reason: Reason = ""


class SubscriptionKind(_Model):
    """One line of the billing feed's detail: how many active subscriptions of what."""

    what: Name
    count: Annotated[int, Field(ge=0)]

    def pair(self) -> tuple[str, int]:
        return self.what, self.count


class SuspensionReason(StrEnum):
    NON_PAYMENT = "non_payment"
    COMPLIANCE = "compliance"
    CUSTOMER_REQUEST = "customer_request"
    OTHER = "other"


class SuspendRelationship(PartnerCommand):
    """Stop an active relationship for a while: nothing new is bought until it is resumed."""

    reason: SuspensionReason


class SetPurchasePermission(PartnerCommand):
    """Allow (or stop) the customer buying its own services billed through the partner."""

    allowed: StrictBool


class CustomerAdmin(_Model):
    """The customer's global admin, as the invitation page identified them."""

    user: Name
    email: Email


class RemovingAdmin(CustomerAdmin):
    """The customer's global admin as the customer portal authenticated them."""

    customer_id: Identifier


class AcceptInvitation(_Model):
    token: Token
    customer_admin: CustomerAdmin
    accept_agreement: StrictBool


class DeclineInvitation(_Model):
    token: Token
    customer_admin: CustomerAdmin
    reason: Reason = ""


class RemovePartner(_Model):
    customer_admin: RemovingAdmin
    reason: Reason = ""
    proof: Proof | None = None  # the customer portal's signed assertion (SECURITY.md)


# --- views ----------------------------------------------------------------------


class AuditEntry(_Model):
    """One change, as the audit trail records it."""

    seq: int
    operation: str
    actor_user: str
    actor_role: str  # a Role, or customer_admin / system
    from_state: State | None
    to_state: State
    at: datetime
    reason: str = ""


class RelationshipView(_Model):
    """What the `state` query and every update return."""

    state: State
    purchase_permission: bool
    reinstated_count: int
    cloud: Cloud
    partner_id: str
    customer_id: str
    partner_name: str
    company: str
    admin_email: str | None = None  # where the invitation goes (a referral's: once accepted)
    indirect_provider_id: str | None = None  # an indirect reseller's provider: linked to the customer too
    suspension_reason: SuspensionReason | None = None  # while suspended
    suspension_ends_at: datetime | None = None  # while suspended: when it ends unless resumed
    origin: Origin
    invitation_expires_at: datetime | None
    # The delegated admin request the invitation carried (its request id): answered with it.
    admin_request: str | None = None
    audit: tuple[AuditEntry, ...]


class InvitationLookup(_Model):
    """Asks about an invitation by its token (a query: never written to history)."""

    token: Token


class InvitationStatus(StrEnum):
    VALID = "valid"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    REPLACED = "replaced"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # wrong or guessed: says nothing about the relationship


class InvitationView(_Model):
    """What the invitation page may show; the details only for the live token."""

    status: InvitationStatus
    partner_name: str | None = None
    company: str | None = None
    admin_email: str | None = None
    expires_at: datetime | None = None
    locale: str | None = None  # the start's, if it gave one (the page prefers the reader's choice)
    country: str | None = None
