"""The typed client for backend services: one method per start and update of CONTRACT.md.

Errors come back as one small hierarchy a caller can branch on, instead of
Temporal's transport exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from partnerflow.runtime.codec import Keyring, data_converter_for
from partnerflow.runtime.config import Settings
from partnerflow.runtime.connection import connect
from partnerflow.runtime.keys import Signer
from partnerflow.states import policy
from partnerflow.states.declaration import Lifecycle
from partnerflow.states.delegated_admin import DELEGATED_ADMIN
from partnerflow.states.delegated_admin_models import (
    DelegatedAdminTimers,
    DelegatedAdminView,
    StartDelegatedAdmin,
    TerminateByPartner,
)
from partnerflow.states.errors import describe
from partnerflow.states.inert import markdown
from partnerflow.states.lifecycles import by_start_model, by_workflow_id
from partnerflow.states.models import (
    STRICT,
    AcceptInvitation,
    Actor,
    AdminRole,
    Cloud,
    DeclineInvitation,
    InvitationLookup,
    InvitationStatus,
    InvitationView,
    PartnerCommand,
    RelationshipView,
    StartRelationship,
    Timers,
    workflow_id,
)
from partnerflow.states.names import NAMESPACES, TASK_QUEUE, ErrorType
from partnerflow.states.relationship import RELATIONSHIP


class RelationshipError(Exception):
    """A request partnerflow refused or could not serve. `type` and `rule` say why."""

    type: str = "Error"

    def __init__(self, message: str, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule


class InvalidInput(RelationshipError):
    type = ErrorType.INVALID_INPUT


class InvalidStart(RelationshipError):
    """A start that cannot be this workflow's (its id, its namespace, a `continued` field)."""

    type = ErrorType.INVALID_START


class PermissionDenied(RelationshipError):
    type = ErrorType.PERMISSION_DENIED


class TransitionNotAllowed(RelationshipError):
    type = ErrorType.TRANSITION_NOT_ALLOWED


class GuardFailed(RelationshipError):
    type = ErrorType.GUARD_FAILED


class NotFound(RelationshipError):
    type = ErrorType.NOT_FOUND


class Unavailable(RelationshipError):
    """Temporal cannot be reached: nothing was changed; try again later."""

    type = ErrorType.UNAVAILABLE


_BY_TYPE: dict[str, type[RelationshipError]] = {
    str(cls.type): cls
    for cls in (InvalidInput, InvalidStart, PermissionDenied, TransitionNotAllowed, GuardFailed, NotFound, Unavailable)
}
#: A definite answer from the server: the request was refused as it stands, and nothing
#: was changed. Every other status (UNKNOWN, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED,
#: ABORTED, ...) may come from a server restarting, overloaded or moving a shard, or a
#: connection dropped mid-call: the change may or may not have been made, so it is
#: `Unavailable`, to be tried again (every start and update is idempotent). So is
#: FAILED_PRECONDITION: the server's state of the moment (a chaos run met it on queries
#: while the records database was away and workflow tasks waited on it).
_REFUSED = {
    RPCStatusCode.INVALID_ARGUMENT,
    RPCStatusCode.ALREADY_EXISTS,
    RPCStatusCode.PERMISSION_DENIED,
    RPCStatusCode.UNAUTHENTICATED,
    RPCStatusCode.OUT_OF_RANGE,
    RPCStatusCode.UNIMPLEMENTED,
}


