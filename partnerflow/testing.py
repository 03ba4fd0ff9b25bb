"""partnerflow's test kit: pytest fixtures that run the real thing, fast.

Installed as a pytest plugin (entry point `partnerflow`), so after
`pip install partnerflow` a backend team's tests can write::

    async def test_our_billing_sync(partnerflow):
        handle = await partnerflow.bring_to("active")      # one line, any state
        ...                                                # drive it with your code
        assert (await partnerflow.view(handle)).purchase_permission

Any declared lifecycle, the same way: `await partnerflow.bring_to("active",
lifecycle=DELEGATED_ADMIN)` (`partnerflow.states.delegated_admin`).

Fixtures:
- `partnerflow`: a worker on the time-skipping test server (days of timers pass
  in milliseconds), with a real SMTP sink and SQLite records in a temp folder.
- `partnerflow_live`: the same on a real Temporal dev server (update-with-start,
  static summaries, wall-clock timers).
- `partnerflow_time_env` / `partnerflow_dev_env`: the session's servers, both
  with namespaces `relationships` and `relationships-usgov` and the search attributes.
- `partnerflow_mail` / `partnerflow_records`: the sink and the records, per test.

The kit's worker runs in proven mode with keys of its own (`KIT_KEYS`): the harness
signs each start and update for the actor it names (`prove=False` sends one unsigned)
and adds a start's partners to the registry (`register=False` leaves them out).

Needs pytest-asyncio with session-scoped loops (`asyncio_default_fixture_loop_scope
= "session"` and `asyncio_default_test_loop_scope = "session"`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from partnerflow.activities.capabilities import Capabilities
from partnerflow.activities.email import Mailer, SmtpSettings
from partnerflow.activities.records import Records
from partnerflow.mailsink import MailSink, text_of
from partnerflow.runtime import search_attributes
from partnerflow.runtime.converter import data_converter
from partnerflow.runtime.keys import Signer, public_jwks
from partnerflow.states.declaration import CustomerAdmin, Lifecycle, PartnerStaff, Row, Timer, Upstream
from partnerflow.states.lifecycles import LIFECYCLES, by_workflow_id
from partnerflow.states.models import STRICT, Actor, Cloud, Partner, RelationshipView, State
from partnerflow.states.names import NAMESPACES
from partnerflow.states.proof import Issuer, Verifier, key_set
from partnerflow.states.relationship import RELATIONSHIP
from partnerflow.worker import new_worker
from partnerflow.workflows.timers import deadline_at

BIN = Path(sys.executable).parent
LINK_BASE = "http://portal.test"
TOKEN_IN_LINK = re.compile(r"[?&]token=([A-Za-z0-9_-]+)")
ADMIN = {"user": "Alex Admin", "email": "admin@contoso.example"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_input(**overrides: Any) -> dict[str, Any]:
    """A valid start input as raw JSON (CONTRACT.md), with a fresh customer id.

    Nested dicts are merged: `start_input(partner={"kind": "indirect_provider"})`; a None
    in one leaves its key out: `start_input(customer={"admin_email": None})`.
    """
    body: dict[str, Any] = {
        "cloud": "public",
        "partner": {"id": "p-100", "name": "Fabrikam", "kind": "direct"},
        "customer": {
            "id": f"c-{uuid.uuid4().hex[:12]}",
            "company": "Contoso Ltd",
            "admin_email": "admin@contoso.example",
            "country": "US",
        },
        "origin": "invitation",
        "actor": {"user": "sam@fabrikam.example", "role": "sales_agent", "partner_id": "p-100"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            merged = {**body[key], **value}
            body[key] = {k: v for k, v in merged.items() if v is not None}
        else:
            body[key] = value
    return body


@dataclass(frozen=True)
class KitKeys:
    """The kit's two issuers, made in memory: a partner service's and a customer portal's."""

    partners: Signer
    customers: Signer

    @classmethod
    def make(cls) -> KitKeys:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from partnerflow.runtime.keys import key_id

        signers = []
        for issuer in ("kit-partner-services", "kit-customer-portal"):
            key = Ed25519PrivateKey.generate()
            signers.append(Signer(issuer, key, key_id(key.public_key())))
        return cls(*signers)

    def signer_env(self, folder: Path) -> dict[str, str]:
        """The environment that makes the `partnerflow` CLI sign with the kit's partner key."""
        from cryptography.hazmat.primitives import serialization

        pem = self.partners.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path = folder / "kit-partner-services.pem"
        path.write_bytes(pem)
        path.chmod(0o600)
        return {"PARTNERFLOW_SIGNER__ISSUER": self.partners.issuer, "PARTNERFLOW_SIGNER__KEY_FILE": str(path)}

    def issuers_env(self, folder: Path) -> dict[str, str]:
        """The environment that makes a configured worker believe the kit's two issuers."""
        issuers = []
        for signer, kind in ((self.partners, "partner_staff"), (self.customers, "customer_admin")):
            path = folder / f"{signer.issuer}.jwks.json"
            path.write_text(json.dumps(public_jwks(signer.key)))
            issuers.append({"name": signer.issuer, "jwks_file": str(path), "asserts": [kind]})
        return {"PARTNERFLOW_PROOF__ISSUERS": json.dumps(issuers)}

    def verifier(self) -> Verifier:
        return Verifier(
            "proven",
            issuers={
                self.partners.issuer: Issuer(
                    self.partners.issuer, key_set(public_jwks(self.partners.key)), frozenset({"partner_staff"})
                ),
                self.customers.issuer: Issuer(
                    self.customers.issuer, key_set(public_jwks(self.customers.key)), frozenset({"customer_admin"})
                ),
            },
        )


