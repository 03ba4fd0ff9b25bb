"""The typed client for backend services: one method per start and update of CONTRACT.md.

Errors come back as one small hierarchy a caller can branch on, instead of
Temporal's transport exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
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
from partnerflow.states.errors import describe
from partnerflow.states.inert import markdown
from partnerflow.states.models import (
    STRICT,
    AcceptInvitation,
    Actor,
    Cloud,
    DeclineInvitation,
    InvitationLookup,
    InvitationStatus,
    InvitationView,
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


def _checked(start: StartRelationship) -> StartRelationship:
    """Validated again: a model built with `model_construct` or `model_copy(update=...)` skipped
    its validators, and a refused start would otherwise come back as a closed workflow."""
    try:
        body = start.model_dump(mode="json", warnings=False, exclude_unset=True)
        return StartRelationship.model_validate(body, context=STRICT)
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
        or with the reason the start was refused.
        """
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
        try:
            return await self._start(start, WorkflowIDConflictPolicy.FAIL), True
        except WorkflowAlreadyStartedError:
            return await self._start(start, WorkflowIDConflictPolicy.USE_EXISTING), False

    def _prepared(self, start: StartRelationship) -> StartRelationship:
        start = _checked(start)
        if "timers" not in start.model_fields_set and self.default_timers is not None:
            start = start.model_copy(update={"timers": self.default_timers})
        if self.signer is not None and start.proof is None:
            action = RELATIONSHIP.begin(start)
            start = start.model_copy(update={"proof": self.signer.for_actor(action, start.workflow_id, start.actor)})
        return start

    async def _start(self, start: StartRelationship, policy: WorkflowIDConflictPolicy) -> RelationshipView:
        """One update-with-start; a WorkflowAlreadyStartedError (policy FAIL only) is raised as is."""
        operation: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            RELATIONSHIP.workflow_type,
            start,
            id=start.workflow_id,
            task_queue=TASK_QUEUE,
            id_conflict_policy=policy,
            static_summary=markdown(RELATIONSHIP.summary(start)),  # names shown as typed, never as links
        )
        try:
            view: RelationshipView = await self.clients[start.cloud].execute_update_with_start_workflow(
                "started", start_workflow_operation=operation, result_type=RelationshipView
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

    async def update(self, cloud: Cloud, wid: str, name: str, command: BaseModel) -> RelationshipView:
        """Send one update of the declaration; returns the new view or raises a RelationshipError.

        `name` must be a declared update and `command` must read as its declared payload: a
        wrong pair is refused here, before anything is sent."""
        declared = RELATIONSHIP.commands.get(name)
        if declared is None or name not in RELATIONSHIP.updates:
            raise InvalidInput(f"update: {name} is not an update of {RELATIONSHIP.workflow_type}", "update")
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
            view: RelationshipView = await self._handle(cloud, wid).execute_update(
                name, command, result_type=RelationshipView
            )
            return view
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
        for cloud in self.clients:
            try:
                view = await self._handle(cloud, wid).query(
                    "invitation",
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
        return await self.update(cloud, wid, "accept_invitation", command)

    async def decline_invitation(self, cloud: Cloud, wid: str, command: DeclineInvitation) -> RelationshipView:
        return await self.update(cloud, wid, "decline_invitation", command)