def translate(error: BaseException) -> RelationshipError:
    """Temporal's exception as the client's: a refusal the workflow made keeps its type and
    rule; a definite refusal of the server is a plain `RelationshipError`; anything that
    leaves the outcome unknown is `Unavailable`, never a final "refused" (a page would
    otherwise tell a customer their answer was not taken when it may have been)."""
    if isinstance(error, WorkflowUpdateFailedError):
        cause = error.cause
        if isinstance(cause, ApplicationError) and (cause.type or "") in _BY_TYPE:
            rule = cause.details[0].get("rule") if cause.details and isinstance(cause.details[0], dict) else None
            return _BY_TYPE[cause.type or ""](cause.message, rule)
        # The server's own failure of an update (e.g. AcceptedUpdateCompletedWorkflow: the
        # run closed or continued before the update finished) says nothing of the change.
        return Unavailable(f"the update's outcome is unknown ({cause}): read the state, then try again")
    if isinstance(error, RPCError):
        if error.status is RPCStatusCode.NOT_FOUND:
            return NotFound(error.message)
        if error.status in _REFUSED:
            return RelationshipError(f"Temporal refused the request: {error.message}")
        return Unavailable(f"Temporal is unavailable: {error.message}")
    if isinstance(error, RPCTimeoutOrCancelledError):
        return Unavailable("Temporal did not answer in time: the outcome is unknown; read the state")
    if isinstance(error, WorkflowQueryFailedError):
        # Our queries refuse nothing the client lets through: a failed one met a worker that
        # was lost or a workflow task that failed, and may be asked again.
        return Unavailable(f"the query could not be answered now: {error}")
    if isinstance(error, RuntimeError) and "connect" in str(error).lower():
        return Unavailable("Temporal is unavailable: cannot connect")  # a lazy client's first call
    raise error


S = TypeVar("S", bound=BaseModel)


def _checked(start: S) -> S:
    """Validated again: a model built with `model_construct` or `model_copy(update=...)` skipped
    its validators, and a refused start would otherwise come back as a closed workflow."""
    try:
        body = start.model_dump(mode="json", warnings=False, exclude_unset=True)
        return type(start).model_validate(body, context=STRICT)
    except ValidationError as error:
        raise InvalidInput(describe(error), None) from None