KIT_KEYS = KitKeys.make()
#: The invitation token key the kit's workers share, as a deployment's workers share one
#: (`PARTNERFLOW_INVITATION__TOKEN_KEY`): a link letter goes with its change, and the relay sends it.
KIT_TOKEN_KEY = secrets.token_bytes(32)


def sign_start(body: dict[str, Any], lifecycle: Lifecycle = RELATIONSHIP) -> dict[str, Any]:
    """`body` with an assertion for its actor, as a calling service would mint it (left as it is
    when it does not read as a start: a test of bad input)."""
    try:
        start: Any = lifecycle.start_model.model_validate(body)
    except ValueError:
        return body
    proof = KIT_KEYS.partners.for_actor(lifecycle.begin(start), lifecycle.workflow_id_for(start), start.actor)
    return {**body, "proof": proof}


def sign_update(payload: dict[str, Any], action: str, workflow_id: str) -> dict[str, Any]:
    """`payload` with an assertion for whoever it names: partner staff (`actor`) or, for the
    customer portal's updates, the customer's admin (`customer_admin.customer_id`)."""
    if not isinstance(payload, dict):
        return payload  # a test of a payload that is no object: sent as it is
    admin = payload.get("customer_admin")
    if isinstance(admin, dict) and "customer_id" in admin and "token" not in payload:
        user = str(admin.get("email", ""))
        return {**payload, "proof": KIT_KEYS.customers.for_customer(action, workflow_id, admin["customer_id"], user)}
    try:
        who = Actor.model_validate(payload.get("actor"))
    except ValueError:
        return payload
    return {**payload, "proof": KIT_KEYS.partners.for_actor(action, workflow_id, who)}


def register_partners(records: Records, body: dict[str, Any], cloud: str | None = None) -> None:
    """A start's partner (and referrer) in the registry, with the facts its body gives."""
    cloud = cloud or str(body.get("cloud", "public"))
    given = body.get("partner")
    facts: dict[str, Any] = given if isinstance(given, dict) else {}
    entries = [{**facts, "name": facts.get("name") or "Fabrikam"}]
    if body.get("referred_by"):
        entries.append({"id": body["referred_by"], "name": f"Partner {body['referred_by']}"})
    for entry in entries:
        try:
            partner = Partner.model_validate(entry, context=STRICT)  # ids as a start reads them
        except ValueError:
            continue
        records.put_partner(cloud, partner, now=datetime.now(UTC))


