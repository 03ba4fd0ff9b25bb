"""Bring a records database to the newest schema with Alembic, driven from code (no alembic.ini).

    python -m partnerflow.runtime.migrate            # the configured records database (temporal-dev.yml, env)
    python -m partnerflow.runtime.migrate URL        # any SQLAlchemy URL, e.g. postgresql+psycopg://…

The scripts are in `partnerflow/migrations/` (installed with the package). A database made before migrations
existed (by `Records.create_schema()`) is adopted: if its tables match revision 0001
exactly, it is stamped 0001 and then upgraded like any other.
"""

from __future__ import annotations

import contextlib
import fcntl
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from partnerflow.activities.records import metadata
from partnerflow.runtime.config import ConfigError, load

MIGRATIONS = Path(__file__).resolve().parent / "migrations"  # shipped inside the package
BASELINE = "0001"  # the revision that creates exactly what `create_schema()` used to create
LATER_TABLES = frozenset(
    {"entities", "partners", "proofs_used", "event_log", "webhooks", "webhook_deliveries", "letter_queue"}
)  # added by revisions after BASELINE
LATER_COLUMNS = frozenset(
    {
        ("customers", "admin_email"),
        ("customers", "indirect_provider_id"),
        ("customers", "suspension_reason"),
        ("customers", "admin_request"),
        ("subscriptions", "detail"),
    }
)
LATER_INDEXES = frozenset({"ix_customers_provider"})
_LOCK_ID = 0x7061_7274_6E65_72  # "partner": one migrator at a time on PostgreSQL


@dataclass(frozen=True)
class Outcome:
    url: str  # password hidden
    before: str | None
    after: str | None
    adopted: bool  # tables from create_schema() found and stamped BASELINE first

    def describe(self) -> str:
        if self.adopted:
            done = f"records {self.url}: adopted its tables (made without migrations) as {BASELINE}"
            return done + ("" if self.after == BASELINE else f", upgraded → {self.after}")
        if self.before == self.after:
            return f"records {self.url}: already at {self.after}, nothing to do"
        return f"records {self.url}: upgraded {self.before or 'empty database'} → {self.after}"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ConfigParser interpolation
    return cfg


def head() -> str:
    """The newest revision shipped: where `upgrade` leaves every database."""
    found = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert found is not None
    return found


def current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _engine(url: str) -> sa.Engine:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def _adopt(conn: Connection, cfg: Config) -> bool:
    """Stamp BASELINE on a database whose tables `create_schema()` made; refuse one that differs."""
    ours = set(metadata.tables) - LATER_TABLES
    present = set(sa.inspect(conn).get_table_names()) & ours
    if not present:
        return False
    if present != ours:
        raise RuntimeError(f"records tables {sorted(present)} exist without migration history, others are missing")
    differences = [
        d
        for d in compare_metadata(MigrationContext.configure(conn), metadata)
        if not (d[0] == "add_table" and d[1].name in LATER_TABLES)
        and not (d[0] == "add_index" and (d[1].table.name in LATER_TABLES or d[1].name in LATER_INDEXES))
        and not (d[0] == "add_column" and (d[2], d[3].name) in LATER_COLUMNS)
    ]
    if differences:
        raise RuntimeError(f"records tables exist without migration history and differ from {BASELINE}: {differences}")
    command.stamp(cfg, BASELINE)
    return True


@contextlib.contextmanager
def _one_migrator(url: str) -> Iterator[None]:
    """Two workers starting at once must not both migrate one SQLite file (PostgreSQL
    uses an advisory lock inside the transaction instead)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        yield
        return
    lock_path = Path(parsed.database + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run(url: str) -> Outcome:
    """Upgrade the database at `url` to head, in one transaction where the database allows it."""
    with _one_migrator(url):
        return _run(url)


def _run(url: str) -> Outcome:
    cfg = alembic_config(url)
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_ID)))
            cfg.attributes["connection"] = conn
            before = current(conn)
            adopted = before is None and _adopt(conn, cfg)
            command.upgrade(cfg, "head")
            after = current(conn)
    finally:
        engine.dispose()
    return Outcome(sa.engine.make_url(url).render_as_string(hide_password=True), before, after, adopted)


def upgrade(url: str) -> None:
    """`alembic upgrade head` on the database at `url`."""
    run(url)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or any(a in ("-h", "--help") for a in args):
        print("usage: python -m partnerflow.runtime.migrate [SQLALCHEMY_URL]", file=sys.stderr)
        return 2
    try:
        url = args[0] if args else load().records_url
    except ConfigError as error:
        print(f"configuration: {error}", file=sys.stderr)
        return 2
    print(run(url).describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
