"""The `Relationship` workflow: one partner–customer relationship, for its whole life.

Validators ask the policy and the machine and refuse before anything is written
(a rejected update leaves no trace in history). Handlers run under one lock,
check again, run the transition's activities (email, records), then commit the
new state. All state lives in one `RelationshipData`, so it can be handed on.

PYTEST_DONT_REWRITE: the sandbox re-imports this module for every workflow, and
pytest's assertion rewriting (the test kit is a plugin of this distribution) would
re-parse it each time.
"""

from __future__ import annotations

import asyncio
import hmac
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributeUpdate
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from activities.letters import Invitation, Notice, NoticeKind
    from activities.records import Change
    from activities.relationship import IssuedToken, SubscriptionsKey
    from partnerflow.converter import describe
    from states import policy
    from states.lifecycle import FINAL_STATES, STARTS, State, Transition, sources_of
    from states.machine import Lifecycle, token_hash
    from states.models import (
        NAMESPACES,
        WORKFLOW_TYPE,
        AcceptInvitation,
        Actor,
        AuditEntry,
        DeclineInvitation,
        InvitationLookup,
        InvitationStatus,
        InvitationView,
        PartnerCommand,
        ReasonedCommand,
        RelationshipView,
        RemovePartner,
        SetPurchasePermission,
        StartRelationship,
    )
    from workflows.data import SYSTEM, RelationshipData, Who
    from workflows.details import current_details

T = TypeVar("T")

STATE_KEY = SearchAttributeKey.for_keyword("RelationshipState")
PARTNER_KEY = SearchAttributeKey.for_keyword("PartnerId")
CUSTOMER_KEY = SearchAttributeKey.for_keyword("CustomerId")
CLOUD_KEY = SearchAttributeKey.for_keyword("Cloud")
EXPIRES_KEY = SearchAttributeKey.for_datetime("InvitationExpiresAt")
CHANGED_KEY = SearchAttributeKey.for_datetime("StateChangedAt")

#: How many audit entries the workflow keeps (the records keep them all).
AUDIT_TAIL = 20
#: How many void token hashes it remembers, to tell "used" from "unknown".
SPENT_TOKENS_KEPT = 10
#: Workflow changes guarded for running relationships (see README, "Changing the workflow").
PATCH_PARTNER_EXPIRY_NOTICE = "notify-partner-on-invitation-expiry"
#: How many applied update ids it remembers, to drop a retry that reaches a new run.
RECENT_UPDATES_KEPT = 50

#: Outages (SMTP, database) are waited out, never turned into a lost change.
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["InvalidInput"],
)
ACTIVITY_TIMEOUT = timedelta(seconds=30)
LOCAL_ACTIVITY_TIMEOUT = timedelta(seconds=10)

# ApplicationError types a caller can branch on.
PERMISSION_DENIED = "PermissionDenied"
TRANSITION_NOT_ALLOWED = "TransitionNotAllowed"
GUARD_FAILED = "GuardFailed"
INVALID_INPUT = "InvalidInput"
INVALID_START = "InvalidStart"


async def _activity(name: str, arg: Any, *, result_type: type[T], summary: str) -> T:
    """Every activity runs with the same timeout and patient retries."""
    result: T = await workflow.execute_activity(
        name,
        arg,
        result_type=result_type,
        summary=summary,
        start_to_close_timeout=ACTIVITY_TIMEOUT,
        retry_policy=ACTIVITY_RETRY,
    )
    return result


async def _local_activity(name: str, arg: Any, *, result_type: type[T], summary: str) -> T:
    """A quick database step runs in the worker itself: no task-queue round trip, one
    marker in history instead of three events. Retried like any activity (idempotent)."""
    result: T = await workflow.execute_local_activity(
        name,
        arg,
        result_type=result_type,
        summary=summary,
        start_to_close_timeout=LOCAL_ACTIVITY_TIMEOUT,
        retry_policy=ACTIVITY_RETRY,
    )
    return result