def actor(role: str = "sales_agent", partner_id: str = "p-100", user: str = "sam@fabrikam.example") -> dict[str, str]:
    return {"user": user, "role": role, "partner_id": partner_id}


async def poll(check: Callable[[], Awaitable[Any]], attempts: int = 200) -> Any:
    """Await a condition that a server makes true (never a fixed sleep)."""
    delay = 0.01
    for _ in range(attempts):
        result = await check()
        if result:
            return result
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)
    raise AssertionError("condition not met in time")


async def letters_sent(records: Records) -> None:
    """Await the letters the changes so far queued: the worker's relay sends a change's notices
    just after the change answers (activities/relay.py), so a test awaits them before reading."""

    async def sent() -> bool:
        return records.letters_queued() == 0

    await poll(sent)


def path_to(target: str, lifecycle: Lifecycle = RELATIONSHIP) -> tuple[Row, list[Row]]:
    """The start row and the shortest row sequence reaching `target`, from the declaration: by
    the starts the kit knows how to make (`START_OVERRIDES`), its callers' updates and its timers
    (a cascade is no step of its own: another lifecycle's change makes it)."""
    best: tuple[Row, list[Row]] | None = None
    for start in (s for s in lifecycle.starts if s.trigger in START_OVERRIDES):
        seen, frontier = {start.dest}, [(start.dest, list[Row]())]
        while frontier:
            state, steps = frontier.pop(0)
            if state == target:
                if best is None or len(steps) < len(best[1]):
                    best = (start, steps)
                break
            for row in lifecycle.rows:
                if state in row.sources and row.dest not in seen and not isinstance(row.by, Upstream):
                    seen.add(row.dest)
                    frontier.append((row.dest, [*steps, row]))
    if best is None:
        raise ValueError(f"{target} cannot be reached")
    return best


#: Start inputs by start row (beyond `start_input`'s defaults): how each begins.
START_OVERRIDES: dict[str, dict[str, Any]] = {
    "invite": {"origin": "invitation"},
    "refer": {
        "origin": "referral",
        "customer": {"admin_email": None},  # the referred partner gives it (accept_referral)
        "referred_by": "dist-1",
        "actor": {"user": "d@dist.example", "role": "sales_agent", "partner_id": "dist-1"},
    },
    # A delegated admin request (the relationship's `origin` is ignored by its start model).
    "create": {
        "request_id": "helpdesk",
        "display_name": "Helpdesk",
        "duration": "P730D",
        "roles": ["Helpdesk Administrator", "License Administrator"],
        "actor": {"user": "gia@fabrikam.example", "role": "admin_agent", "partner_id": "p-100"},
        # Its steps (approved → activating → active, and termination's) take a minute here, not
        # none: a test sees each state, and no update races the workflow's completion (which
        # the time-skipping server cannot take: its clock stays locked).
        "timers": {"step": "PT1M"},
    },
}


def lifecycle_of(workflow_id: str) -> Lifecycle:
    found = by_workflow_id(workflow_id)
    assert found is not None, f"{workflow_id} is no lifecycle's workflow id"
    return found


def workflow_id_of(lifecycle: Lifecycle, body: dict[str, Any]) -> str:
    """The workflow id a raw start input asks for (read leniently: a test may send bad input)."""
    own = {k: v for k, v in body.items() if isinstance(v, str)}
    return lifecycle.workflow_id.format(**own, partner_id=body["partner"]["id"], customer_id=body["customer"]["id"])


