"""The interpreter: one durable workflow for any declared lifecycle.

`workflow_class(lifecycle)` makes a workflow class whose updates, validators and
queries are generated from the declaration; every handler runs the same path:
validators ask the policy and the machine and refuse before anything is written (a
rejected update leaves no trace in history); handlers run under one lock, check
again, then `_commit` interprets the row's typed effects (the record with its letters, link
letter included, then the new state). All state lives in one `LifeData`.

PYTEST_DONT_REWRITE: the sandbox re-imports this module for every workflow, and
pytest's assertion rewriting (the test kit is a plugin of this distribution) would
re-parse it each time.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from partnerflow.states import policy
    from partnerflow.states.declaration import (
        Add,
        Cascade,
        CustomerAdmin,
        Facts,
        Keep,
        Lifecycle,
        Mark,
        Recipient,
        Row,
        Send,
        Set,
        Snapshot,
        Take,
        Until,
        Upstream,
        VoidToken,
    )
    from partnerflow.states.errors import describe
    from partnerflow.states.machine import LifecycleMachine
    from partnerflow.states.messages import (
        ADMIT,
        CASCADE_SIGNAL,
        RECORD_AND_FIND,
        RECORD_CHANGE,
        RECORD_WITH_LINK,
        RELATED,
        SEND_NOTICE,
        Admission,
        Admit,
        Capability,
        Change,
        Counted,
        IssuedToken,
        ReadFact,
        Related,
        SendLetter,
        read_fact,
        send_link,
    )
    from partnerflow.states.models import STRICT, InvitationLookup, InvitationStatus, InvitationView
    from partnerflow.states.names import NAMESPACES, ErrorType
    from partnerflow.states.proof import Expected, Proven, Verifier, claim_time, unverified_claims, wall_clock
    from partnerflow.states.tokens import is_live, token_hash
    from partnerflow.workflows.data import SYSTEM, Entry, LifeData, Who
    from partnerflow.workflows.timers import deadline_at, next_due
    from partnerflow.workflows.visibility import publish

A = TypeVar("A", bound=BaseModel)
R = TypeVar("R")

#: How many audit entries the workflow keeps (the records keep them all).
AUDIT_TAIL = 20
#: How many void token hashes it remembers, to tell "used" from "unknown".
SPENT_TOKENS_KEPT = 10
#: How many applied update ids it remembers, to drop a retry that reaches a new run.
RECENT_UPDATES_KEPT = 50

#: The engine's workflows run outside Temporal's sandbox (`sandboxed=False`). Its modules are
#: passed through it anyway (worker.SANDBOX: the engine re-imported for every workflow), so the
#: sandbox no longer guarded this code; it only cost: 12 of the worker's 71 ms of CPU per
#: lifecycle (BENCHMARKS.md, session 8). What keeps this code
#: deterministic is what always did: one interpreter, the same for every lifecycle, that reads
#: time, randomness and the outside world only through `workflow.*` and activities; the
#: declarations it runs do no I/O (import-linter's contract); and every captured history
#: replays against it in `make test` (tests/test_replay.py), which is what catches a change
#: that would not replay.
SANDBOXED = False

#: Starts read differently by today's rules for new input than by the older ones.
STRICT_INPUT_PATCH = "strict-new-input"
#: Starts admitted by the partner registry and a proven actor (runs begun before were not).
ADMISSION_PATCH = "admitted-start"
#: How many spent assertions a workflow remembers (each only until it expires).
PROOFS_KEPT = 200

#: A row's notices go into the records with its change, for the worker's relay to send
#: (activities/relay.py); before, each was a `send_notice` activity the change waited for.
LETTERS_WITH_CHANGE_PATCH = "letters-with-change"
#: A row's link letter goes with its change too (`record_change_with_link` answers the token's
#: hash); before, a `send_<page>` activity sent it and the change waited for it.
LINK_WITH_CHANGE_PATCH = "link-with-change"
#: One patch for the changes of behaviour the engine had made by now (`IN_ENGINE_PATCH`): a run
#: begun under it records one marker and one `TemporalChangeVersion` update where it recorded
#: one of each per patch it met (four in the bench's lifecycle: 8 of the 43 events v7 wrote).
#: Such a run also publishes its search attributes once per change, only those that changed
#: (`_publish`), and looks up whom a cascade reaches in its change's own local activity. A run
#: begun before it meets each patch by name, as it always did, so its history replays as it
#: was written. Patches added after it are patches of their own: never add one to
#: `IN_ENGINE_PATCH` (tests/test_replay.py pins it). `STRICT_INPUT_PATCH` stays out: it is
#: asked while the start input is read, before a run knows which engine it runs under.
#: Code older than this cannot replay a run begun under it: no rollback below it once such
#: runs exist (README, "Changing the workflow safely").
ENGINE_PATCH = "engine-2026-11"
IN_ENGINE_PATCH: frozenset[str] = frozenset(
    {
        ADMISSION_PATCH,
        LETTERS_WITH_CHANGE_PATCH,
        LINK_WITH_CHANGE_PATCH,
        # the `since` of declared letters and cascades (states/)
        "carried-admin-request",
        "end-delegated-admin",
        "notify-partner-on-invitation-expiry",
        "two-tier",
    }
)

#: Outages (SMTP, database) are waited out, never turned into a lost change.
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=[ErrorType.INVALID_INPUT.value],
)
ACTIVITY_TIMEOUT = timedelta(seconds=30)
LOCAL_ACTIVITY_TIMEOUT = timedelta(seconds=10)


def _reject(kind: ErrorType, rule: str, message: str) -> ApplicationError:
    return ApplicationError(message, {"rule": rule}, type=kind.value, non_retryable=True)


def _read_start(lifecycle: Lifecycle, inputs: tuple[Any, ...]) -> Any:
    """The start input, validated here rather than by the data converter (see `__init__`).

    Read as it always was, so a history begun under older rules replays; where today's
    stricter rules for new input (`STRICT`: case-folded ids, deliverable addresses) read it
    differently, a run begun now is refused, behind a patch so that older runs are not."""
    model = lifecycle.start_model
    if len(inputs) != 1 or inputs[0] is None:
        got = "null" if inputs == (None,) else f"{len(inputs)} inputs"
        return _reject(
            ErrorType.INVALID_INPUT, "input", f"invalid {model.__name__}: input: must be one JSON object, got {got}"
        )
    raw = inputs[0].model_dump(mode="json") if isinstance(inputs[0], BaseModel) else inputs[0]
    try:
        start = model.model_validate(raw)
    except ValidationError as error:
        return _reject(ErrorType.INVALID_INPUT, "input", describe(error))
    try:
        strict = model.model_validate(raw, context=STRICT)
    except ValidationError as error:
        strict_error: ApplicationError | None = _reject(ErrorType.INVALID_INPUT, "input", describe(error))
    else:
        strict_error = None
        if strict == start:
            return start  # the common case: no patch, no extra events
    if workflow.patched(STRICT_INPUT_PATCH):
        return strict_error or strict
    return start


#: The lifecycles' `transitions` machines, per thread (`Interpreter._machine`).
_MACHINES = threading.local()


class Interpreter:
    """The behaviour every generated workflow class shares; `lifecycle` says what it runs."""

    lifecycle: ClassVar[Lifecycle]
    d: LifeData
    #: The worker's proof rule, handed in by its `ProofInterceptor`; without one, nothing is proven.
    verifier: Verifier | None = None

    def _setup(self, inputs: tuple[Any, ...]) -> None:
        # `*inputs`, not one typed parameter: nothing a caller sends (no input, null, two
        # inputs) may fail the workflow task; a bad start fails the workflow instead.
        self._lock = asyncio.Lock()
        self._engine_patch: bool | None = None  # ENGINE_PATCH, asked on first need
        self._published: dict[str, Any] | None = None  # the search attributes' values, as last sent
        self._admitted = False
        start = _read_start(self.lifecycle, inputs)
        if isinstance(start, ApplicationError):
            self._start_denial: ApplicationError | None = start
            return  # run() fails the start at once; nothing is read or written
        self._start = start
        self._start_denial = self._check_start(start)
        self._admitted = start.continued is not None  # a new run's partner facts are the caller's until then
        if start.continued is not None and not self._start_denial:
            # A continued run carries everything on: state, audit tail, deadlines.
            upgrade = self.lifecycle.upgrade
            try:
                self.d = LifeData.model_validate(upgrade(start.continued) if upgrade else start.continued)
            except (ValidationError, KeyError, TypeError, ValueError):  # never a failed task
                self._start_denial = _reject(ErrorType.INVALID_START, "continued", "continued: not a continued state")
                self.d = LifeData(state=str(self._begin_row().dest))
                return
            # A field declared since the run continued starts at its first value.
            self.d.fields = {**self.lifecycle.fields, **self.lifecycle.flags, **self.d.fields}
        else:
            self.d = LifeData(
                state=str(self._begin_row().dest), fields={**self.lifecycle.fields, **self.lifecycle.flags}
            )

    def _patched(self, patch: str) -> bool:
        """`workflow.patched(patch)`, or true without a marker of its own when this run was begun
        under ENGINE_PATCH. Asked first at the same step on replay as when the run did it, so
        a replay finds the engine's marker exactly where the run wrote it (or not at all)."""
        if patch in IN_ENGINE_PATCH and self._engine():
            return True
        return workflow.patched(patch)

    def _engine(self) -> bool:
        """Was this run begun under ENGINE_PATCH (or has it taken it since)? Asked on first need."""
        if self._engine_patch is None:
            self._engine_patch = workflow.patched(ENGINE_PATCH)
        return self._engine_patch

    def _begin_row(self) -> Row:
        return self.lifecycle.rows_for(self.lifecycle.begin(self._start))[0]

    def _check_start(self, start: Any) -> ApplicationError | None:
        lc, info = self.lifecycle, workflow.info()
        if info.cron_schedule or info.retry_policy:
            # A cron or retried run is started again with the caller's input and the previous run's
            # id as its `continued_run_id`: that must never pass for a continuation.
            which = "cron_schedule" if info.cron_schedule else "retry_policy"
            return _reject(ErrorType.INVALID_START, which, f"{which}: a lifecycle is started without one")
        if start.continued is not None and info.continued_run_id is None:
            return _reject(
                ErrorType.INVALID_START, "continued", "continued is set by partnerflow itself, never by a caller"
            )
        expected_id = lc.workflow_id_for(start)
        if info.workflow_id != expected_id:
            return _reject(
                ErrorType.INVALID_START, "workflow_id", f"workflow_id must be {expected_id} ({lc.workflow_id})"
            )
        namespace = NAMESPACES[start.cloud]
        if info.namespace != namespace and not info.namespace.startswith(namespace + "."):
            return _reject(
                ErrorType.INVALID_START,
                "cloud",
                f"cloud {start.cloud.value} relationships live in namespace {namespace}",
            )
        trigger = lc.begin(start)
        denial = policy.check(lc, trigger, actor=start.actor, start=start)
        if denial:
            return _reject(ErrorType.PERMISSION_DENIED, denial.rule, f"{trigger} rejected: {denial.message}")
        return None

    # --- main: the start, then durable timers until a final state ---------------------
    async def _run(self) -> BaseModel:
        if self._start_denial:
            raise self._start_denial
        if self._start.continued is None and self._patched(ADMISSION_PATCH):
            denial = await self._admit()
            if denial:
                self._start_denial = denial
                await workflow.wait_condition(workflow.all_handlers_finished)  # `started` answers first
                raise denial
        self._admitted = True  # or begun before admissions: its start input's facts, as then
        start = self._start
        if not (start.continued is None and self._engine_patch):
            # Findable by partner, customer and state from the first moment. A run begun under
            # ENGINE_PATCH publishes with its first change, in the same workflow task when the
            # records answer at once: one visibility write, not two.
            self._publish()
        if start.continued is None:
            async with self._lock:
                await self._commit(self._begin_row(), Who(user=start.actor.user, role=start.actor.role.value), start)
        while self.d.state not in self.lifecycle.final:
            await self._wait_for_change_or_timer()
            if workflow.info().is_continue_as_new_suggested():
                # Years of changes: hand the whole state (deadlines included) to a fresh
                # run once no handler is mid-flight, so history stays small.
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(start.model_copy(update={"continued": self.d.model_dump(mode="json")}))
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view()

    async def _admit(self) -> ApplicationError | None:
        """The partner registry's facts replace the caller's, and the actor must be proven; both
        read by a local activity, so the answer is recorded (a replay never asks again)."""
        s, info = self._start, workflow.info()
        admit = Admit(
            cloud=s.cloud.value,
            workflow_id=info.workflow_id,
            run_id=info.first_execution_run_id,  # a reset run is the same start
            requested_at=info.start_time,
            action=self.lifecycle.begin(s),
            partner_id=s.partner.id,
            referred_by=getattr(s, "referred_by", None),
            actor_user=s.actor.user,
            actor_role=s.actor.role.value,
            actor_partner_id=s.actor.partner_id,
            proof=s.proof,
        )
        admission: Admission = await self._call(ADMIT, admit, summary="admission: registry and proof", local=True)
        if admission.partner is None:
            kind = ErrorType.INVALID_START if admission.rule == "partner" else ErrorType.PERMISSION_DENIED
            return _reject(kind, admission.rule or "proof", f"{admit.action} rejected: {admission.message}")
        self._start = s.model_copy(update={"partner": admission.partner})
        if admission.jti and admission.expires_at:
            self._spend_proof(admission.jti, admission.expires_at)
        denial = policy.check(self.lifecycle, admit.action, actor=s.actor, start=self._start)
        if denial:  # a rule on the partner's kind, now that the registry says what it is
            return _reject(ErrorType.PERMISSION_DENIED, denial.rule, f"{admit.action} rejected: {denial.message}")
        return None

    async def _wait_for_change_or_timer(self) -> None:
        seq, reminders_sent = self.d.seq, self.d.reminders_sent
        due = next_due(self.lifecycle, self.d, self._start.timers, workflow.now())
        if due is None:
            await workflow.wait_condition(lambda: self.d.seq != seq)
            return
        delay = due.at - workflow.now()
        if delay > timedelta(0):
            try:
                await workflow.wait_condition(lambda: self.d.seq != seq, timeout=delay)
                return
            except TimeoutError:
                pass
        reminders: list[tuple[Send, str, datetime]] = []
        async with self._lock:
            # Decide now, not when the wait began: an outage may have passed meanwhile.
            due = next_due(self.lifecycle, self.d, self._start.timers, workflow.now())
            if self.d.seq != seq or self.d.reminders_sent != reminders_sent or not due or due.at > workflow.now():
                return
            if due.fires:
                await self._commit(self._machine().fire(due.fires, self._facts(None)), SYSTEM, None)
                return
            self.d.reminders_sent += 1
            key = f"{self._key_prefix()}/{self.d.entered_seq}/reminder-{self.d.reminders_sent}"
            # The first letter keeps the key a single reminder always had (running histories).
            reminders = [
                (send, key if i == 0 else f"{key}-{send.letter}", due.deadline) for i, send in enumerate(due.reminders)
            ]
        for send, key, deadline in reminders:
            # Outside the lock: a slow mail server never holds up the customer's answer.
            await self._letter(send, key, expires_at=deadline)

    # --- the shared path of every update ---------------------------------------------
    async def _update(self, trigger: str, command: Any) -> BaseModel:
        by = self.lifecycle.by(trigger)
        update_id = workflow.current_update_info().id  # type: ignore[union-attr]
        if update_id in self.d.recent_updates:
            return self._view()  # a caller's retry that reached a continued run: done already
        if isinstance(by, CustomerAdmin):
            if by.proof == "token":
                self._claim_token(command.token, self._void_outcome(trigger))
            # The address on record (the link was mailed there), never one the payload types.
            who = Who(user=self._to(Recipient.CUSTOMER_ADMIN), role="customer_admin")
        else:
            who = Who(user=command.actor.user, role=command.actor.role.value)
        # An update may arrive with the start (update-with-start, or a quick caller):
        # it waits until the start's change is made, then is checked again.
        await workflow.wait_condition(lambda: self.d.seq > 0 or self._start_denial is not None)
        if self._start_denial:
            raise self._start_denial  # the start's admission refused it meanwhile
        async with self._lock:
            if update_id in self.d.recent_updates:
                return self._view()  # a caller's retry that reached a continued run: done already
            # Its assertion is in history now: spent first, whatever comes of the update.
            self._take_proof(trigger, command)
            # Another update may have moved the state since this one was validated.
            if self._validate(trigger, command):
                return self._view()  # already so: succeeds and changes nothing
            fact: Counted | None = None
            needs = self._needs(trigger)
            if needs:
                fact = await self._read_fact(needs)
                self._validate(trigger, command, fact)
            row = self._machine().fire(trigger, self._facts(command, fact))
            await self._commit(row, who, command)
            self.d.recent_updates = [*self.d.recent_updates, update_id][-RECENT_UPDATES_KEPT:]
            return self._view()

    def _validate(self, trigger: str, command: Any, fact: Counted | None = None, *, arriving: bool = False) -> bool:
        """Refuse (raise) unless the policy and the machine both allow `trigger` now; True when
        it is already so (a row's `unchanged_if`): it then succeeds and changes nothing.
        `arriving`: the validator's first look, where the payload must also pass today's rules
        for new input (validators never replay, so older accepted payloads are not read again)."""
        if self._start_denial:
            raise self._start_denial
        if arriving and workflow.current_update_info().id in self.d.recent_updates:  # type: ignore[union-attr]
            return True  # a caller's retry that reached a continued run: its proof is spent, its change made
        if arriving:
            try:
                type(command).model_validate(command.model_dump(mode="json"), context=STRICT)
            except ValidationError as error:
                raise self._rejection(trigger, ErrorType.INVALID_INPUT, "input", describe(error)) from None
        denial = policy.check(self.lifecycle, trigger, actor=getattr(command, "actor", None), start=self._start)
        if denial:
            raise self._rejection(trigger, ErrorType.PERMISSION_DENIED, denial.rule, denial.message)
        if arriving:
            self._prove(trigger, command)
        facts = self._facts(command, fact)
        if any(r.unchanged_if and r.unchanged_if.holds(facts) for r in self._rows_here(trigger)):
            return True
        machine = self._machine()
        if not machine.may(trigger, facts):
            rule, message = machine.why_not(trigger, facts)
            kind = ErrorType.TRANSITION_NOT_ALLOWED if rule == "state" else ErrorType.GUARD_FAILED
            raise self._rejection(trigger, kind, rule, message)
        return False

    # --- proven actors (SECURITY.md) ---------------------------------------------------
    def _expected(self, trigger: str, command: Any) -> Expected | None:
        """What a proof for this update must say; None where the row needs none (a link token,
        the timer)."""
        by, wid = self.lifecycle.by(trigger), workflow.info().workflow_id
        if isinstance(by, CustomerAdmin):
            if by.proof == "token":
                return None
            user = command.customer_admin.email
            return Expected("customer_admin", trigger, wid, user, customer_id=self._start.customer.id)
        actor = command.actor
        return Expected("partner_staff", trigger, wid, actor.user, actor.partner_id, actor.role.value)

    def _prove(self, trigger: str, command: Any) -> None:
        """Only in the validator, which never replays: keys rotate and clocks move on without
        breaking a history. The wall clock, not workflow time: a proof is fresh when it arrives."""
        expected = self._expected(trigger, command)
        if expected is None:
            return
        if self.verifier is None:
            raise self._rejection(
                trigger, ErrorType.PERMISSION_DENIED, "proof", "this worker has no proof rule (ProofInterceptor)"
            )
        used = (jti for jti, _ in self.d.proofs_used)
        outcome = self.verifier.check(getattr(command, "proof", None), expected, now=wall_clock(), used=used)
        if outcome is not None and not isinstance(outcome, Proven):
            raise self._rejection(trigger, ErrorType.PERMISSION_DENIED, outcome.rule, outcome.message)

    def _take_proof(self, trigger: str, command: Any) -> None:
        """Spend the update's assertion (deterministic: read off the payload). Two updates that
        carried one assertion both passed their validators: the second is refused here."""
        proof = getattr(command, "proof", None)
        claims = unverified_claims(proof) if proof else {}
        jti = claims.get("jti")
        if not isinstance(jti, str):
            return
        if any(jti == used for used, _ in self.d.proofs_used):
            raise self._rejection(
                trigger,
                ErrorType.PERMISSION_DENIED,
                "proof",
                "proof: already used (jti): mint a new one for each request",
            )
        # Until it expires; an `exp` no clock can read (only a trusted-mode caller gets this far with
        # one): an hour, never an exception here, where one would fail the workflow task.
        self._spend_proof(jti, claim_time(claims.get("exp")) or workflow.now() + timedelta(hours=1))

    def _spend_proof(self, jti: str, expires_at: datetime) -> None:
        horizon = workflow.now() - timedelta(hours=1)  # past any clock's leeway
        kept = [(j, e) for j, e in self.d.proofs_used if e > horizon]
        self.d.proofs_used = [*kept, (jti, expires_at)][-PROOFS_KEPT:]

    @staticmethod
    def _rejection(trigger: str, kind: ErrorType, rule: str, message: str) -> ApplicationError:
        workflow.metric_meter().create_counter("partnerflow_rejections", "Updates refused, by update and rule").add(
            1, {"update": trigger, "rule": rule}
        )
        return _reject(kind, rule, f"{trigger} rejected: {message}")

    def _rows_here(self, trigger: str) -> list[Row]:
        return [r for r in self.lifecycle.rows_for(trigger) if self.d.state in r.sources]

    def _needs(self, trigger: str) -> str | None:
        return next((g.needs for r in self._rows_here(trigger) for g in r.guards if g.needs), None)

    def _void_outcome(self, trigger: str) -> InvitationStatus:
        voids = [e for r in self.lifecycle.rows_for(trigger) for e in r.effects if isinstance(e, VoidToken)]
        return voids[0].outcome if voids else InvitationStatus.REPLACED

    def _facts(self, command: Any, fact: Counted | None = None) -> Facts:
        return Facts(
            command=command,
            fields=self.d.fields,
            customer_id=self._start.customer.id,
            token_is_live=self._token_is_live(getattr(command, "token", None)),
            fact=fact.count if fact else None,
            fact_detail=fact.detail if fact else {},
        )

    def _token_is_live(self, token: str | None) -> bool:
        """The live, unexpired token, not claimed by another update (a claim holds it)."""
        d = self.d
        claimant = workflow.current_update_info()
        mine = claimant is not None and claimant.id == d.claimed_by
        live = d.token_sha256 if d.claimed_by is None or mine else None
        return is_live(token, live, d.expires_at, workflow.now())

    def _claim_token(self, token: str, outcome: InvitationStatus) -> None:
        """Void the token the moment its update is accepted (its input is now in history).

        Runs before the handler's first await, so no other update or query can use the
        token in between; only this update may still complete with it.
        """
        d = self.d
        if d.claimed_by is None and d.token_sha256 and self._token_is_live(token):
            d.claimed_by = workflow.current_update_info().id  # type: ignore[union-attr]
            self._spend_token(d.token_sha256, outcome)

    def _spend_token(self, digest: str, outcome: InvitationStatus) -> None:
        spent = [(h, o) for h, o in self.d.spent_tokens if h != digest]
        self.d.spent_tokens = [*spent, (digest, outcome)][-SPENT_TOKENS_KEPT:]

    def _machine(self) -> LifecycleMachine:
        """This workflow class's machine on this thread, at this run's state. Building one costs
        about a millisecond: one per class and thread, not per run. A run uses it only between
        two awaits, inside one activation, and an activation keeps its thread throughout."""
        machines: dict[type, LifecycleMachine] = _MACHINES.__dict__.setdefault("by_class", {})
        machine = machines.get(type(self))
        if machine is None:
            machine = machines[type(self)] = LifecycleMachine(self.lifecycle, self.d.state)
        return machine.at(self.d.state)

    # --- a row's effects, in order: the record with its letters, then the state -------
    async def _commit(self, row: Row, who: Who, command: Any) -> None:
        d, s, lc = self.d, self._start, self.lifecycle
        from_state = None if row.is_start else d.state
        now = workflow.now()
        seq = d.seq + 1
        reason = str(getattr(command, "reason", "") or "")
        fields = dict(d.fields)
        for effect in row.effects:
            if isinstance(effect, Set):
                fields[effect.field] = effect.value
            elif isinstance(effect, Take) and (given := effect.value(command)) is not None:
                fields[effect.field] = given
            elif isinstance(effect, Until):
                fields[effect.field] = effect.moment(s, fields, now)
            elif isinstance(effect, Keep):
                key, kept = effect.entry(command, fields.get(effect.field))
                fields[effect.field] = {**dict(fields.get(effect.field) or {}), key: kept}  # type: ignore[arg-type]
            elif isinstance(effect, Mark):
                fields[effect.field] = effect.applied(fields.get(effect.field))
            elif isinstance(effect, Add) and (effect.if_set is None or fields.get(effect.if_set)):
                fields[effect.field] = int(fields[effect.field] or 0) + effect.amount  # type: ignore[arg-type]
        link = next((e for e in row.sends() if e.token), None)
        issued: tuple[IssuedToken, datetime] | None = None
        queued: list[SendLetter] = []
        link_with_change = bool(link) and self._patched(LINK_WITH_CHANGE_PATCH)
        if link:
            expires_at = now + self._ttl(row.dest)
            key = f"{self._key_prefix()}/{seq}/{link.letter}"
            if link_with_change:
                queued.append(self._letter_for(link, key, expires_at=expires_at, fields=fields))
            else:
                sent = await self._letter(link, key, expires_at=expires_at, fields=fields)
                assert sent is not None and sent.token_sha256
                issued = (sent, expires_at)
        # The notices: with the change (its own transaction), or after it (histories from before).
        notices = [send for send in row.sends() if not send.token and policy.reaches(send, s)]
        with_change = bool(notices) and self._patched(LETTERS_WITH_CHANGE_PATCH)
        if with_change:
            # A letter into a state with a deadline (a suspension) tells when it ends.
            entered_at = now if lc.deadline_in(row.dest) and from_state != row.dest else d.entered_at
            after = d.model_copy(update={"state": row.dest, "fields": fields, "entered_at": entered_at})
            ends_at = deadline_at(lc, after, s.timers) if not link else None
            for send in notices:
                if send.since is None or self._patched(send.since):
                    key = f"{self._key_prefix()}/{seq}/{send.letter}"
                    queued.append(self._letter_for(send, key, reason=reason, expires_at=ends_at, fields=fields))
        entry = Entry(
            seq=seq,
            operation=row.operation,
            actor_user=who.user,
            actor_role=who.role,
            from_state=from_state,
            to_state=row.dest,
            at=now,
            reason=reason,
        )
        # A run under ENGINE_PATCH looks up whom its cascades reach in the change's own activity.
        cascades = [c for c in row.effects if isinstance(c, Cascade) and not (c.if_set and not fields.get(c.if_set))]
        find = bool(cascades) and not link and self._engine()
        if find:
            cascades = [c for c in cascades if c.since is None or self._patched(c.since)]
            find = bool(cascades)  # a cascade a history's run did not take (its patch) is no lookup
        change = Change(
            **entry.model_dump(exclude={"seq"}),
            change_id=f"{self._key_prefix()}/{seq}",
            table=lc.table,
            cloud=s.cloud.value,
            partner_id=s.partner.id,
            customer_id=s.customer.id,
            workflow_id=workflow.info().workflow_id,
            company=s.customer.company,
            fields={
                **{k: v for k, v in fields.items() if k not in lc.flags},
                **{name: read(s) for name, read in lc.from_start.items()},
            },
            lifecycle=lc.name,
            event=published.name_for(s.partner.kind.value) if (published := row.publishes()) else None,
            letters=queued,
            voids_link=any(isinstance(e, VoidToken) for e in row.effects),
            find=[c.lifecycle for c in cascades] if find else [],
        )
        summary = f"audit: {row.operation} → {row.dest}"
        reached: dict[str, list[str]] = {}
        if link and link_with_change:
            sent = await self._call(
                RECORD_WITH_LINK, change, summary=f"{summary}, {link.letter} email", local=True, mails=True
            )
            assert sent.token_sha256, "a link's change answers its token's hash"
            issued = (sent, expires_at)
        elif find:
            reached = (await self._call(RECORD_AND_FIND, change, summary=f"{summary}, cascade", local=True)).related
        else:
            await self._call(RECORD_CHANGE, change, summary=summary, local=True)
        # The change is recorded: make it the workflow's truth.
        old_token = d.token_sha256
        d.seq, d.state, d.fields = seq, str(row.dest), fields
        if lc.deadline_in(row.dest) and (from_state != row.dest or issued):
            d.entered_at, d.entered_seq, d.reminders_sent = now, seq, 0  # a new state or a new link: a new clock
        if issued:
            d.token_seq += 1
            d.token_sha256, d.expires_at = issued[0].token_sha256, issued[1]
            d.inviter = who.user if who.role != SYSTEM.role else d.inviter or s.actor.user
            if old_token:
                self._spend_token(old_token, InvitationStatus.REPLACED)
        for void in (e for e in row.effects if isinstance(e, VoidToken)):
            if old_token:
                self._spend_token(old_token, void.outcome)
            d.token_sha256 = None
        d.claimed_by = None
        d.audit.append(entry)
        del d.audit[:-AUDIT_TAIL]
        self._publish()
        workflow.metric_meter().create_counter(
            "partnerflow_transitions", "Lifecycle transitions made, by trigger and new state"
        ).add(1, {"trigger": row.trigger, "state": row.dest})
        workflow.logger.info(
            f"{lc.name}.transition",
            extra={
                lc.name: workflow.info().workflow_id,
                "trigger": row.trigger,
                "from_state": from_state,
                "state": row.dest,
                "actor": who.user,
                "role": who.role,
            },
        )
        # A letter into a state with a deadline (a suspension) tells when it ends.
        ends_at = deadline_at(lc, d, s.timers) if not link else None
        for send in notices if not with_change else ():
            # A letter added to a running lifecycle: `patched` keeps older histories replaying.
            if send.since is None or self._patched(send.since):
                await self._letter(send, f"{self._key_prefix()}/{seq}/{send.letter}", reason=reason, expires_at=ends_at)
        if find:
            for cascade in cascades:
                await self._tell(cascade, reached.get(cascade.lifecycle, []))
            return
        for cascade in (e for e in row.effects if isinstance(e, Cascade)):
            if cascade.if_set and not fields.get(cascade.if_set):
                continue
            if cascade.since is None or self._patched(cascade.since):
                await self._cascade(cascade)

    async def _cascade(self, cascade: Cascade) -> None:
        """Tell the customer's open lifecycles of `cascade.lifecycle` to fire its trigger. Each
        checks for itself (its row's guards read the records): a signal proves nothing."""
        s = self._start
        related = Related(
            lifecycle=cascade.lifecycle, cloud=s.cloud.value, partner_id=s.partner.id, customer_id=s.customer.id
        )
        found = await self._call(RELATED, related, summary=f"cascade: open {cascade.lifecycle}", local=True)
        await self._tell(cascade, found.workflow_ids)

    async def _tell(self, cascade: Cascade, workflow_ids: list[str]) -> None:
        for wid in workflow_ids:
            try:
                await workflow.get_external_workflow_handle(wid).signal(CASCADE_SIGNAL, cascade.trigger)
            except Exception:  # closed meanwhile: nothing left to end
                workflow.logger.info(f"{self.lifecycle.name}.cascade_missed", extra={"to": wid})

    async def _cascaded(self, trigger: str) -> None:
        """A related lifecycle's change asks for `trigger` (an `Upstream` row): fired when this
        state allows it and its guards hold (read from the records, not taken from the signal)."""
        rows = self.lifecycle.rows_for(trigger)
        if not rows or not isinstance(rows[0].by, Upstream):
            workflow.logger.warning(f"{self.lifecycle.name}.cascade_refused", extra={"trigger": str(trigger)[:64]})
            return
        await workflow.wait_condition(lambda: self.d.seq > 0 or self._start_denial is not None)
        if self._start_denial:
            return
        async with self._lock:
            if self.d.state not in self.lifecycle.sources_of(trigger):
                return  # already ended, or not begun far enough to need ending
            needs = self._needs(trigger)
            fact = await self._read_fact(needs) if needs else None
            facts = self._facts(None, fact)
            machine = self._machine()
            if machine.may(trigger, facts):
                await self._commit(machine.fire(trigger, facts), SYSTEM, None)

    def _ttl(self, state: str) -> timedelta:
        deadline = self.lifecycle.deadline_in(state)
        assert deadline is not None, "a link letter enters a state with a deadline (checked by the declaration)"
        assert deadline.after, "a link's deadline runs from the letter (checked by the declaration)"
        ttl: timedelta = getattr(self._start.timers, deadline.after)
        return ttl

    # --- the capabilities the activities offer ---------------------------------------
    def _to(self, recipient: Recipient, fields: Any = None) -> str:
        s = self._start
        if recipient is Recipient.PROVIDER_CONTACT:
            return ""  # the registry's contact, looked up by the activity (`to_partner`)
        if recipient is Recipient.CUSTOMER_ADMIN:
            # The record field; a relationship begun before the field was kept: its start input's.
            return str((fields or self.d.fields).get("admin_email") or s.customer.admin_email)
        if recipient is Recipient.PARTNER_CONTACT:
            return str(s.partner.contact_email or self.d.inviter or s.actor.user)
        return str(s.actor.user)

    async def _letter(
        self, send: Send, key: str, *, expires_at: datetime | None = None, reason: str = "", fields: Any = None
    ) -> IssuedToken | None:
        if not policy.reaches(send, self._start):
            return None
        letter = self._letter_for(send, key, expires_at=expires_at, reason=reason, fields=fields)
        if not send.token:
            await self._call(SEND_NOTICE, letter, summary=f"{send.letter} email")
            return None
        assert self.lifecycle.token_query, "a link letter has a page (checked by the declaration)"
        return await self._call(send_link(self.lifecycle.token_query), letter, summary=f"{send.letter} email")

    def _letter_for(
        self, send: Send, key: str, *, expires_at: datetime | None = None, reason: str = "", fields: Any = None
    ) -> SendLetter:
        s = self._start
        provider = policy.provider_of(s) if send.to is Recipient.PROVIDER_CONTACT else None
        return SendLetter(
            key=key,
            lifecycle=self.lifecycle.name,
            letter=send.letter,
            workflow_id=workflow.info().workflow_id,
            to=self._to(send.to, fields),
            partner_name=s.partner.name or s.partner.id,
            company=s.customer.company,
            expires_at=expires_at or self.d.expires_at,
            reason=reason,
            token=send.token,
            to_partner=provider,
            cloud=s.cloud.value if provider else None,
            **self._reader(send.to),
        )

    def _reader(self, to: Recipient) -> dict[str, str | None]:
        """The language a letter is written in: the customer's, or the partner's (the registry's)."""
        s = self._start
        if to is Recipient.CUSTOMER_ADMIN:
            return {"locale": s.customer.locale, "country": s.customer.country}
        return {"locale": s.partner.locale, "country": None}  # a provider's: looked up when sent

    async def _read_fact(self, fact: str) -> Counted:
        s = self._start
        read = ReadFact(fact=fact, cloud=s.cloud.value, partner_id=s.partner.id, customer_id=s.customer.id)
        counted = await self._call(read_fact(fact), read, summary=f"guard: {fact}", local=True)
        return counted if isinstance(counted, Counted) else Counted(count=counted)  # an older history's

    async def _call(
        self, capability: Capability[A, R], arg: A, *, summary: str, local: bool = False, mails: bool = False
    ) -> R:
        """One capability, with patient retries that wait outages out. `local`: a quick database
        step runs in the worker itself (no task-queue round trip, one marker in history instead
        of three events); email goes through the task queue, where a slow server holds no task.
        `mails`: a local step that may hold an SMTP conversation (a worker without a shared token
        key sends a link itself): the time an email may take, so no retry overlaps its send."""
        run: Any = workflow.execute_local_activity if local else workflow.execute_activity
        result: R = await run(
            capability.name,
            arg,
            result_type=capability.result,
            summary=summary,
            start_to_close_timeout=LOCAL_ACTIVITY_TIMEOUT if local and not mails else ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        return result

    # --- what others see ----------------------------------------------------------------
    def _key_prefix(self) -> str:
        # Stable across retries and replays; new after a reset and for a new
        # relationship that reuses the workflow id after the old one closed.
        info = workflow.info()
        return f"{info.workflow_id}/{info.run_id}"

    def _snapshot(self) -> Snapshot:
        d, start = self.d, self._start
        if not self._admitted:  # the caller's name for its partner is no one's to see
            start = start.model_copy(update={"partner": start.partner.model_copy(update={"name": None})})
        deadline = deadline_at(self.lifecycle, d, self._start.timers)
        return Snapshot(start, d.state, d.fields, d.expires_at, tuple(d.audit), deadline)

    def _publish(self) -> None:
        # A run begun under ENGINE_PATCH sends only the attributes that changed.
        published = publish(self.lifecycle, self._snapshot(), since=self._published if self._engine_patch else None)
        self._published = published

    def _view(self) -> BaseModel:
        return self.lifecycle.view(self._snapshot())

    def _lookup(self, lookup: InvitationLookup) -> InvitationView:
        """What the holder of a link token may see: details for the live token only."""
        if self._start_denial:
            return InvitationView(status=InvitationStatus.UNKNOWN)
        d, s = self.d, self._start
        if self._token_is_live(lookup.token):
            return InvitationView(
                status=InvitationStatus.VALID,
                partner_name=s.partner.name or s.partner.id,
                company=s.customer.company,
                admin_email=self._to(Recipient.CUSTOMER_ADMIN),
                expires_at=d.expires_at,
                locale=s.customer.locale,
                country=s.customer.country,
            )
        digest = token_hash(lookup.token)
        for spent, outcome in d.spent_tokens:
            if hmac.compare_digest(spent, digest):
                return InvitationView(status=outcome)
        if d.token_sha256 and hmac.compare_digest(d.token_sha256, digest):
            return InvitationView(status=InvitationStatus.EXPIRED)  # its timer has yet to fire
        return InvitationView(status=InvitationStatus.UNKNOWN)

    def _state(self) -> BaseModel:
        if self._start_denial:
            raise self._start_denial
        return self._view()


def workflow_class(lifecycle: Lifecycle, module: str) -> type[Interpreter]:
    """A workflow class for `lifecycle`: its updates, validators and queries made from the rows.

    `module` must bind the class under its `__name__`: the sandbox imports it from there.
    """
    view = lifecycle.view_model
    members: dict[str, Any] = {"lifecycle": lifecycle, "__module__": module}

    def __init__(self: Interpreter, *inputs: Any) -> None:
        self._setup(inputs)

    async def run(self: Interpreter, *inputs: Any) -> Any:
        return await self._run()

    async def started(self: Interpreter) -> Any:
        """For update-with-start: answers once the start's change is made, or why it was refused."""
        await workflow.wait_condition(lambda: self.d.seq > 0 or self._start_denial is not None)
        if self._start_denial:
            raise self._start_denial
        return self._view()

    def validate_started(self: Interpreter) -> None:
        if self._start_denial:
            raise self._start_denial

    def state(self: Interpreter) -> Any:
        return self._state()

    async def cascade(self: Interpreter, *args: Any) -> None:
        # `*args`: a signal anyone may send with no argument or several must never fail a task.
        if len(args) == 1 and isinstance(args[0], str):
            await self._cascaded(args[0])
        else:
            workflow.logger.warning(f"{lifecycle.name}.cascade_refused", extra={"arguments": len(args)})

    name = f"{lifecycle.workflow_type}Workflow"
    for fn in (__init__, run, started, validate_started, state, cascade):
        _place(fn, module, name)
    __init__.__annotations__ = {"inputs": Any, "return": None}
    run.__annotations__ = {"inputs": Any, "return": view}
    started.__annotations__ = state.__annotations__ = {"return": view}
    validate_started.__annotations__ = {"return": None}
    members["__init__"] = workflow.init(__init__)
    members["run"] = workflow.run(run)
    members["started"] = workflow.update(name="started")(started)
    members["started"].validator(validate_started)
    members["state"] = workflow.query(name="state")(state)
    if any(isinstance(r.by, Upstream) for r in lifecycle.rows):
        cascade.__annotations__ = {"args": Any, "return": None}
        members["cascade"] = workflow.signal(name=CASCADE_SIGNAL)(cascade)
    if lifecycle.token_query:

        def token_query(self: Interpreter, lookup: InvitationLookup) -> InvitationView:
            return self._lookup(lookup)

        token_query.__annotations__ = {"lookup": InvitationLookup, "return": InvitationView}
        _place(token_query, module, name)
        members[f"query_{lifecycle.token_query}"] = workflow.query(name=lifecycle.token_query)(token_query)
    for trigger in lifecycle.updates:
        members[f"update_{trigger}"] = _update_handler(module, name, trigger, lifecycle.commands[trigger].payload, view)
    cls = type(name, (Interpreter,), members)
    # Outside the sandbox (SANDBOXED says why); any workflow of a team's own stays in it.
    return workflow.defn(name=lifecycle.workflow_type, sandboxed=SANDBOXED)(cls)


def _place(fn: Any, module: str, cls_name: str, name: str | None = None) -> None:
    """Make `fn` look defined in the generated class, as the SDK checks a run method to be."""
    fn.__module__ = module
    fn.__name__ = name or fn.__name__
    fn.__qualname__ = f"{cls_name}.{fn.__name__}"


def _update_handler(module: str, cls_name: str, trigger: str, payload: type[BaseModel], view: type[BaseModel]) -> Any:
    async def handler(self: Interpreter, command: Any) -> Any:
        return await self._update(trigger, command)

    def validator(self: Interpreter, command: Any) -> None:
        self._validate(trigger, command, arriving=True)

    handler.__annotations__ = {"command": payload, "return": view}
    validator.__annotations__ = {"command": payload, "return": None}
    _place(handler, module, cls_name, trigger)
    _place(validator, module, cls_name, f"validate_{trigger}")
    update = workflow.update(name=trigger)(handler)
    update.validator(validator)
    return update