def _reject(kind: str, rule: str, message: str) -> ApplicationError:
    return ApplicationError(message, {"rule": rule}, type=kind, non_retryable=True)


def _read_start(inputs: tuple[Any, ...]) -> StartRelationship | ApplicationError:
    """The start input, validated here rather than by the data converter (see __init__)."""
    if len(inputs) != 1 or inputs[0] is None:
        got = "null" if inputs == (None,) else f"{len(inputs)} inputs"
        message = f"invalid StartRelationship: input: must be one JSON object, got {got}"
        return _reject(INVALID_INPUT, "input", message)
    if isinstance(inputs[0], StartRelationship):
        return inputs[0]
    try:
        return StartRelationship.model_validate(inputs[0])
    except ValidationError as error:
        return ApplicationError(describe(error), {"rule": "input"}, type=INVALID_INPUT, non_retryable=True)


@workflow.defn(name=WORKFLOW_TYPE)
class RelationshipWorkflow:
    @workflow.init
    def __init__(self, *inputs: Any) -> None:
        # `*inputs`, not one typed parameter: nothing a caller sends (no input, null, two
        # inputs) may fail the workflow task; a bad start fails the workflow instead.
        self._lock = asyncio.Lock()
        self._lifecycle: Lifecycle | None = None  # built once, refreshed per use (see _machine)
        start = _read_start(inputs)
        if isinstance(start, ApplicationError):
            self._start_denial: ApplicationError | None = start
            return  # run() fails the start at once; nothing is read or written
        self._start = start
        self._start_denial = self._check_start(start)
        if start.continued is not None and not self._start_denial:
            # A continued run carries everything on: state, audit tail, deadlines.
            self.d = RelationshipData.model_validate(start.continued)
        else:
            self.d = RelationshipData(start=start, state=STARTS[start.origin.value][0])

    def _check_start(self, start: StartRelationship) -> ApplicationError | None:
        info = workflow.info()
        if start.continued is not None and info.continued_run_id is None:
            return _reject(INVALID_START, "continued", "continued is set by partnerflow itself, never by a caller")
        if info.workflow_id != start.workflow_id:
            return _reject(
                INVALID_START,
                "workflow_id",
                f"workflow_id must be {start.workflow_id} (relationship/{{partner_id}}/{{customer_id}})",
            )
        expected_ns = NAMESPACES[start.cloud]
        if info.namespace != expected_ns and not info.namespace.startswith(expected_ns + "."):
            return _reject(
                INVALID_START,
                "cloud",
                f"cloud {start.cloud.value} relationships live in namespace {expected_ns}",
            )
        action = "refer" if start.origin.value == "referral" else "invite"
        denial = policy.check(
            action,
            actor=start.actor,
            cloud=start.cloud,
            partner_id=start.partner.id,
            partner_kind=start.partner.kind,
            referred_by=start.referred_by,
        )
        if denial:
            return _reject(PERMISSION_DENIED, denial.rule, f"{action} rejected: {denial.message}")
        return None

    # --- main: the start, then durable timers until a final state ---------------
    @workflow.run
    async def run(self, *inputs: Any) -> RelationshipView:
        if self._start_denial:
            raise self._start_denial
        start = self._start
        self._publish()  # findable by partner, customer and state from the first moment
        if start.continued is None:
            initial, operation, effects = STARTS[start.origin.value]
            async with self._lock:
                row = Transition("start", (), initial, operation, effects=effects)
                if initial is State.REFERRED:
                    self.d.referred_at = workflow.now()
                await self._commit(row, Who(user=start.actor.user, role=start.actor.role.value))

        while self.d.state not in FINAL_STATES:
            await self._wait_for_change_or_timer()
            if workflow.info().is_continue_as_new_suggested():
                # Years of changes: hand the whole state (deadlines included) to a fresh
                # run once no handler is mid-flight, so history stays small.
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(start.model_copy(update={"continued": self.d.model_dump(mode="json")}))

        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view()

    async def _wait_for_change_or_timer(self) -> None:
        seq, reminders = self.d.seq, self.d.reminders_sent
        due = self._next_timer()
        if due is None:
            await workflow.wait_condition(lambda: self.d.seq != seq)
            return
        delay = due[0] - workflow.now()
        if delay > timedelta(0):
            try:
                await workflow.wait_condition(lambda: self.d.seq != seq, timeout=delay)
                return
            except TimeoutError:
                pass
        reminder: Notice | None = None
        async with self._lock:
            # Decide now, not when the wait began: an outage may have passed meanwhile.
            due = self._next_timer()
            if self.d.seq != seq or self.d.reminders_sent != reminders or not due:
                return
            at, what = due
            if at > workflow.now():
                return
            if what == "expire_referral" or what == "expire_invitation":
                await self._commit(self._machine().fire(what), SYSTEM)
                return
            self.d.reminders_sent += 1
            if what == "reminder":
                reminder = self._reminder()
        if reminder:
            # Outside the lock: a slow mail server never holds up the customer's answer.
            await _activity("send_notice", reminder, result_type=str, summary="invitation reminder")

    def _next_timer(self) -> tuple[datetime, str] | None:
        d, timers = self.d, self.d.start.timers
        if d.state is State.REFERRED and d.referred_at:
            return d.referred_at + timers.referral_ttl, "expire_referral"
        if d.state is State.INVITED and d.expires_at:
            befores = sorted(timers.reminders_before, reverse=True)
            if d.reminders_sent < len(befores):
                at = d.expires_at - befores[d.reminders_sent]
                rest = befores[d.reminders_sent + 1 :]
                following = d.expires_at - rest[0] if rest else d.expires_at
                # Past the next moment already (a worker outage): never send it late.
                stale = workflow.now() >= following
                return at, "skip_reminder" if stale else "reminder"
            return d.expires_at, "expire_invitation"
        return None

    def _reminder(self) -> Notice:
        d = self.d
        return Notice(
            key=f"{self._key_prefix()}/invitation-{d.invitation_seq}/reminder-{d.reminders_sent}",
            kind=NoticeKind.REMINDER,
            workflow_id=workflow.info().workflow_id,
            to=d.start.customer.admin_email,
            partner_name=d.start.partner.name,
            company=d.start.customer.company,
            expires_at=d.expires_at,
        )

    # --- updates (CONTRACT.md); each validator sits under its handler -----------
    @workflow.update(name="accept_referral")
    async def accept_referral(self, command: PartnerCommand) -> RelationshipView:
        return await self._handle("accept_referral", command, self._partner(command.actor))

    @accept_referral.validator
    def validate_accept_referral(self, command: PartnerCommand) -> None:
        self._validate("accept_referral", command, command.actor)

    @workflow.update(name="decline_referral")
    async def decline_referral(self, command: ReasonedCommand) -> RelationshipView:
        return await self._handle("decline_referral", command, self._partner(command.actor), command.reason)

    @decline_referral.validator
    def validate_decline_referral(self, command: ReasonedCommand) -> None:
        self._validate("decline_referral", command, command.actor)

    @workflow.update(name="resend_invitation")
    async def resend_invitation(self, command: PartnerCommand) -> RelationshipView:
        return await self._handle("resend_invitation", command, self._partner(command.actor))

    @resend_invitation.validator
    def validate_resend_invitation(self, command: PartnerCommand) -> None:
        self._validate("resend_invitation", command, command.actor)

    @workflow.update(name="cancel_invitation")
    async def cancel_invitation(self, command: ReasonedCommand) -> RelationshipView:
        return await self._handle("cancel_invitation", command, self._partner(command.actor), command.reason)

    @cancel_invitation.validator
    def validate_cancel_invitation(self, command: ReasonedCommand) -> None:
        self._validate("cancel_invitation", command, command.actor)

    @workflow.update(name="accept_invitation")
    async def accept_invitation(self, command: AcceptInvitation) -> RelationshipView:
        self._claim_token(command.token, InvitationStatus.ACCEPTED)
        who = Who(user=command.customer_admin.email, role="customer_admin")
        return await self._handle("accept_invitation", command, who)

    @accept_invitation.validator
    def validate_accept_invitation(self, command: AcceptInvitation) -> None:
        self._validate("accept_invitation", command, None)

    @workflow.update(name="decline_invitation")
    async def decline_invitation(self, command: DeclineInvitation) -> RelationshipView:
        self._claim_token(command.token, InvitationStatus.DECLINED)
        who = Who(user=command.customer_admin.email, role="customer_admin")
        return await self._handle("decline_invitation", command, who, command.reason)

    @decline_invitation.validator
    def validate_decline_invitation(self, command: DeclineInvitation) -> None:
        self._validate("decline_invitation", command, None)

    @workflow.update(name="set_purchase_permission")
    async def set_purchase_permission(self, command: SetPurchasePermission) -> RelationshipView:
        return await self._handle("set_purchase_permission", command, self._partner(command.actor))

    @set_purchase_permission.validator
    def validate_set_purchase_permission(self, command: SetPurchasePermission) -> None:
        self._validate("set_purchase_permission", command, command.actor)

    @workflow.update(name="end_relationship")
    async def end_relationship(self, command: ReasonedCommand) -> RelationshipView:
        return await self._handle("end_relationship", command, self._partner(command.actor), command.reason)

    @end_relationship.validator
    def validate_end_relationship(self, command: ReasonedCommand) -> None:
        self._validate("end_relationship", command, command.actor)

    @workflow.update(name="remove_partner")
    async def remove_partner(self, command: RemovePartner) -> RelationshipView:
        who = Who(user=command.customer_admin.email, role="customer_admin")
        return await self._handle("remove_partner", command, who, command.reason)

    @remove_partner.validator
    def validate_remove_partner(self, command: RemovePartner) -> None:
        self._validate("remove_partner", command, None)

    @workflow.update(name="reinstate")
    async def reinstate(self, command: PartnerCommand) -> RelationshipView:
        return await self._handle("reinstate", command, self._partner(command.actor))

    @reinstate.validator
    def validate_reinstate(self, command: PartnerCommand) -> None:
        self._validate("reinstate", command, command.actor)

    @workflow.update(name="started")
    async def started(self) -> RelationshipView:
        """For update-with-start: answers once the start's change is made."""
        await workflow.wait_condition(lambda: self.d.seq > 0)
        return self._view()

    @started.validator
    def validate_started(self) -> None:
        if self._start_denial:
            raise self._start_denial

    @workflow.query(name="state")
    def state(self) -> RelationshipView:
        return self._view()

    @workflow.query(name="invitation")
    def invitation(self, lookup: InvitationLookup) -> InvitationView:
        """What the holder of `token` may see: details for the live token only."""
        d, s = self.d, self.d.start
        digest = token_hash(lookup.token)
        if self._machine().token_is_valid_for(lookup.token):
            return InvitationView(
                status=InvitationStatus.VALID,
                partner_name=s.partner.name,
                company=s.customer.company,
                admin_email=s.customer.admin_email,
                expires_at=d.expires_at,
            )
        for spent, outcome in d.spent_tokens:
            if hmac.compare_digest(spent, digest):
                return InvitationView(status=outcome)
        if d.token_sha256 and hmac.compare_digest(d.token_sha256, digest):
            return InvitationView(status=InvitationStatus.EXPIRED)  # its timer has yet to fire
        return InvitationView(status=InvitationStatus.UNKNOWN)

    # --- the shared path of every update ---------------------------------------
    @staticmethod
    def _partner(actor: Actor) -> Who:
        return Who(user=actor.user, role=actor.role.value)

    def _claim_token(self, token: str, outcome: InvitationStatus) -> None:
        """Void the token the moment its update is accepted (its input is now in history).

        Runs before the handler's first await, so no other update or query can use
        the token in between; only this update may still complete with it.
        """
        d = self.d
        if d.claimed_by is None and d.token_sha256 and self._machine().token_is_valid_for(token):
            d.claimed_by = workflow.current_update_info().id  # type: ignore[union-attr]
            self._spend_token(d.token_sha256, outcome)

    def _machine(self) -> Lifecycle:
        d = self.d
        claimant = workflow.current_update_info()
        mine = claimant is not None and claimant.id == d.claimed_by
        if self._lifecycle is None:
            self._lifecycle = Lifecycle(d.state)
        return self._lifecycle.refresh(
            d.state,
            token_sha256=d.token_sha256 if d.claimed_by is None or mine else None,
            token_expires_at=d.expires_at,
            purchase_permission=d.purchase_permission,
            customer_id=d.start.customer.id,
            now=workflow.now(),
        )

    def _is_noop(self, trigger: str, command: Any) -> bool:
        # Setting the permission to what it already is succeeds and changes nothing.
        return (
            trigger == "set_purchase_permission"
            and self.d.state in sources_of(trigger)
            and command.allowed == self.d.purchase_permission
        )

    def _validate(self, trigger: str, command: Any, actor: Actor | None, **facts: Any) -> None:
        """Refuse (raise) unless the policy and the machine both allow `trigger` now."""
        if self._start_denial:
            raise self._start_denial
        s = self.d.start
        denial = policy.check(
            trigger,
            actor=actor,
            cloud=s.cloud,
            partner_id=s.partner.id,
            partner_kind=s.partner.kind,
        )
        if denial:
            raise self._rejection(trigger, PERMISSION_DENIED, denial.rule, denial.message)
        if self._is_noop(trigger, command):
            return
        machine = self._machine()
        if not machine.may(trigger, command=command, **facts):
            rule, message = machine.why_not(trigger, command=command, **facts)
            kind = TRANSITION_NOT_ALLOWED if rule == "state" else GUARD_FAILED
            raise self._rejection(trigger, kind, rule, message)

    @staticmethod
    def _rejection(trigger: str, kind: str, rule: str, message: str) -> ApplicationError:
        workflow.metric_meter().create_counter("partnerflow_rejections", "Updates refused, by update and rule").add(
            1, {"update": trigger, "rule": rule}
        )
        return _reject(kind, rule, f"{trigger} rejected: {message}")

    async def _handle(self, trigger: str, command: Any, who: Who, reason: str = "") -> RelationshipView:
        actor = getattr(command, "actor", None)
        update_id = workflow.current_update_info().id  # type: ignore[union-attr]
        # An update may arrive with the start (update-with-start, or a quick caller):
        # it waits until the start's change is made, then is checked again.
        await workflow.wait_condition(lambda: self.d.seq > 0)
        async with self._lock:
            if update_id in self.d.recent_updates:
                return self._view()  # a caller's retry that reached a continued run: done already
            # Another update may have moved the state since this one was validated.
            self._validate(trigger, command, actor)
            if self._is_noop(trigger, command):
                return self._view()
            facts: dict[str, Any] = {}
            if trigger == "end_relationship":
                facts["active_subscriptions"] = await self._active_subscriptions()
                self._validate(trigger, command, actor, **facts)
            row = self._machine().fire(trigger, command=command, **facts)
            await self._commit(row, who, reason)
            self.d.recent_updates = [*self.d.recent_updates, update_id][-RECENT_UPDATES_KEPT:]
            return self._view()

    async def _active_subscriptions(self) -> int:
        s = self.d.start
        return await _local_activity(
            "count_active_subscriptions",
            SubscriptionsKey(cloud=s.cloud.value, partner_id=s.partner.id, customer_id=s.customer.id),
            result_type=int,
            summary="guard: active subscriptions",
        )

    async def _commit(self, row: Transition, who: Who, reason: str = "") -> None:
        """Run `row`'s activities and make its change: email first, then records, then state."""
        d = self.d
        from_state = None if row.trigger == "start" else d.state
        now = workflow.now()
        seq = d.seq + 1
        old_token = d.token_sha256
        issued: tuple[IssuedToken, datetime] | None = None
        if "send_invitation" in row.effects:
            issued = await self._send_invitation(seq, reinstatement=row.trigger == "reinstate")
        purchase = d.purchase_permission
        if row.trigger == "set_purchase_permission":
            purchase = row.operation == "CreateSelfServePolicy"
        if row.dest is not State.ACTIVE:
            purchase = False  # [ours] the permission ends with the relationship
        reinstated = d.reinstated_count
        if row.trigger == "accept_invitation" and d.reinstating:
            reinstated += 1
        s = d.start
        await _local_activity(
            "record_change",
            Change(
                change_id=f"{self._key_prefix()}/{seq}",
                cloud=s.cloud.value,
                partner_id=s.partner.id,
                customer_id=s.customer.id,
                workflow_id=workflow.info().workflow_id,
                company=s.customer.company,
                operation=row.operation,
                actor_user=who.user,
                actor_role=who.role,
                from_state=from_state.value if from_state else None,
                to_state=row.dest.value,
                purchase_permission=purchase,
                reinstated_count=reinstated,
                at=now,
                reason=reason,
            ),
            result_type=bool,
            summary=f"audit: {row.operation} → {row.dest.value}",
        )
        # The change is recorded: make it the workflow's truth.
        d.seq = seq
        d.state = row.dest
        d.purchase_permission = purchase
        d.reinstated_count = reinstated
        if row.trigger == "reinstate":
            d.reinstating = True
        if row.trigger == "accept_invitation":
            d.reinstating = False
        if issued:  # a new token: the old one is void
            d.invitation_seq += 1
            d.token_sha256 = issued[0].token_sha256
            d.invited_at, d.expires_at, d.reminders_sent = now, issued[1], 0
            d.inviter = who.user if who.role != "system" else d.inviter or d.start.actor.user
        # The old token is void once replaced, used, cancelled or expired.
        if old_token and (old_token != d.token_sha256 or row.dest is not State.INVITED):
            self._spend_token(old_token, row.trigger)
        if row.dest is not State.INVITED:
            d.token_sha256 = None
        d.claimed_by = None
        d.audit.append(
            AuditEntry(
                seq=seq,
                operation=row.operation,
                actor_user=who.user,
                actor_role=who.role,
                from_state=from_state,
                to_state=row.dest,
                at=now,
                reason=reason,
            )
        )
        del d.audit[:-AUDIT_TAIL]
        self._publish()
        workflow.metric_meter().create_counter(
            "partnerflow_transitions", "Lifecycle transitions made, by trigger and new state"
        ).add(1, {"trigger": row.trigger, "state": row.dest.value})
        workflow.logger.info(
            "relationship.transition",
            extra={
                "relationship": workflow.info().workflow_id,
                "trigger": row.trigger,
                "from_state": from_state.value if from_state else None,
                "state": row.dest.value,
                "actor": who.user,
                "role": who.role,
            },
        )
        for effect in row.effects:
            if effect != "send_invitation":
                await self._notify(effect, seq, reason)

    def _spend_token(self, digest: str, trigger_or_outcome: str) -> None:
        outcome = {
            "accept_invitation": InvitationStatus.ACCEPTED,
            "decline_invitation": InvitationStatus.DECLINED,
            "resend_invitation": InvitationStatus.REPLACED,
            "reinstate": InvitationStatus.REPLACED,
            "cancel_invitation": InvitationStatus.CANCELLED,
            "expire_invitation": InvitationStatus.EXPIRED,
        }.get(trigger_or_outcome) or InvitationStatus(trigger_or_outcome)
        spent = [(h, o) for h, o in self.d.spent_tokens if h != digest]
        self.d.spent_tokens = [*spent, (digest, outcome)][-SPENT_TOKENS_KEPT:]

    async def _send_invitation(self, seq: int, *, reinstatement: bool) -> tuple[IssuedToken, datetime]:
        """Email a new token; the caller makes it the live one once the change is recorded."""
        s = self.d.start
        expires_at = workflow.now() + s.timers.invitation_ttl
        issued = await _activity(
            "send_invitation",
            Invitation(
                key=f"{self._key_prefix()}/{seq}/invitation",
                workflow_id=workflow.info().workflow_id,
                to=s.customer.admin_email,
                partner_name=s.partner.name,
                company=s.customer.company,
                expires_at=expires_at,
                reinstatement=reinstatement,
            ),
            result_type=IssuedToken,
            summary="invitation email to the customer's global admin",
        )
        return issued, expires_at

    async def _notify(self, effect: str, seq: int, reason: str) -> None:
        # Added in v2. Relationships whose invitation expired under v1 did not send it:
        # `patched` keeps their histories replaying (tests/test_replay.py).
        if effect == "notify_partner_expired" and not workflow.patched(PATCH_PARTNER_EXPIRY_NOTICE):
            return
        d, s = self.d, self.d.start
        partner_contact = s.partner.contact_email or d.inviter or s.actor.user
        kinds: dict[str, tuple[NoticeKind, str]] = {
            "notify_partner_accepted": (NoticeKind.PARTNER_ACCEPTED, partner_contact),
            "notify_partner_removed": (NoticeKind.PARTNER_REMOVED, partner_contact),
            "notify_partner_expired": (NoticeKind.PARTNER_EXPIRED, partner_contact),
            "notify_customer_ended": (NoticeKind.CUSTOMER_ENDED, s.customer.admin_email),
            # The referrer's user who sent the referral is the one to tell.
            "notify_referrer": (
                NoticeKind.REFERRER_EXPIRED if d.state is State.REFERRAL_EXPIRED else NoticeKind.REFERRER_DECLINED,
                s.actor.user,
            ),
        }
        kind, to = kinds[effect]
        await _activity(
            "send_notice",
            Notice(
                key=f"{self._key_prefix()}/{seq}/{kind.value}",
                kind=kind,
                workflow_id=workflow.info().workflow_id,
                to=to,
                partner_name=s.partner.name,
                company=s.customer.company,
                expires_at=d.expires_at,
                reason=reason,
            ),
            result_type=str,
            summary=f"{kind.value} email",
        )

    # --- what others see ---------------------------------------------------------
    def _key_prefix(self) -> str:
        # Stable across retries and replays; new after a reset and for a new
        # relationship that reuses the workflow id after the old one closed.
        info = workflow.info()
        return f"{info.workflow_id}/{info.run_id}"

    def _publish(self) -> None:
        s, d = self.d.start, self.d
        updates: list[SearchAttributeUpdate[Any]] = [
            STATE_KEY.value_set(d.state.value),
            PARTNER_KEY.value_set(s.partner.id),
            CUSTOMER_KEY.value_set(s.customer.id),
            CLOUD_KEY.value_set(s.cloud.value),
        ]
        if d.audit:
            updates.append(CHANGED_KEY.value_set(d.audit[-1].at))
        if d.expires_at:
            # Kept after the invitation is answered (read it with RelationshipState = 'invited'):
            # the time-skipping server cannot describe an unset Datetime attribute.
            updates.append(EXPIRES_KEY.value_set(d.expires_at))
        workflow.upsert_search_attributes(updates)
        workflow.set_current_details(current_details(self._view()))

    def _view(self) -> RelationshipView:
        d, s = self.d, self.d.start
        return RelationshipView(
            state=d.state,
            purchase_permission=d.purchase_permission,
            reinstated_count=d.reinstated_count,
            cloud=s.cloud,
            partner_id=s.partner.id,
            customer_id=s.customer.id,
            partner_name=s.partner.name,
            company=s.customer.company,
            origin=s.origin,
            invitation_expires_at=d.expires_at if d.state is State.INVITED else None,
            audit=tuple(d.audit),
        )