def ids_of(workflow_id: str) -> tuple[str, str]:
    """(partner id, customer id) of any lifecycle's workflow id."""
    partner_id, customer_id = workflow_id.split("/")[1:3]
    return partner_id, customer_id


@dataclass
class _Deadline:
    """What `deadline_at` reads of a workflow's data, rebuilt from outside it."""

    state: str
    fields: dict[str, Any]
    entered_at: datetime


@dataclass
class Harness:
    """A running worker on its own task queue, with its mail sink and its records."""

    env: WorkflowEnvironment
    client: Client
    sink: MailSink
    records: Records
    task_queue: str
    handles: list[WorkflowHandle[Any, Any]] = field(default_factory=list)

    async def start(
        self,
        body: dict[str, Any] | None = None,
        *,
        prove: bool = True,
        register: bool = True,
        lifecycle: Lifecycle = RELATIONSHIP,
        **overrides: Any,
    ) -> WorkflowHandle[Any, Any]:
        """Start a lifecycle (a relationship unless told) from raw JSON (`start_input(**overrides)`
        by default), its actor proven and its partners registered unless told otherwise."""
        body = body or start_input(**overrides)
        if register:
            register_partners(self.records, body)
        if prove and "proof" not in body:
            body = sign_start(body, lifecycle)
        handle = await self.client.start_workflow(
            lifecycle.workflow_type,
            body,
            id=workflow_id_of(lifecycle, body),
            task_queue=self.task_queue,
            result_type=lifecycle.view_model,
        )
        self.handles.append(handle)
        return handle

    async def bring_to(
        self, state: str | State, *, lifecycle: Lifecycle = RELATIONSHIP, **overrides: Any
    ) -> WorkflowHandle[Any, Any]:
        """A lifecycle (a relationship unless told) in `state`, by the shortest path its declaration allows."""
        first, steps = path_to(str(state), lifecycle)
        for key, value in START_OVERRIDES[first.trigger].items():
            overrides.setdefault(key, value)
        handle = await self.start(lifecycle=lifecycle, **overrides)
        await self.wait_for_state(handle, first.dest)
        partner_id, customer_id = ids_of(handle.id)
        path = [first.dest, *(row.dest for row in steps)]
        for i, row in enumerate(steps):
            if (await self.view(handle)).state in path[i + 1 :]:
                continue  # its timers already moved it on (steps that take no time)
            if isinstance(row.by, Timer):
                # Just past the deadline: a next state's deadline may follow a minute later.
                await self.env.sleep(await self._until(handle, lifecycle) + timedelta(seconds=1))
            else:
                await self.update(handle, row.trigger, self.payload(row.trigger, customer_id, partner_id))
            await self._moved_on(handle, path[i])
        await self.wait_for_state(handle, str(state))
        return handle

    async def _moved_on(self, handle: WorkflowHandle[Any, Any], state: str) -> None:
        async def moved() -> bool:
            return (await self.view(handle)).state != state

        await poll(moved)

    async def _until(self, handle: WorkflowHandle[Any, Any], lifecycle: Lifecycle) -> timedelta:
        """How long until the current state's deadline, by the declaration's own arithmetic."""
        row = self.records.current(lifecycle.table, handle.id) or {}
        own = row.get("fields", {}) if lifecycle.table == "entities" else {k: row.get(k) for k in lifecycle.fields}
        view = await self.view(handle)
        start: Any = lifecycle.start_model.model_validate(await self.start_input_of(handle))
        entered = view.audit[-1].at
        data = _Deadline(state=view.state, fields=own, entered_at=entered)
        end = deadline_at(lifecycle, data, start.timers)  # type: ignore[arg-type]
        assert end is not None, f"{view.state} has no deadline"
        return max(end - await self.env.get_current_time(), timedelta(0))

    async def start_input_of(self, handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
        """The start input as its history holds it (decoded by this client's converter)."""
        async for event in handle.fetch_history_events():
            attrs = event.workflow_execution_started_event_attributes
            [body] = await self.client.data_converter.decode(attrs.input.payloads, [dict])
            return dict(body)
        raise AssertionError("no history")

    def payload(self, trigger: str, customer_id: str, partner_id: str = "p-100") -> dict[str, Any]:
        """A payload that the policy and the guards accept for `trigger`, from its row and command
        (the lifecycle is the one whose update it is; a field's example where it declares one)."""
        lifecycle = next(lc for lc in LIFECYCLES.values() if trigger in lc.commands)
        by, model = lifecycle.by(trigger), lifecycle.commands[trigger].payload
        body: dict[str, Any] = {}
        if isinstance(by, PartnerStaff):
            role = "global_admin" if "global_admin" in by.roles else sorted(by.roles)[0].value
            body["actor"] = actor(role, partner_id=partner_id, user="gia@fabrikam.example")
        elif isinstance(by, CustomerAdmin):
            admin = {**ADMIN, "customer_id": customer_id} if by.proof == "portal" else dict(ADMIN)
            body["customer_admin"] = admin
            if by.proof == "token":
                body["token"] = self.latest_token()
        for name, info in model.model_fields.items():
            if info.annotation is bool and name not in body:
                body[name] = True  # yes/no fields: the one that changes something
            elif isinstance(info.annotation, type) and issubclass(info.annotation, Enum):
                body[name] = next(iter(info.annotation)).value  # a coded field (a suspension's reason)
            elif name == "reason":
                body[name] = "test kit"
            elif name == "admin_email":
                body[name] = ADMIN["email"]
            elif info.examples and name not in body:
                body[name] = info.examples[0]
        return body

    async def wait_for_state(self, handle: WorkflowHandle[Any, Any], state: str | None = None) -> RelationshipView:
        """Await the first change (or `state`): the start's email and records are done then."""

        async def ready() -> RelationshipView | None:
            view = await self.view(handle)
            if view.audit and (state is None or view.state == state):
                return view
            return None

        result: RelationshipView = await poll(ready)
        await self.letters_sent()
        return result

    async def letters_sent(self) -> None:
        """Await the letters the changes so far queued (see `letters_sent`)."""
        await letters_sent(self.records)

    async def view(self, handle: WorkflowHandle[Any, Any]) -> RelationshipView:
        """The lifecycle's view (a `RelationshipView` for a relationship)."""
        result: RelationshipView = await handle.query("state", result_type=lifecycle_of(handle.id).view_model)
        return result

    async def update(
        self, handle: WorkflowHandle[Any, Any], name: str, payload: dict[str, Any], *, prove: bool = True
    ) -> RelationshipView:
        """Send an update as raw JSON, as any SDK or the `temporal` CLI would (signed for its actor
        unless `prove` is False or it carries a proof)."""
        if prove and "proof" not in payload:
            payload = sign_update(payload, name, handle.id)
        view_model = lifecycle_of(handle.id).view_model
        result: RelationshipView = await handle.execute_update(name, payload, result_type=view_model)
        await self.letters_sent()  # as the change's answer found them: sent
        return result

    def mail(self, to: str | None = None) -> list[Any]:
        return [m for m in self.sink.messages() if to is None or m["To"] == to]

    def tokens(self, relationship: str | None = None) -> list[str]:
        """Every token ever mailed (for one relationship, if given), oldest first: what the
        customer's inbox holds."""
        link = TOKEN_IN_LINK
        if relationship is not None:  # the sink may be shared by many relationships
            link = re.compile(re.escape(urlencode({"relationship": relationship})) + r"&token=([A-Za-z0-9_-]+)")
        found: list[str] = []
        for message in self.sink.messages():
            found += link.findall(text_of(message))
        return found

    def latest_token(self) -> str:
        """The token in the newest invitation email: what the customer would click."""
        tokens = self.tokens()
        if not tokens:
            raise AssertionError("no invitation email in the sink")
        return tokens[-1]

    token = latest_token

    async def history_size(self, handle: WorkflowHandle[Any, Any]) -> int:
        """Events other than workflow-task bookkeeping (which the Java test server
        writes even for a rejected update; the real server drops them)."""
        events = (await handle.fetch_history()).events
        return sum(not EventType.Name(e.event_type).startswith("EVENT_TYPE_WORKFLOW_TASK") for e in events)


def client_for(env: WorkflowEnvironment, cloud: Cloud = Cloud.PUBLIC) -> Client:
    return Client(env.client.service_client, namespace=NAMESPACES[cloud], data_converter=data_converter)


@contextlib.asynccontextmanager
async def running(
    env: WorkflowEnvironment,
    sink: MailSink,
    records: Records,
    cloud: Cloud = Cloud.PUBLIC,
    task_queue: str | None = None,
    link_base: str = LINK_BASE,
    verifier: Verifier | None = None,
) -> AsyncIterator[Harness]:
    """partnerflow's worker on `env` (proven mode, believing `KIT_KEYS`, unless `verifier` says
    otherwise); relationships it started are ended on exit."""
    activities = Capabilities(
        records,
        Mailer(SmtpSettings(port=sink.port)),
        link_base,
        cloud.value,
        token_key=KIT_TOKEN_KEY,
        verifier=verifier or KIT_KEYS.verifier(),
    )
    client = client_for(env, cloud)
    task_queue = task_queue or f"tq-{uuid.uuid4()}"
    # The registry holds the partners of `start_input` and of a referral (START_OVERRIDES).
    register_partners(records, start_input(**START_OVERRIDES["refer"]), cloud.value)
    async with new_worker(client, activities, task_queue):
        harness = Harness(env, client, sink, records, task_queue)
        try:
            yield harness
        finally:
            # Open relationships with pending timers would hold up time skipping for every
            # later test on the shared server (a failed test's too): end them here.
            for handle in harness.handles:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="session")