async def _retrieved(operation: WithStartWorkflowOperation[Any, Any]) -> None:
    """A failed update-with-start leaves its error on the start operation's handle too: read it
    here, or asyncio logs "Future exception was never retrieved" with a traceback (a chaos run
    once showed a transport error that way, as if it had crashed)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(operation.workflow_handle(), timeout=1)


class Relationships:
    """Drive relationships through Temporal, one client per cloud namespace."""

    def __init__(
        self,
        clients: Mapping[Cloud, Client],
        rpc_timeout: timedelta = timedelta(seconds=10),
        default_timers: Timers | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.clients = dict(clients)
        self.rpc_timeout = rpc_timeout
        self.default_timers = default_timers  # temporal-dev.yml's, for starts that set none
        # Signs each start and partner update for the actor it names (SECURITY.md); without
        # one, a request goes with the proof its caller put in it, or none.
        self.signer = signer

    @classmethod
    async def connect(
        cls,
        address: str,
        clouds: list[Cloud] | None = None,
        *,
        lazy: bool = False,
        default_timers: Timers | None = None,
        signer: Signer | None = None,
        keyring: Keyring | None = None,
    ) -> Relationships:
        """`keyring`: the deployment's (runtime.codec), when its payloads are sealed."""
        clients = {}
        converter = data_converter_for(keyring)
        for cloud in clouds or list(Cloud):
            clients[cloud] = await Client.connect(
                address, namespace=NAMESPACES[cloud], data_converter=converter, lazy=lazy
            )
        return cls(clients, default_timers=default_timers, signer=signer)

    @classmethod
    async def from_settings(cls, settings: Settings, *, lazy: bool = False, sign: bool = False) -> Relationships:
        """Connected as the configuration says (address, namespaces, TLS or API key, timers); `sign`:
        with its signer, for a process that acts for partner users (never the customer's page)."""
        clients = {cloud: await connect(settings, cloud, lazy=lazy) for cloud in settings.temporal.clouds}
        signer = settings.signer_for_cli() if sign else None
        return cls(clients, default_timers=settings.timers, signer=signer)

    def _handle(self, cloud: Cloud, wid: str) -> WorkflowHandle[Any, Any]:
        return self.clients[cloud].get_workflow_handle(wid)

    async def start(self, start: StartRelationship) -> RelationshipView:
        """Invite or refer, idempotently: an open relationship with the same id is reused.

        Update-with-start answers once the start's change (records, email) is made,
        or with the reason the start was refused. An invitation that carries a delegated admin
        request (`delegated_admin`) starts that request first, waiting for the invitation's answer.
        """
        start = self._prepared(start)
        if start.delegated_admin is None:
            view: RelationshipView = await self._start(start, WorkflowIDConflictPolicy.USE_EXISTING)
            return view
        await self._carry(start)
        try:
            view = await self._start(start, WorkflowIDConflictPolicy.USE_EXISTING)
        except RelationshipError:
            await self._drop_carried(start)
            raise
        if view.admin_request != start.delegated_admin.request_id:
            await self._drop_carried(start)  # an open relationship was reused: it carries no request
        return view

    async def _drop_carried(self, start: StartRelationship) -> None:
        """The carried request of an invitation that did not start (or carries none): withdrawn, so
        it never waits for an answer that cannot come (best effort: it expires with the invitation)."""
        assert start.delegated_admin is not None
        wid = DELEGATED_ADMIN.workflow_id.format(
            partner_id=start.partner.id, customer_id=start.customer.id, request_id=start.delegated_admin.request_id
        )
        with contextlib.suppress(RelationshipError):
            await self.update(start.cloud, wid, "terminate", TerminateByPartner(actor=start.actor))

    async def _carry(self, start: StartRelationship) -> DelegatedAdminView:
        """The delegated admin request an invitation carries: its own workflow, begun before the
        invitation is mailed (so no answer can come first), in `approvalPending` with no link of
        its own; the invitation's answer approves or declines it. Its actor needs the rights to
        ask for admin roles: refused here, before anything starts, when it has not."""
        assert start.delegated_admin is not None
        # It lives as long as the invitation's link and sends no reminders of its own: the
        # invitation's reminders are the customer's.
        timers = {"approval_ttl": start.timers.invitation_ttl, "approval_reminders_before": []}
        body = {
            **start.delegated_admin.model_dump(mode="json"),
            "cloud": start.cloud.value,
            "partner": {"id": start.partner.id},
            "customer": start.customer.model_dump(mode="json", exclude_none=True),
            "actor": start.actor.model_dump(mode="json"),
            "with_invitation": True,
            "timers": TypeAdapter(dict[str, Any]).dump_python(timers, mode="json"),
        }
        try:
            carried = StartDelegatedAdmin.model_validate(body, context=STRICT)
        except ValidationError as error:
            raise InvalidInput(f"delegated_admin: {describe(error)}", "input") from None
        lifecycle = by_start_model(StartDelegatedAdmin)
        denial = policy.check(lifecycle, lifecycle.begin(carried), actor=carried.actor, start=carried)
        if denial:
            raise PermissionDenied(f"delegated_admin: {denial.message}", denial.rule)
        view: DelegatedAdminView = await self.begin(carried)
        if view.state != "approvalPending" or view.roles != tuple(r.value for r in start.delegated_admin.roles):
            raise InvalidInput(
                f"delegated_admin.request_id: {start.delegated_admin.request_id} is another request of this"
                f" customer ({view.state}): name a new one",
                "request_id",
            )
        return view

    async def begin(self, start: BaseModel) -> Any:
        """Start any declared lifecycle (by its start model), as `start` starts a relationship:
        idempotent, answered once the start's change is made. Returns its view."""
        return await self._start(self._prepared(start), WorkflowIDConflictPolicy.USE_EXISTING)

    async def start_reporting(self, start: StartRelationship) -> tuple[RelationshipView, bool]:
        """`start`, and whether this call's start created the relationship's workflow run.

        Of calls made at the same time, the server lets exactly one create the run. Its
        answer says which (`started`), but the SDK keeps that to itself for update-with-start,
        so the start is first made with conflict policy FAIL, which only the creating call
        passes; when a run is open already it is made again as `start` makes it (USE_EXISTING)
        and reported as not created (also if that run closed in between and this call's
        second start began a new one: True is never said twice for one run).
        """
        start = self._prepared(start)
        if start.delegated_admin is not None:
            await self._carry(start)
        try:
            return await self._start(start, WorkflowIDConflictPolicy.FAIL), True
        except WorkflowAlreadyStartedError:
            return await self._start(start, WorkflowIDConflictPolicy.USE_EXISTING), False

    def _prepared(self, start: S) -> S:
        start = _checked(start)
        lifecycle = by_start_model(type(start))
        timers = self.default_timers if lifecycle is RELATIONSHIP else None  # temporal-dev.yml's are the relationship's
        if "timers" not in start.model_fields_set and timers is not None:
            start = start.model_copy(update={"timers": timers})
        if self.signer is not None and getattr(start, "proof", None) is None:
            action, wid = lifecycle.begin(start), lifecycle.workflow_id_for(start)
            start = start.model_copy(update={"proof": self.signer.for_actor(action, wid, start.actor)})  # type: ignore[attr-defined]
        return start

    async def _start(self, start: Any, policy: WorkflowIDConflictPolicy) -> Any:
        """One update-with-start; a WorkflowAlreadyStartedError (policy FAIL only) is raised as is."""
        lifecycle = by_start_model(type(start))
        operation: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            lifecycle.workflow_type,
            start,
            id=lifecycle.workflow_id_for(start),
            task_queue=TASK_QUEUE,
            id_conflict_policy=policy,
            static_summary=markdown(lifecycle.summary(start)),  # names shown as typed, never as links
        )
        try:
            view = await self.clients[start.cloud].execute_update_with_start_workflow(
                "started", start_workflow_operation=operation, result_type=lifecycle.view_model
            )
            return view
        except WorkflowAlreadyStartedError:
            await _retrieved(operation)
            raise
        except (RPCError, RPCTimeoutOrCancelledError, WorkflowUpdateFailedError, RuntimeError) as error:
            await _retrieved(operation)
            raise translate(error) from error

    async def state(self, cloud: Cloud, partner_id: str, customer_id: str) -> RelationshipView:
        try:
            view: RelationshipView = await self._handle(
                cloud, workflow_id(partner_id.lower(), customer_id.lower())
            ).query("state", result_type=RelationshipView, rpc_timeout=self.rpc_timeout)
            return view
        except (RPCError, RPCTimeoutOrCancelledError, WorkflowQueryFailedError, RuntimeError) as error:
            raise translate(error) from error

    async def start_input(self, cloud: Cloud, wid: str) -> dict[str, Any]:
        """The start input of a lifecycle's latest run (open or closed), as its history holds it."""
        try:
            async for event in self._handle(cloud, wid).fetch_history_events():
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                [body] = await self.clients[cloud].data_converter.decode(payloads, [dict])
                return dict(body)
        except (RPCError, RuntimeError) as error:
            raise translate(error) from error
        raise NotFound(f"{wid}: no history", None)

    async def reissue(
        self, cloud: Cloud, wid: str, request_id: str, actor: Actor, proof: str | None = None
    ) -> DelegatedAdminView:
        """A delegated admin relationship asked for again from the same role template (its display
        name, roles, duration and auto-extension), under `request_id`, and locked for approval at
        once: the customer's admin gets a new approval link. The old one may be in any state."""
        old = StartDelegatedAdmin.model_validate(await self.start_input(cloud, wid))
        current: DelegatedAdminView = await self.view(cloud, wid)  # its roles as last changed
        update = {"request_id": request_id, "actor": actor, "proof": proof, "continued": None, "with_invitation": False}
        roles = tuple(AdminRole(r) for r in current.roles)
        start = old.model_copy(update={**update, "roles": roles, "timers": DelegatedAdminTimers()})
        await self.begin(StartDelegatedAdmin.model_validate(start.model_dump(mode="json", exclude_none=True)))
        new_wid = DELEGATED_ADMIN.workflow_id_for(start)
        view: DelegatedAdminView = await self.update(cloud, new_wid, "lock_for_approval", PartnerCommand(actor=actor))
        return view

    async def view(self, cloud: Cloud, wid: str) -> Any:
        """Any lifecycle's view, by its workflow id (a `RelationshipView` for a relationship)."""
        lifecycle = _lifecycle(wid)
        try:
            return await self._handle(cloud, wid).query(
                "state", result_type=lifecycle.view_model, rpc_timeout=self.rpc_timeout
            )
        except (RPCError, RPCTimeoutOrCancelledError, WorkflowQueryFailedError, RuntimeError) as error:
            raise translate(error) from error

    async def update(self, cloud: Cloud, wid: str, name: str, command: BaseModel) -> Any:
        """Send one update of the declaration; returns the new view or raises a RelationshipError.
        The lifecycle is the workflow id's (a relationship's view for a relationship).

        `name` must be a declared update and `command` must read as its declared payload: a
        wrong pair is refused here, before anything is sent."""
        lifecycle = _lifecycle(wid)
        declared = lifecycle.commands.get(name)
        if declared is None or name not in lifecycle.updates:
            raise InvalidInput(f"update: {name} is not an update of {lifecycle.workflow_type}", "update")
        try:
            command = declared.payload.model_validate(command.model_dump(mode="json", warnings=False), context=STRICT)
        except ValidationError as error:
            raise InvalidInput(f"{name}: {describe(error)}", "input") from None
        actor = getattr(command, "actor", None)
        if self.signer is not None and isinstance(actor, Actor) and getattr(command, "proof", "") is None:
            command = command.model_copy(update={"proof": self.signer.for_actor(name, wid, actor)})
        try:
            # No RPC deadline: an update is awaited until the workflow has made the change
            # (activities wait out outages; a crashed worker's task moves to another one).
            return await self._handle(cloud, wid).execute_update(name, command, result_type=lifecycle.view_model)
        except WorkflowUpdateRPCTimeoutOrCancelledError as error:
            raise Unavailable("the update was sent but its outcome is unknown: read the state") from error
        except (RPCError, WorkflowUpdateFailedError, RuntimeError) as error:
            translated = translate(error)
            if isinstance(translated, NotFound) and "already completed" in translated.message:
                # It exists but has ended (another answer won the race, or a final state):
                # the update is not allowed now, which is not the same as no such relationship.
                raise TransitionNotAllowed(f"{name} rejected: the relationship has ended", "state") from error
            raise translated from error

    async def find_invitation(self, wid: str, token: str) -> tuple[Cloud | None, InvitationView]:
        """Which cloud holds the relationship this token belongs to, and what its holder may see."""
        unknown = InvitationView(status=InvitationStatus.UNKNOWN)
        lifecycle = by_workflow_id(wid)
        if lifecycle is None or lifecycle.token_query is None:
            return None, unknown
        for cloud in self.clients:
            try:
                view = await self._handle(cloud, wid).query(
                    lifecycle.token_query,
                    InvitationLookup(token=token),
                    result_type=InvitationView,
                    rpc_timeout=self.rpc_timeout,
                )
            except (RPCError, RPCTimeoutOrCancelledError, WorkflowQueryFailedError, RuntimeError) as error:
                translated = translate(error)
                if isinstance(translated, NotFound):
                    continue
                raise translated from error
            if view.status is not InvitationStatus.UNKNOWN:
                return cloud, view
        return None, unknown

    async def accept_invitation(self, cloud: Cloud, wid: str, command: AcceptInvitation) -> RelationshipView:
        view: RelationshipView = await self.update(cloud, wid, "accept_invitation", command)
        return view

    async def decline_invitation(self, cloud: Cloud, wid: str, command: DeclineInvitation) -> RelationshipView:
        view: RelationshipView = await self.update(cloud, wid, "decline_invitation", command)
        return view


def _lifecycle(wid: str) -> Lifecycle:
    found = by_workflow_id(wid)
    if found is None:
        raise InvalidInput(f"workflow_id: {wid} is no lifecycle's (e.g. {RELATIONSHIP.workflow_id})", "workflow_id")
    return found
