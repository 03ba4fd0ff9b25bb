"""The same business steps as partnerflow, written the plain way a team would: twice.

`HandwrittenRelationship` is the naive version and `TunedRelationship` the tuned one (local
activities for the records, the SDK's pydantic converter); they share every step below.

One Temporal workflow with `if` statements: no state machine, no policy table, no
pydantic (dataclasses and the SDK's default JSON converter), every activity a regular
one. It keeps the contract's names and JSON (`Relationship`, the start input, the
updates and their payloads) so the same driver runs it, and does the same real work:
the invitation email over SMTP with a token from `secrets` (only its SHA-256 is kept),
the notices, the audit and customer list in SQLite through `activities.records.Records`,
the subscriptions check before ending, the `RelationshipState` search attribute. What
it leaves out is what partnerflow adds beyond that: the outbox (exactly-once email),
local activities, continue-as-new, the audit tail in the workflow, the Web UI details.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from temporalio import activity, workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from partnerflow.activities.email import Letter, Mailer, message_id_for
    from partnerflow.activities.records import Records
    from partnerflow.states.messages import Change

INVITATION_TTL = timedelta(days=30)
REMINDERS_BEFORE = (timedelta(days=7), timedelta(days=1))
TIMEOUT = timedelta(seconds=30)
STATE = SearchAttributeKey.for_keyword("RelationshipState")
PARTNER = SearchAttributeKey.for_keyword("PartnerId")
CUSTOMER = SearchAttributeKey.for_keyword("CustomerId")
CLOUD = SearchAttributeKey.for_keyword("Cloud")


# --- the contract's JSON, as dataclasses ------------------------------------------
@dataclass
class Actor:
    user: str
    role: str
    partner_id: str


@dataclass
class Partner:
    id: str
    name: str
    kind: str = "direct"


@dataclass
class Customer:
    id: str
    company: str
    admin_email: str
    country: str = "US"


@dataclass
class Start:
    cloud: str
    partner: Partner
    customer: Customer
    origin: str
    actor: Actor


@dataclass
class CustomerAdmin:
    user: str
    email: str


@dataclass
class Accept:
    token: str
    customer_admin: CustomerAdmin
    accept_agreement: bool


@dataclass
class SetPermission:
    actor: Actor
    allowed: bool


@dataclass
class End:
    actor: Actor
    reason: str = ""


@dataclass
class Reinstate:
    actor: Actor


@dataclass
class View:
    state: str
    purchase_permission: bool
    cloud: str
    partner_id: str
    customer_id: str


# --- activity inputs ----------------------------------------------------------------
@dataclass
class InvitationMail:
    workflow_id: str
    to: str
    partner_name: str
    company: str


@dataclass
class NoticeMail:
    key: str
    to: str
    subject: str
    body: str


@dataclass
class Row:
    change_id: str
    cloud: str
    partner_id: str
    customer_id: str
    workflow_id: str
    company: str
    operation: str
    actor_user: str
    actor_role: str
    from_state: str | None
    to_state: str
    purchase_permission: bool
    at: datetime
    reason: str = ""
    reinstated_count: int = 0


@dataclass
class CustomerKey:
    cloud: str
    partner_id: str
    customer_id: str


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class HandwrittenActivities:
    def __init__(self, records: Records, mailer: Mailer, link_base_url: str) -> None:
        self.records = records
        self.mailer = mailer
        self.link_base_url = link_base_url

    @activity.defn(name="send_invitation")
    async def send_invitation(self, mail: InvitationMail) -> str:
        """Mail a fresh token; the workflow only ever sees its hash."""
        token = secrets.token_urlsafe(32)
        link = f"{self.link_base_url}/invitation?" + urlencode({"relationship": mail.workflow_id, "token": token})
        letter = Letter(
            to=mail.to,
            subject=f"{mail.partner_name} invites {mail.company} to a reseller relationship",
            body=f"Hello,\n\n{mail.partner_name} asks to become the cloud reseller of {mail.company}.\n\n"
            f"Open this link to accept or decline:\n\n{link}\n",
        )
        digest = sha256(token)
        await self.mailer.send(self.mailer.build(letter, message_id_for(f"{mail.workflow_id}/{digest}")))
        return digest

    @activity.defn(name="send_notice")
    async def send_notice(self, mail: NoticeMail) -> None:
        letter = Letter(to=mail.to, subject=mail.subject, body=mail.body)
        await self.mailer.send(self.mailer.build(letter, message_id_for(mail.key)))

    @activity.defn(name="record_change")
    async def record_change(self, row: Row) -> bool:
        values = asdict(row)
        fields = {name: values.pop(name) for name in ("purchase_permission", "reinstated_count")}
        return await asyncio.to_thread(self.records.apply_change, Change(**values, fields=fields))

    @activity.defn(name="count_active_subscriptions")
    async def count_active_subscriptions(self, key: CustomerKey) -> int:
        found = await asyncio.to_thread(self.records.active_subscriptions, key.cloud, key.partner_id, key.customer_id)
        return found.count

    def all(self) -> list[Callable[..., Any]]:
        return [self.send_invitation, self.send_notice, self.record_change, self.count_active_subscriptions]


def refuse(kind: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


class _Relationship:
    """The steps, shared by the naive and the tuned peer; they differ in how a step runs."""

    def __init__(self) -> None:
        self.start: Start | None = None
        self.state = "new"
        self.seq = 0
        self.token_sha256: str | None = None
        self.purchase_permission = False

    async def live(self, start: Start) -> View:
        self.start = start
        if start.actor.partner_id != start.partner.id or start.actor.role == "helpdesk_agent":
            raise refuse("PermissionDenied", "this actor may not invite for this partner")
        workflow.upsert_search_attributes(
            [PARTNER.value_set(start.partner.id), CUSTOMER.value_set(start.customer.id), CLOUD.value_set(start.cloud)]
        )
        await self.invite(start.actor, "CreateCustomerInvitation")
        while True:  # open for good: an ended relationship may be reinstated
            await self.wait_for_answer()
            await workflow.wait_condition(lambda: self.state == "invited")

    async def invite(self, actor: Actor, operation: str) -> None:
        s = self.s()
        self.token_sha256 = await workflow.execute_activity(
            "send_invitation",
            InvitationMail(workflow.info().workflow_id, s.customer.admin_email, s.partner.name, s.customer.company),
            result_type=str,
            start_to_close_timeout=TIMEOUT,
        )
        await self.record(operation, "invited", actor.user, actor.role)

    async def wait_for_answer(self) -> None:
        """Remind 7 and 1 days before the invitation expires, then expire it."""
        expires = workflow.now() + INVITATION_TTL
        for before in REMINDERS_BEFORE:
            if await self.answered_before(expires - before):
                return
            await self.notice("reminder", self.s().customer.admin_email, "Reminder: your invitation expires soon")
        if not await self.answered_before(expires):
            self.token_sha256 = None
            await self.record("ExpireCustomerInvitation", "invitation_expired", "partnerflow", "system")

    async def answered_before(self, deadline: datetime) -> bool:
        try:
            await workflow.wait_condition(lambda: self.state != "invited", timeout=deadline - workflow.now())
            return True
        except TimeoutError:
            return False

    # --- updates ----------------------------------------------------------------------
    @workflow.update
    async def started(self) -> View:
        await workflow.wait_condition(lambda: self.state != "new")
        return self.view()

    @workflow.update
    async def accept_invitation(self, command: Accept) -> View:
        self.token_sha256 = None  # single use
        await self.record("AddCustomer", "active", command.customer_admin.email, "customer_admin")
        s = self.s()
        await self.notice("accepted", s.actor.user, f"{s.customer.company} accepted your invitation")
        return self.view()

    @accept_invitation.validator
    def check_accept(self, command: Accept) -> None:
        if self.state != "invited":
            raise refuse("TransitionNotAllowed", f"accept_invitation is not allowed while {self.state}")
        if not self.token_sha256 or not hmac.compare_digest(sha256(command.token), self.token_sha256):
            raise refuse("GuardFailed", "token must be the live invitation token")
        if command.accept_agreement is not True:
            raise refuse("GuardFailed", "accept_agreement must be true")

    @workflow.update
    async def set_purchase_permission(self, command: SetPermission) -> View:
        if command.allowed != self.purchase_permission:
            operation = "CreateSelfServePolicy" if command.allowed else "DeleteSelfServePolicy"
            await self.record(operation, "active", command.actor.user, command.actor.role, allowed=command.allowed)
        return self.view()

    @set_purchase_permission.validator
    def check_set_purchase_permission(self, command: SetPermission) -> None:
        self.check_partner(command.actor, ("global_admin", "admin_agent"))
        if self.state != "active":
            raise refuse("TransitionNotAllowed", f"set_purchase_permission is not allowed while {self.state}")

    @workflow.update
    async def end_relationship(self, command: End) -> View:
        s = self.s()
        active: int = await self.records_step(
            "count_active_subscriptions", CustomerKey(s.cloud, s.partner.id, s.customer.id), int
        )
        if active:
            raise refuse("GuardFailed", "the customer must have no active subscriptions")
        await self.record(
            "RemovePartnerCustomerRelationship", "ended", command.actor.user, command.actor.role, reason=command.reason
        )
        await self.notice("ended", s.customer.admin_email, f"{s.partner.name} ended your reseller relationship")
        return self.view()

    @end_relationship.validator
    def check_end(self, command: End) -> None:
        self.check_partner(command.actor, ("global_admin", "admin_agent", "sales_agent"))
        if self.state != "active":
            raise refuse("TransitionNotAllowed", f"end_relationship is not allowed while {self.state}")

    @workflow.update
    async def reinstate(self, command: Reinstate) -> View:
        await self.invite(command.actor, "ReinstateCustomer")
        return self.view()

    @reinstate.validator
    def check_reinstate(self, command: Reinstate) -> None:
        self.check_partner(command.actor, ("global_admin", "admin_agent", "sales_agent"))
        if self.state != "ended":
            raise refuse("TransitionNotAllowed", f"reinstate is not allowed while {self.state}")

    @workflow.query(name="state")
    def state_query(self) -> View:
        return self.view()

    # --- helpers ------------------------------------------------------------------------
    def s(self) -> Start:
        assert self.start is not None
        return self.start

    def check_partner(self, actor: Actor, roles: tuple[str, ...]) -> None:
        if actor.partner_id != self.s().partner.id:
            raise refuse("PermissionDenied", "actor.partner_id must be this relationship's partner")
        if actor.role not in roles:
            raise refuse("PermissionDenied", f"actor.role {actor.role} may not do this")

    async def record(
        self,
        operation: str,
        to_state: str,
        user: str,
        role: str,
        *,
        allowed: bool | None = None,
        reason: str = "",
    ) -> None:
        s, info = self.s(), workflow.info()
        self.seq += 1
        permission = self.purchase_permission if allowed is None else allowed
        if to_state != "active":
            permission = False
        await self.records_step(
            "record_change",
            Row(
                change_id=f"{info.workflow_id}/{info.run_id}/{self.seq}",
                cloud=s.cloud,
                partner_id=s.partner.id,
                customer_id=s.customer.id,
                workflow_id=info.workflow_id,
                company=s.customer.company,
                operation=operation,
                actor_user=user,
                actor_role=role,
                from_state=None if self.state == "new" else self.state,
                to_state=to_state,
                purchase_permission=permission,
                at=workflow.now(),
                reason=reason,
            ),
            bool,
        )
        self.state, self.purchase_permission = to_state, permission
        workflow.upsert_search_attributes([STATE.value_set(to_state)])
        workflow.logger.info("relationship %s → %s", info.workflow_id, to_state)

    async def notice(self, kind: str, to: str, subject: str) -> None:
        s = self.s()
        key = f"{workflow.info().workflow_id}/{workflow.info().run_id}/{self.seq}/{kind}"
        body = f"Hello,\n\n{subject}: {s.customer.company} and {s.partner.name}.\n"
        await workflow.execute_activity(
            "send_notice", NoticeMail(key, to, subject, body), start_to_close_timeout=TIMEOUT
        )

    def view(self) -> View:
        s = self.s()
        return View(self.state, self.purchase_permission, s.cloud, s.partner.id, s.customer.id)

    async def records_step(self, name: str, arg: Any, result: type[Any]) -> Any:
        raise NotImplementedError


@workflow.defn(name="Relationship")
class HandwrittenRelationship(_Relationship):
    """Naive: every step an activity through the task queue, the SDK's default JSON converter."""

    @workflow.run
    async def run(self, start: Start) -> View:
        return await self.live(start)

    async def records_step(self, name: str, arg: Any, result: type[Any]) -> Any:
        return await workflow.execute_activity(name, arg, result_type=result, start_to_close_timeout=TIMEOUT)


@workflow.defn(name="Relationship")
class TunedRelationship(_Relationship):
    """Tuned, as a careful team writes it: the records' steps are local activities (they run in
    the worker: no task-queue round trip, one marker in history instead of three events), and
    the worker uses the SDK's pydantic converter (`bench/worker.py`). Email stays a regular
    activity (a slow mail server holds no workflow task), awaited as the naive peer does."""

    @workflow.run
    async def run(self, start: Start) -> View:
        return await self.live(start)

    async def records_step(self, name: str, arg: Any, result: type[Any]) -> Any:
        return await workflow.execute_local_activity(name, arg, result_type=result, start_to_close_timeout=TIMEOUT)
