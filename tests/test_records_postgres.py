"""The records on a real PostgreSQL (a throwaway cluster, `partnerflow.pgcluster`) and on SQLite.

The schema comes from the Alembic migrations (`runtime.migrate`), never from
`metadata.create_all`, so these tests also prove the migrations match `metadata`.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from partnerflow.activities.records import Change, OutboxEntry, Records, metadata
from partnerflow.pgcluster import ThrowawayPostgres
from partnerflow.runtime import migrate

pytestmark = pytest.mark.server

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
THREADS, PER_THREAD = 8, 50
RACE = (
    "Records.{} refused a write under concurrency: it UPDATEs the row and INSERTs it when no row was updated, so "
    "two first writes for one key both INSERT and one fails on the primary key. Make it one "
    "INSERT ... ON CONFLICT (cloud, partner_id, customer_id) DO UPDATE (see the report). Errors: {}"
)
ROWCOUNT = (
    "Records._insert_ignoring_duplicates: on PostgreSQL (psycopg, SQLAlchemy 2.1) an INSERT's .rowcount is -1 "
    "(truthy) unless the statement has .execution_options(preserve_rowcount=True), so a duplicate looks new: {}"
)
_names = itertools.count()


@pytest.fixture
def pg_records(postgres: ThrowawayPostgres) -> Iterator[Records]:
    url = postgres.create_database(f"records_{next(_names)}")
    migrate.upgrade(url)
    records = Records(url)
    yield records
    records.dispose()


def change(seq: int | str, to_state: str = "invited", customer_id: str = "c-1", **kw: Any) -> Change:
    values: dict[str, Any] = dict(
        change_id=f"relationship/p-1/{customer_id}/run/{seq}",
        cloud="public",
        partner_id="p-1",
        customer_id=customer_id,
        workflow_id=f"relationship/p-1/{customer_id}",
        company="Contoso",
        operation="CreateCustomerInvitation",
        actor_user="sam@p.example",
        actor_role="sales_agent",
        from_state=None,
        to_state=to_state,
        fields={"purchase_permission": False, "reinstated_count": 0},
        at=NOW,
    )
    values.update(kw)
    return Change.model_validate(values)


def differences(url: str) -> list[Any]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()


def run_concurrently(*jobs: Callable[[], None]) -> list[BaseException]:
    """Start every job at the same instant (a barrier, no sleeps); return what they raised."""
    start = threading.Barrier(len(jobs))

    def run(job: Callable[[], None]) -> None:
        start.wait()
        job()

    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(run, job) for job in jobs]
    return [error for future in futures if (error := future.exception()) is not None]


# --- (a) the migrations make exactly what `metadata` describes -----------------------------
def test_the_migrated_schema_matches_metadata(empty_url: str) -> None:
    """`upgrade` on an empty database leaves no difference from `activities.records.metadata`."""
    migrate.upgrade(empty_url)
    assert differences(empty_url) == []
    engine = sa.create_engine(empty_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert migrate.current(conn) == migrate.head() == "0008"
        assert set(sa.inspect(conn).get_table_names()) == {*metadata.tables, "alembic_version"}
    engine.dispose()


def test_upgrading_twice_changes_nothing(empty_url: str) -> None:
    """A second `upgrade` finds the database at head and does nothing."""
    first, again = migrate.run(empty_url), migrate.run(empty_url)
    assert (first.before, first.after) == (None, migrate.head())
    assert (again.before, again.after, again.adopted) == (migrate.head(), migrate.head(), False)
    assert "nothing to do" in again.describe()


def test_a_database_made_by_create_schema_is_adopted(empty_url: str) -> None:
    """Tables made by `Records.create_schema()` before migrations (no later table yet) are stamped
    0001 and upgraded, their rows kept."""
    old = Records(empty_url)
    metadata.create_all(old.engine, tables=[t for t in metadata.sorted_tables if t.name not in migrate.LATER_TABLES])
    with old.engine.begin() as conn:  # nor a later index or column
        for index in migrate.LATER_INDEXES:
            conn.execute(sa.text(f"DROP INDEX {index}"))
        for table, column in migrate.LATER_COLUMNS:
            conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    old.apply_change(change(1))
    old.dispose()
    outcome = migrate.run(empty_url)
    assert (outcome.before, outcome.after, outcome.adopted) == (None, migrate.head(), True)
    assert differences(empty_url) == []
    records = Records(empty_url)
    assert len(records.audit_trail("relationship/p-1/c-1")) == 1
    records.dispose()


def test_the_upgrade_links_indirect_resellers_customers_to_their_provider(empty_url: str) -> None:
    """Customers listed before two tiers were recorded: 0004 links each indirect reseller's to
    its provider, as the registry says, so the provider's list shows them at once."""
    from alembic import command

    command.upgrade(migrate.alembic_config(empty_url), "0003")
    engine = sa.create_engine(empty_url, poolclass=sa.pool.NullPool)
    partners = "INSERT INTO partners (cloud, partner_id, name, kind, indirect_provider_id, updated_at) VALUES "
    customer = (
        "INSERT INTO customers (cloud, partner_id, customer_id, workflow_id, purchase_permission, reinstated_count,"
        " company, state, created_at, updated_at, version, last_change_id) VALUES"
        " ('public', :p, :c, :w, false, 0, 'X', 'active', :now, :now, 1, :w)"
    )
    with engine.begin() as conn:
        conn.execute(
            sa.text(partners + "('public', 'r-1', 'Tailspin', 'indirect_reseller', 'dist-1', :now),"
                    " ('public', 'p-1', 'Fabrikam', 'direct', NULL, :now)"),
            {"now": NOW},
        )  # fmt: skip
        for p, c in (("r-1", "c-1"), ("p-1", "c-2")):
            conn.execute(sa.text(customer), {"p": p, "c": c, "w": f"relationship/{p}/{c}", "now": NOW})
    engine.dispose()
    migrate.run(empty_url)
    records = Records(empty_url)
    assert [(r["partner_id"], r["customer_id"]) for r in records.customer_list("public", "dist-1")] == [("r-1", "c-1")]
    assert records.customer("public", "p-1", "c-2")["indirect_provider_id"] is None  # type: ignore[index]
    records.dispose()


