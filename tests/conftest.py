"""The project's own tests run on its public test kit (`partnerflow.testing`).

The kit's fixtures (`partnerflow`, `partnerflow_live`, `partnerflow_time_env`,
`partnerflow_dev_env`, `partnerflow_mail`, `partnerflow_records`) come in as a pytest
plugin and the tests use them by those names. Here are only the few set-ups this
project needs on top (the usgov namespace, a worker on the contract's task queue, a fresh
records database on PostgreSQL and on SQLite);
helpers shared between test modules are in `tests/helpers.py`.
"""

from __future__ import annotations

import gc
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from partnerflow import pgcluster
from partnerflow.activities.records import Records
from partnerflow.mailsink import MailSink
from partnerflow.pgcluster import ThrowawayPostgres
from partnerflow.runtime import migrate
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


# --- a fresh records database on PostgreSQL and on SQLite (the records' and the relay's tests) --
_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    if not pgcluster.available():
        # `make test` installs them (its `postgres` step): a missing server is a broken set-up, not a skip.
        pytest.fail("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin")
    with ThrowawayPostgres() as cluster:
        yield cluster


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: its own database in the session's cluster, or a new SQLite file."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    cluster: ThrowawayPostgres = request.getfixturevalue("postgres")
    return cluster.create_database(f"fresh_{next(_names)}")


@pytest.fixture
def records(empty_url: str) -> Iterator[Records]:
    migrate.upgrade(empty_url)
    records = Records(empty_url)
    yield records
    records.dispose()
