"""The project's own tests run on its public test kit (`partnerflow.testing`).

The kit's fixtures come in as a pytest plugin; here they get the short names the
tests use, plus the few set-ups only this project needs (the usgov namespace, a
worker on the contract's task queue).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.records import Records
from partnerflow.mailsink import MailSink
from partnerflow.testing import (
    ADMIN,
    BIN,
    LINK_BASE,
    TOKEN_IN_LINK,
    Harness,
    actor,
    client_for,
    free_port,
    poll,
    running,
    start_input,
)
from states.models import Cloud
from states.names import TASK_QUEUE

__all__ = [
    "ADMIN",
    "BIN",
    "LINK_BASE",
    "TOKEN_IN_LINK",
    "Harness",
    "actor",
    "client_for",
    "free_port",
    "poll",
    "start_input",
]


@pytest.fixture(scope="session")
def time_env(partnerflow_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return partnerflow_time_env


@pytest.fixture(scope="session")
def dev_env(partnerflow_dev_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return partnerflow_dev_env


@pytest.fixture
def mail_sink(partnerflow_mail: MailSink) -> MailSink:
    return partnerflow_mail


@pytest.fixture
def records(partnerflow_records: Records) -> Records:
    return partnerflow_records


@pytest.fixture
def timed(partnerflow: Harness) -> Harness:
    return partnerflow


@pytest.fixture
def live(partnerflow_live: Harness) -> Harness:
    return partnerflow_live


@pytest.fixture
async def timed_usgov(time_env: WorkflowEnvironment, mail_sink: MailSink, records: Records) -> AsyncIterator[Harness]:
    async with running(time_env, mail_sink, records, Cloud.USGOV) as harness:
        yield harness


@pytest.fixture
async def live_contract_queue(
    dev_env: WorkflowEnvironment, mail_sink: MailSink, records: Records
) -> AsyncIterator[Harness]:
    """A worker on the contract's task queue (`relationships`), for the typed client and CLI."""
    async with running(dev_env, mail_sink, records, Cloud.PUBLIC, TASK_QUEUE) as harness:
        yield harness


@pytest.fixture
def garbage_collected() -> Iterator[None]:
    """Refused starts leave garbage with finalizers in the SDK (an un-retrieved future, a
    never-awaited coroutine). CPython 3.11 fails a `compile()` that a finalizer runs inside
    ("AST constructor recursion depth mismatch"), e.g. the workflow sandbox's or pytest's:
    tests that refuse many starts collect such garbage around each test, where nothing compiles."""
    gc.collect()
    yield
    gc.collect()
