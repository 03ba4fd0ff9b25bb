"""The project's own tests run on its public test kit (`partnerflow.testing`).

The kit's fixtures (`partnerflow`, `partnerflow_live`, `partnerflow_time_env`,
`partnerflow_dev_env`, `partnerflow_mail`, `partnerflow_records`) come in as a pytest
plugin and the tests use them by those names. Here are only the few set-ups this
project needs on top (the usgov namespace, a worker on the contract's task queue);
helpers shared between test modules are in `tests/helpers.py`.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from temporalio.testing import WorkflowEnvironment

from partnerflow.activities.records import Records
from partnerflow.mailsink import MailSink
from partnerflow.runtime.codec import ensure_dev_keyring
from partnerflow.runtime.config import Settings
from partnerflow.states.models import Cloud
from partnerflow.states.names import TASK_QUEUE
from partnerflow.testing import Harness, running
from tests.helpers import PLAIN


@pytest.fixture(autouse=True, scope="session")
def no_temporal_env() -> Iterator[None]:
    """The tests run their own servers: a shell's TEMPORAL_* (another cluster's) is not for them."""
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("TEMPORAL_")}
    yield
    os.environ.update(saved)


DEV_KEYRING = ".dev/keys/payload-keys.json"


@pytest.fixture(autouse=True, scope="session")
def plain_payloads() -> Iterator[None]:
    ensure_dev_keyring(Settings().resolve(str(DEV_KEYRING)))  # for tests reading temporal-dev.yml alone
    saved = {name: os.environ.get(name) for name in PLAIN}
    os.environ.update(PLAIN)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
async def partnerflow_usgov(
    partnerflow_time_env: WorkflowEnvironment, partnerflow_mail: MailSink, partnerflow_records: Records
) -> AsyncIterator[Harness]:
    """partnerflow's worker on the time-skipping server, cloud usgov."""
    async with running(partnerflow_time_env, partnerflow_mail, partnerflow_records, Cloud.USGOV) as harness:
        yield harness


@pytest.fixture
async def partnerflow_live_contract_queue(
    partnerflow_dev_env: WorkflowEnvironment, partnerflow_mail: MailSink, partnerflow_records: Records
) -> AsyncIterator[Harness]:
    """A worker on the contract's task queue (`relationships`), for the typed client and CLI."""
    async with running(partnerflow_dev_env, partnerflow_mail, partnerflow_records, Cloud.PUBLIC, TASK_QUEUE) as harness:
        yield harness


@pytest.fixture
def partnerflow_garbage_collected() -> Iterator[None]:
    """Refused starts leave garbage with finalizers in the SDK (an un-retrieved future, a
    never-awaited coroutine). CPython 3.11 fails a `compile()` that a finalizer runs inside
    ("AST constructor recursion depth mismatch"), e.g. the workflow sandbox's or pytest's:
    tests that refuse many starts collect such garbage around each test, where nothing compiles."""
    gc.collect()
    yield
    gc.collect()