def test_the_command_migrates_the_configured_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m partnerflow.runtime.migrate` without a URL migrates `records.url` and says so."""
    monkeypatch.setenv("PARTNERFLOW_RECORDS__URL", f"sqlite:///{tmp_path / 'nested' / 'records.db'}")
    assert migrate.main([]) == 0
    assert capsys.readouterr().out.strip().endswith(f"upgraded empty database → {migrate.head()}")
    assert differences(f"sqlite:///{tmp_path / 'nested' / 'records.db'}") == []


# --- (b) Records on both databases ---------------------------------------------------------
def test_a_change_applied_twice_is_one_audit_row(records: Records) -> None:
    """The same change_id applied twice writes one audit row and bumps the version once."""
    assert records.apply_change(change(1)) is True
    assert records.apply_change(change(1)) is False, ROWCOUNT.format("the retried change was applied again")
    assert len(records.audit_trail("relationship/p-1/c-1")) == 1
    row = records.customer("public", "p-1", "c-1")
    assert row is not None and (row["version"], row["state"]) == (1, "invited")


def test_a_first_change_without_a_column_gets_its_default(records: Records) -> None:
    """A column the change does not set takes its declared default, as SQLAlchemy fills it in
    (the records' compiled statements, activities/prepared.py, must do the same)."""
    assert records.apply_change(change(1, fields={})) is True
    row = records.customer("public", "p-1", "c-1")
    assert row is not None and (row["purchase_permission"], row["reinstated_count"]) == (False, 0)


def test_a_database_error_is_sqlalchemys_and_shows_no_values(empty_url: str) -> None:
    """What the CLI and the activities catch (`SQLAlchemyError`), whichever path ran the SQL; a
    value (an address, a name) never lands in the message."""
    unmigrated = Records(empty_url)
    try:
        with pytest.raises(sa.exc.DBAPIError) as raised:
            unmigrated.partner("public", "p-secret-partner")
        with pytest.raises(sa.exc.DBAPIError):
            unmigrated.apply_change(change(1, company="Secret Company"))
    finally:
        unmigrated.dispose()
    assert "p-secret-partner" not in str(raised.value)


def test_each_change_bumps_the_version_and_lists_per_cloud(records: Records) -> None:
    """Three changes make version 3 with the last state; the customer list is kept per cloud and partner."""
    records.apply_change(change(1))
    records.apply_change(change(2, "active", operation="AddCustomer", from_state="invited"))
    records.apply_change(
        change(
            3, "active", operation="CreateSelfServePolicy", fields={"purchase_permission": True, "reinstated_count": 0}
        )
    )
    records.apply_change(change(1, customer_id="c-2", cloud="usgov"))
    row = records.customer("public", "p-1", "c-1")
    assert row is not None
    assert (row["version"], row["state"], row["purchase_permission"]) == (3, "active", True)
    assert row["last_change_id"] == "relationship/p-1/c-1/run/3"
    assert [r["operation"] for r in records.audit_trail("relationship/p-1/c-1")] == [
        "CreateCustomerInvitation",
        "AddCustomer",
        "CreateSelfServePolicy",
    ]
    assert [r["customer_id"] for r in records.customer_list("public", "p-1")] == ["c-1"]
    assert [r["customer_id"] for r in records.customer_list("usgov", "p-1")] == ["c-2"]
    assert records.customer_list("public", "p-2") == []


def test_subscriptions_are_set_and_counted_per_cloud(records: Records) -> None:
    """Setting the count twice keeps the last one, per cloud, partner and customer; negatives are refused."""
    records.set_active_subscriptions("public", "p-1", "c-1", 3, now=NOW)
    records.set_active_subscriptions("public", "p-1", "c-1", 5, now=NOW + timedelta(hours=1))
    assert records.active_subscriptions("public", "p-1", "c-1").count == 5
    assert records.active_subscriptions("usgov", "p-1", "c-1").count == 0
    with pytest.raises(ValueError):
        records.set_active_subscriptions("public", "p-1", "c-1", -1, now=NOW)
    assert records.active_subscriptions("public", "p-1", "c-1").count == 5


def test_the_outbox_is_claimed_until_sent_then_never_again(records: Records) -> None:
    """`outbox_reserve` claims a pending row (counting attempts) and returns None once it is sent."""
    entry = OutboxEntry(
        key="relationship/p-1/c-1/run/1/invitation",
        message_id="<1@partnerflow>",
        kind="invitation",
        recipient="admin@contoso.example",
        subject="Fabrikam invites Contoso",
        workflow_id="relationship/p-1/c-1",
        token_sha256="a" * 64,
        status="pending",
        attempts=0,
    )
    assert records.outbox_reserve(entry, now=NOW) == entry
    assert records.outbox_reserve(entry.model_copy(update={"token_sha256": "b" * 64}), now=NOW) is not None
    pending = records.outbox_entry(entry.key)
    assert pending is not None and (pending.status, pending.attempts, pending.token_sha256) == ("pending", 2, "b" * 64)
    records.outbox_mark_sent(entry.key, now=NOW)
    assert records.outbox_reserve(entry, now=NOW) is None, ROWCOUNT.format("a sent email was claimed again")
    sent = records.outbox_entry(entry.key)
    assert sent is not None and (sent.status, sent.attempts, sent.token_sha256) == ("sent", 2, "b" * 64)
    assert [e.key for e in records.outbox_for("relationship/p-1/c-1")] == [entry.key]


# --- (c) concurrency: no lost update, no refused change -------------------------------------
def test_concurrent_changes_to_one_customer_lose_nothing(records: Records) -> None:
    """8 threads × 50 distinct changes to the same customer row end at version 400 with 400 audit rows."""

    def writer(thread: int) -> Callable[[], None]:
        def job() -> None:
            for i in range(PER_THREAD):
                records.apply_change(change(f"{thread}-{i}", at=NOW + timedelta(seconds=thread * PER_THREAD + i)))

        return job

    errors = run_concurrently(*(writer(t) for t in range(THREADS)))
    assert not errors, RACE.format("apply_change", errors[:3])
    row = records.customer("public", "p-1", "c-1")
    assert row is not None and row["version"] == THREADS * PER_THREAD
    assert len(records.audit_trail("relationship/p-1/c-1")) == THREADS * PER_THREAD


FIRST_WRITES: dict[str, Callable[[Records, str], object]] = {
    "customers": lambda records, seq: records.apply_change(change(seq)),
    "subscriptions": lambda records, seq: records.set_active_subscriptions("public", "p-1", "c-1", len(seq), now=NOW),
}


@pytest.mark.parametrize("table", sorted(FIRST_WRITES))
def test_two_first_writes_for_one_key_both_land(pg_records: Records, table: str) -> None:
    """On PostgreSQL, two first writes for one customer, held until both found no row to update, both land."""
    both_looked = threading.Barrier(2, timeout=10)

    @sa.event.listens_for(pg_records.engine, "after_cursor_execute")
    def hold(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        # The worst interleaving, made certain: each waits until the other also saw no row to update.
        if statement.lstrip().upper().startswith(f"UPDATE {table.upper()}") and cursor.rowcount == 0:
            with contextlib.suppress(threading.BrokenBarrierError):  # only one writer got here: nothing to hold
                both_looked.wait()

    write = FIRST_WRITES[table]
    errors = run_concurrently(lambda: write(pg_records, "a"), lambda: write(pg_records, "bb"))
    sa.event.remove(pg_records.engine, "after_cursor_execute", hold)
    method = "apply_change" if table == "customers" else "set_active_subscriptions"
    assert not errors, RACE.format(method, errors)
    if table == "customers":
        row = pg_records.customer("public", "p-1", "c-1")
        assert row is not None and row["version"] == 2
        assert len(pg_records.audit_trail("relationship/p-1/c-1")) == 2
    else:
        assert pg_records.active_subscriptions("public", "p-1", "c-1").count in (1, 2)
