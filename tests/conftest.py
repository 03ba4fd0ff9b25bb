"""Shared set-up: real servers (Temporal test and dev servers, SMTP sink, SQLite), fresh per test.

One time-skipping server and one dev server per session; every test gets its own
mail folder, records database, task queue and relationship ids, so tests never
see each other's mail or rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.email import Mailer, SmtpSettings
from activities.records import Records
from activities.relationship import RelationshipActivities
from partnerflow import search_attributes
from partnerflow.converter import data_converter
from partnerflow.mailsink import MailSink
from states.models import NAMESPACES, TASK_QUEUE, Cloud, RelationshipView
from worker import new_worker

BIN = Path(sys.executable).parent
LINK_BASE = "http://portal.test"
TOKEN_IN_LINK = re.compile(r"[?&]token=([A-Za-z0-9_-]+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: days of timers pass in milliseconds."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"), data_converter=data_converter
    )
    for namespace in NAMESPACES.values():
        await search_attributes.register(env.client, namespace)
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (in memory), with both namespaces and our search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        namespace=NAMESPACES[Cloud.PUBLIC],
        data_converter=data_converter,
        dev_server_extra_args=[
            f"--namespace={NAMESPACES[Cloud.USGOV]}",
            *search_attributes.cli_flags(),
        ],
    )
    yield env
    await env.shutdown()


@pytest.fixture
def mail_sink(tmp_path: Path) -> Iterator[MailSink]:
    with MailSink(tmp_path / "mail", port=free_port()) as sink:
        yield sink


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Records]:
    r = Records(f"sqlite:///{tmp_path / 'records.db'}")
    r.create_schema()
    yield r
    r.dispose()


def client_for(env: WorkflowEnvironment, cloud: Cloud = Cloud.PUBLIC) -> Client:
    return Client(env.client.service_client, namespace=NAMESPACES[cloud], data_converter=data_converter)


def start_input(**overrides: Any) -> dict[str, Any]:
    """A valid start input as raw JSON (CONTRACT.md), with a fresh customer id."""
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
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


def actor(
    role: str = "sales_agent", partner_id: str = "p-100", user: str = "sam@fabrikam.example"
) -> dict[str, str]:
    return {"user": user, "role": role, "partner_id": partner_id}


ADMIN = {"user": "Alex Admin", "email": "admin@contoso.example"}


@dataclass
class Harness:
    """A running worker on its own task queue, its mail sink and its records."""

    env: WorkflowEnvironment
    client: Client
    sink: MailSink
    records: Records
    task_queue: str
    handles: list[WorkflowHandle[Any, Any]] = field(default_factory=list)

    async def start(self, body: dict[str, Any] | None = None, **overrides: Any) -> WorkflowHandle[Any, Any]:
        body = body or start_input(**overrides)
        wid = f"relationship/{body['partner']['id']}/{body['customer']['id']}"
        handle = await self.client.start_workflow(
            "Relationship", body, id=wid, task_queue=self.task_queue, result_type=RelationshipView
        )
        self.handles.append(handle)
        return handle

    async def wait_for_state(
        self, handle: WorkflowHandle[Any, Any], state: str | None = None
    ) -> RelationshipView:
        async def ready() -> RelationshipView | None:
            view = await self.view(handle)
            if view.audit and (state is None or view.state == state):
                return view
            return None

        return await poll(ready)

    async def view(self, handle: WorkflowHandle[Any, Any]) -> RelationshipView:
        return await handle.query("state", result_type=RelationshipView)

    async def update(
        self, handle: WorkflowHandle[Any, Any], name: str, payload: dict[str, Any]
    ) -> RelationshipView:
        return await handle.execute_update(name, payload, result_type=RelationshipView)

    def mail(self, to: str | None = None) -> list[Any]:
        return [m for m in self.sink.messages() if to is None or m["To"] == to]

    def tokens(self) -> list[str]:
        """Every token ever mailed, oldest first: what the customer's inbox holds."""
        found = []
        for message in self.sink.messages():
            found += TOKEN_IN_LINK.findall(message.get_payload(decode=True).decode())
        return found

    def token(self) -> str:
        return self.tokens()[-1]

    async def history_size(self, handle: WorkflowHandle[Any, Any]) -> int:
        """Events other than workflow-task bookkeeping (which the Java test server
        writes even for a rejected update; the real server drops them)."""
        events = (await handle.fetch_history()).events
        return sum(not EventType.Name(e.event_type).startswith("EVENT_TYPE_WORKFLOW_TASK") for e in events)


async def poll(check: Any, attempts: int = 200) -> Any:
    """Await a condition that a server makes true (no fixed sleeps)."""
    delay = 0.01
    for _ in range(attempts):
        result = await check()
        if result:
            return result
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)
    raise AssertionError("condition not met in time")


async def _harness(
    env: WorkflowEnvironment, sink: MailSink, records: Records, cloud: Cloud, task_queue: str | None = None
) -> AsyncIterator[Harness]:
    activities = RelationshipActivities(records, Mailer(SmtpSettings(port=sink.port)), LINK_BASE)
    client = client_for(env, cloud)
    task_queue = task_queue or f"tq-{uuid.uuid4()}"
    async with new_worker(client, activities, task_queue):
        harness = Harness(env, client, sink, records, task_queue)
        yield harness
        # Open relationships with pending timers would hold up time skipping
        # for every later test on the shared server: end them here.
        for handle in harness.handles:
            with contextlib.suppress(Exception):
                await handle.terminate("test finished")


@pytest.fixture
async def timed(
    time_env: WorkflowEnvironment, mail_sink: MailSink, records: Records
) -> AsyncIterator[Harness]:
    """A worker on the time-skipping server (cloud public)."""
    async for h in _harness(time_env, mail_sink, records, Cloud.PUBLIC):
        yield h


@pytest.fixture
async def timed_usgov(
    time_env: WorkflowEnvironment, mail_sink: MailSink, records: Records
) -> AsyncIterator[Harness]:
    async for h in _harness(time_env, mail_sink, records, Cloud.USGOV):
        yield h


@pytest.fixture
async def live(dev_env: WorkflowEnvironment, mail_sink: MailSink, records: Records) -> AsyncIterator[Harness]:
    """A worker on the real dev server (cloud public)."""
    async for h in _harness(dev_env, mail_sink, records, Cloud.PUBLIC):
        yield h


@pytest.fixture
async def live_contract_queue(
    dev_env: WorkflowEnvironment, mail_sink: MailSink, records: Records
) -> AsyncIterator[Harness]:
    """A worker on the contract's task queue (`relationships`), for the typed client."""
    async for h in _harness(dev_env, mail_sink, records, Cloud.PUBLIC, TASK_QUEUE):
        yield h