async def partnerflow_time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: days of timers pass in milliseconds."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"), data_converter=data_converter
    )
    for namespace in NAMESPACES.values():
        await search_attributes.register(env.client, namespace)
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def partnerflow_dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (in memory), with both namespaces and the search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        namespace=NAMESPACES[Cloud.PUBLIC],
        data_converter=data_converter,
        dev_server_extra_args=[f"--namespace={NAMESPACES[Cloud.USGOV]}", *search_attributes.cli_flags()],
    )
    yield env
    await env.shutdown()


@pytest.fixture
def partnerflow_mail(tmp_path: Path) -> Iterator[MailSink]:
    """A real SMTP server on a free port, keeping each message as a file."""
    with MailSink(tmp_path / "mail", port=free_port()) as sink:
        yield sink


@pytest.fixture
def partnerflow_records(tmp_path: Path) -> Iterator[Records]:
    """The records (customer list, audit, outbox, subscriptions) in a temp SQLite file."""
    records = Records(f"sqlite:///{tmp_path / 'records.db'}")
    records.create_schema()
    yield records
    records.dispose()


@pytest.fixture
async def partnerflow(
    partnerflow_time_env: WorkflowEnvironment, partnerflow_mail: MailSink, partnerflow_records: Records
) -> AsyncIterator[Harness]:
    """partnerflow's worker on the time-skipping server (cloud public)."""
    async with running(partnerflow_time_env, partnerflow_mail, partnerflow_records) as harness:
        yield harness


@pytest.fixture
async def partnerflow_live(
    partnerflow_dev_env: WorkflowEnvironment, partnerflow_mail: MailSink, partnerflow_records: Records
) -> AsyncIterator[Harness]:
    """partnerflow's worker on the real dev server (cloud public): for what the time-skipping
    server lacks (update-with-start, continue-as-new, static summaries, visibility queries)."""
    async with running(partnerflow_dev_env, partnerflow_mail, partnerflow_records) as harness:
        yield harness
