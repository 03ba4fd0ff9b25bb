"""The partner's system of record: customer list, audit trail, outbox, subscriptions.

SQLAlchemy Core, so SQLite (the default) and PostgreSQL share one code path.
Every write is idempotent: an activity retried after a crash finds its own
earlier write (by `change_id` or outbox key) and does nothing twice.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from partnerflow.activities.prepared import Prepared
from partnerflow.states.messages import Change, Counted
from partnerflow.states.models import STRICT, Partner, State, SubscriptionKind, workflow_id

metadata = sa.MetaData()


def _current_rows(name: str, *columns: sa.Column[Any]) -> sa.Table:
    """A table of lifecycles' current rows: its own columns, then what every such row has
    (company, state, and the bookkeeping `apply_change` keeps: when, which version, which change)."""
    return sa.Table(
        name,
        metadata,
        *columns,
        sa.Column("company", sa.String(200), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_change_id", sa.String(250), nullable=False),
    )


#: The relationship lifecycle's list: one row per cloud, partner and customer.
customers = _current_rows(
    "customers",
    sa.Column("cloud", sa.String(16), primary_key=True),
    sa.Column("partner_id", sa.String(100), primary_key=True),
    sa.Column("customer_id", sa.String(100), primary_key=True),
    sa.Column("workflow_id", sa.String(250), nullable=False),
    sa.Column("purchase_permission", sa.Boolean, nullable=False, default=False),
    sa.Column("reinstated_count", sa.Integer, nullable=False, default=0),
    sa.Column("admin_email", sa.String(254), nullable=True),  # where the invitation went
    # Two-tier: an indirect reseller's provider, whose customer list shows the customer too.
    sa.Column("indirect_provider_id", sa.String(100), nullable=True),
    sa.Column("suspension_reason", sa.String(32), nullable=True),  # while suspended
    sa.Column("admin_request", sa.String(64), nullable=True),  # a delegated admin request the invitation carried
)
sa.Index("ix_customers_provider", customers.c.cloud, customers.c.indirect_provider_id)

#: The partner registry: every partner fact a lifecycle uses comes from here.
partners = sa.Table(
    "partners",
    metadata,
    sa.Column("cloud", sa.String(16), primary_key=True),
    sa.Column("partner_id", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("indirect_provider_id", sa.String(100), nullable=True),
    sa.Column("contact_email", sa.String(254), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("locale", sa.String(16), nullable=True),  # the language of its notices
)

#: Assertions that started a lifecycle, by id: each starts one run, once.
proofs_used = sa.Table(
    "proofs_used",
    metadata,
    sa.Column("jti", sa.String(200), primary_key=True),
    sa.Column("issuer", sa.String(200), nullable=False),
    sa.Column("workflow_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("change_id", sa.String(250), nullable=False, unique=True),
    sa.Column("cloud", sa.String(16), nullable=False),
    sa.Column("partner_id", sa.String(100), nullable=False),
    sa.Column("customer_id", sa.String(100), nullable=False),
    sa.Column("workflow_id", sa.String(250), nullable=False, index=True),
    sa.Column("operation", sa.String(64), nullable=False),
    sa.Column("actor_user", sa.String(254), nullable=False),
    sa.Column("actor_role", sa.String(32), nullable=False),
    sa.Column("from_state", sa.String(32), nullable=True),
    sa.Column("to_state", sa.String(32), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("correlation_id", sa.String(250), nullable=False),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("key", sa.String(250), primary_key=True),
    sa.Column("message_id", sa.String(250), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("recipient", sa.String(254), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("workflow_id", sa.String(250), nullable=False, index=True),
    sa.Column("token_sha256", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # pending | sent
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
)

#: The current row of a lifecycle that keeps no list of its own: keyed by its workflow id.
entities = _current_rows(
    "entities",
    sa.Column("workflow_id", sa.String(250), primary_key=True),
    sa.Column("cloud", sa.String(16), nullable=False),
    sa.Column("partner_id", sa.String(100), nullable=False, index=True),
    sa.Column("customer_id", sa.String(100), nullable=False),
    sa.Column("fields", sa.JSON, nullable=False),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("cloud", sa.String(16), primary_key=True),
    sa.Column("partner_id", sa.String(100), primary_key=True),
    sa.Column("customer_id", sa.String(100), primary_key=True),
    sa.Column("active", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("detail", sa.JSON, nullable=True),  # {what: how many}, as the billing feed says
)


#: The event log: every change's event, written in the change's own transaction, so none is
#: ever only in flight. `seq` is the consumers' cursor (partnerflow/events.py).
event_log = sa.Table(
    "event_log",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(250), nullable=False, unique=True),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("lifecycle", sa.String(32), nullable=False),
    sa.Column("cloud", sa.String(16), nullable=False),
    sa.Column("partner_id", sa.String(100), nullable=False),
    sa.Column("provider_id", sa.String(100), nullable=True),  # an indirect reseller's provider sees it too
    sa.Column("subject", sa.String(250), nullable=False),  # the lifecycle's workflow id
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
)
sa.Index("ix_event_log_partner", event_log.c.cloud, event_log.c.partner_id, event_log.c.seq)
sa.Index("ix_event_log_provider", event_log.c.cloud, event_log.c.provider_id, event_log.c.seq)

#: Webhook subscriptions: a partner's receiver, the events it wants, the secrets it verifies with.
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("webhook_id", sa.String(64), primary_key=True),
    sa.Column("cloud", sa.String(16), nullable=False),
    sa.Column("partner_id", sa.String(100), nullable=False, index=True),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("types", sa.JSON, nullable=False),  # patterns, e.g. ["reseller-relationship-*"]
    sa.Column("secret", sa.String(200), nullable=False),
    sa.Column("previous_secret", sa.String(200), nullable=True),  # still signed with, during a rotation
    sa.Column("after_seq", sa.BigInteger, nullable=False),  # it receives the events after this one
    sa.Column("status", sa.String(16), nullable=False),  # subscribed | removed
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

#: Each event's delivery to each webhook: delivered, or dead after the retry window (dead letters).
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("webhook_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("event_id", sa.String(250), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # delivered | dead
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.String(200), nullable=True),  # an HTTP status or an error's class, never a body
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lag_ms", sa.BigInteger, nullable=True),  # from the change to its delivery
)


#: The letters a change queued in its own transaction (`Change.letters`), until the worker's
#: relay (activities/relay.py) has sent them: the change and its letters are durable together,
#: and the answer to the change waits for no mail server. Sent, a row goes (the outbox keeps
#: what was sent); `due_at` is the next attempt, or the end of a relay's claim.
letter_queue = sa.Table(
    "letter_queue",
    metadata,
    sa.Column("key", sa.String(250), primary_key=True),  # the letter's outbox key
    sa.Column("cloud", sa.String(16), nullable=False),
    sa.Column("workflow_id", sa.String(250), nullable=False, index=True),
    sa.Column("letter", sa.JSON, nullable=False),  # the SendLetter, as the workflow made it
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_error", sa.String(200), nullable=True),  # an error's class, never its text
)
sa.Index("ix_letter_queue_due", letter_queue.c.cloud, letter_queue.c.due_at)


class OutboxEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    message_id: str
    kind: str
    recipient: str
    subject: str
    workflow_id: str
    token_sha256: str | None
    status: str
    attempts: int


class QueuedLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    attempts: int
    letter: dict[str, Any]


class Records:
    """The records database. Thread-safe: activities call it from a thread pool."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine: Engine = _engine(url, echo)
        # SQLite has one writer at a time; a writer that finds it busy sleeps and tries again
        # (busy_timeout), and under load one can lose the race for seconds. This process's
        # writers queue on a lock instead, and take their turn the moment it is free.
        self._writing: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        self._statements: dict[Hashable, Prepared] = {}

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._writing, self.engine.begin() as conn:
            yield conn

    def _insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which has ON CONFLICT (PostgreSQL and SQLite alike)."""
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(table)
        if dialect == "sqlite":
            return sqlite.insert(table)
        raise RuntimeError(f"unsupported records database: {dialect}")

    def _insert_ignoring_duplicates(self, table: sa.Table) -> Any:
        # `.rowcount` then says whether the row was new. SQLAlchemy keeps an INSERT's rowcount only
        # when asked: without this, psycopg reports -1 (truthy) and a duplicate looks inserted.
        return self._insert(table).on_conflict_do_nothing().execution_options(preserve_rowcount=True)

    # --- changes: audit trail + customer list, in one transaction ----------------
    def _prepared(self, key: Hashable, build: Callable[[], sa.sql.ClauseElement]) -> Prepared:
        """The statement `key` for this database, built and compiled on first use (a hot path's:
        see activities/prepared.py). Two threads may both compile it once; either serves."""
        found = self._statements.get(key)
        if found is None:
            found = self._statements[key] = Prepared(build(), self.engine.dialect)
        return found

    def apply_change(self, change: Change, promised: Sequence[OutboxEntry] = ()) -> bool:
        """Record `change` once; False if it was already recorded (a retry). `promised`: the
        outbox rows (pending, with the token's hash) of the link letters it queues, so whichever
        relay sends one, and whatever retries, the hash the workflow holds is the one kept."""
        with self._tx() as conn:
            audit_row = self._prepared(
                "audit", lambda: self._insert(audit).values(_binds(AUDIT_COLUMNS)).on_conflict_do_nothing()
            )
            values = {name: getattr(change, name) for name in AUDIT_COLUMNS if name != "correlation_id"}
            if not audit_row.execute(conn, {**values, "correlation_id": change.change_id}):
                return False
            row = self._upsert_current(conn, change)
            if change.event:
                assert row is not None
                self._log_event(conn, change, row)
            if change.voids_link or any(letter.token for letter in change.letters):
                # A link not yet mailed, now replaced or ended: it would only mislead its reader.
                links = self._prepared(
                    "unsent_links",
                    lambda: sa.delete(letter_queue).where(
                        (letter_queue.c.workflow_id == sa.bindparam("workflow_id"))
                        & letter_queue.c.letter["token"].as_boolean()
                    ),
                )
                links.execute(conn, {"workflow_id": change.workflow_id})
            now = utc_now()  # the records' clock: the change's may be a test's, far ahead
            if change.letters:
                queue = self._prepared(
                    "queue",
                    lambda: self._insert(letter_queue).values(_binds(QUEUE_COLUMNS)).on_conflict_do_nothing(),
                )
                queue.execute_many(
                    conn,
                    [
                        {
                            "key": letter.key,
                            "cloud": change.cloud,
                            "workflow_id": change.workflow_id,
                            "letter": letter.model_dump(mode="json"),
                            "attempts": 0,
                            "due_at": now + timedelta(microseconds=i),  # the relay sends them in this order
                        }
                        for i, letter in enumerate(change.letters)
                    ],
                )
            if promised:
                pending = self._prepared(
                    "promise",
                    lambda: self._insert(outbox).values(_binds(OUTBOX_NEW)).on_conflict_do_nothing(),
                )
                for entry in promised:
                    values = entry.model_dump(exclude={"status", "attempts"})
                    pending.execute(
                        conn, {**values, "status": "pending", "attempts": 0, "created_at": now, "sent_at": None}
                    )
            return True

    def _log_event(self, conn: Connection, change: Change, row: Mapping[str, Any]) -> None:
        """The change's event, from the row it left: what changed, who did it, and the record."""
        record = {k: _jsonable(v) for k, v in row.items() if k not in INTERNAL_COLUMNS}
        provider = change.fields.get("indirect_provider_id")
        insert = self._prepared("event", lambda: event_log.insert().values(_binds(EVENT_COLUMNS)))
        insert.execute(
            conn,
            dict(
                event_id=change.change_id,
                type=change.event,
                lifecycle=change.lifecycle,
                cloud=change.cloud,
                partner_id=change.partner_id,
                provider_id=str(provider) if provider else None,
                subject=change.workflow_id,
                time=change.at,
                data={
                    "schema_version": EVENT_SCHEMA_VERSION,
                    "lifecycle": change.lifecycle,
                    "operation": change.operation,
                    "before_state": change.from_state,
                    "after_state": change.to_state,
                    "actor": {"user": change.actor_user, "role": change.actor_role},
                    "reason": change.reason,
                    "sequence": int(row["version"]),
                    "record": record,
                },
            ),
        )

    # --- the event log and its webhooks --------------------------------------------------
    def events_after(
        self, cloud: str, partner_id: str, after: int = 0, limit: int = 100, upto: int | None = None
    ) -> list[dict[str, Any]]:
        """A partner's events after the cursor `after`, oldest first (an indirect provider's
        include its resellers'): the replay a consumer asks for, and a webhook's next batch."""
        mine = (event_log.c.partner_id == partner_id) | (event_log.c.provider_id == partner_id)
        query = sa.select(event_log).where((event_log.c.cloud == cloud) & mine & (event_log.c.seq > after))
        if upto is not None:
            query = query.where(event_log.c.seq <= upto)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(event_log.c.seq).limit(limit)).mappings().all()
        return [dict(r) for r in rows]

    def last_event_seq(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(event_log.c.seq), 0))).scalar_one())

    def event(self, event_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(event_log).where(event_log.c.event_id == event_id)).mappings().first()
        return dict(found) if found else None

    def put_webhook(self, values: Mapping[str, Any]) -> None:
        with self._tx() as conn:
            conn.execute(self._insert(webhooks).values(**values))

    def update_webhook(self, webhook_id: str, **values: Any) -> bool:
        with self._tx() as conn:
            return bool(
                conn.execute(webhooks.update().where(webhooks.c.webhook_id == webhook_id).values(**values)).rowcount
            )

    def webhook(self, webhook_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(webhooks).where(webhooks.c.webhook_id == webhook_id)).mappings().first()
        return dict(found) if found else None

    def webhooks_of(self, cloud: str, partner_id: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(webhooks).where((webhooks.c.cloud == cloud) & (webhooks.c.status == "subscribed"))
        if partner_id is not None:
            query = query.where(webhooks.c.partner_id == partner_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query.order_by(webhooks.c.webhook_id)).mappings()]

    def record_delivery(self, values: Mapping[str, Any]) -> None:
        """Delivered or dead, once per webhook and event (a retried activity writes it again)."""
        keys = [webhook_deliveries.c.webhook_id, webhook_deliveries.c.seq]
        with self._tx() as conn:
            conn.execute(
                self._insert(webhook_deliveries)
                .values(**values)
                .on_conflict_do_update(index_elements=keys, set_=dict(values))
            )

    def deliveries(self, webhook_id: str, status: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        query = sa.select(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id)
        if status is not None:
            query = query.where(webhook_deliveries.c.status == status)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(webhook_deliveries.c.seq).limit(limit)).mappings()
            return [dict(r) for r in rows]

    def _upsert_current(self, conn: Connection, change: Change) -> Mapping[str, Any] | None:
        """The lifecycle's current row, in its declared table. One statement, so two first
        changes of one lifecycle cannot both insert (a lost change); it returns the row as the
        change left it when the change has an event to log."""
        table = metadata.tables.get(change.table)
        if table is None or table.name not in ROW_TABLES:
            raise ValueError(f"table: {change.table} is not a lifecycle's table ({', '.join(ROW_TABLES)})")
        row: dict[str, Any] = dict(
            workflow_id=change.workflow_id,
            cloud=change.cloud,
            partner_id=change.partner_id,
            customer_id=change.customer_id,
            company=change.company,
            state=change.to_state,
            updated_at=change.at,
            last_change_id=change.change_id,
        )
        if table is entities:
            row["fields"] = dict(change.fields)
        else:
            unknown = sorted(set(change.fields) - set(table.c.keys()))
            if unknown:
                raise ValueError(f"fields: {', '.join(unknown)} are not columns of {table.name}")
            row.update(change.fields)
        names = tuple(row)
        returns = bool(change.event)

        def build() -> Any:  # the dialect's INSERT (`_insert`)
            keys = [c for c in table.primary_key.columns]
            upsert = (
                self._insert(table)
                .values(created_at=sa.bindparam("created_at"), version=1, **_binds(names))
                .on_conflict_do_update(index_elements=keys, set_=dict(version=table.c.version + 1, **_binds(names)))
            )
            return upsert.returning(*table.c) if returns else upsert

        upsert = self._prepared(("upsert", table.name, names, returns), build)
        values = {**row, "created_at": change.at}
        if not returns:
            upsert.execute(conn, values)
            return None
        [found] = upsert.rows(conn, values)
        return found

    def current(self, table: str, workflow_id: str) -> dict[str, Any] | None:
        t = metadata.tables[table]
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(t).where(t.c.workflow_id == workflow_id)).mappings().first()
            return dict(found) if found else None

    def customer(self, cloud: str, partner_id: str, customer_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            found = (
                conn.execute(
                    sa.select(customers).where(
                        (customers.c.cloud == cloud)
                        & (customers.c.partner_id == partner_id)
                        & (customers.c.customer_id == customer_id)
                    )
                )
                .mappings()
                .first()
            )
            return dict(found) if found else None

    def customer_list(self, cloud: str, partner_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(customers)
                .where((customers.c.cloud == cloud) & _of_partner(partner_id))
                .order_by(customers.c.customer_id)
            ).mappings()
            return [dict(r) for r in rows]

    def customer_export(
        self, cloud: str, columns: Sequence[str], partner_id: str | None = None
    ) -> list[dict[str, Any]]:
        """`columns` of the customer list of every partner in `cloud` (or of one), in a stable order."""
        query = sa.select(*(customers.c[name] for name in columns)).where(customers.c.cloud == cloud)
        if partner_id is not None:
            query = query.where(_of_partner(partner_id))
        query = query.order_by(customers.c.partner_id, customers.c.customer_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def audit_trail(self, workflow_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(audit).where(audit.c.workflow_id == workflow_id).order_by(audit.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    # --- erasure (a data-protection request) ---------------------------------------------
    def runs_of(self, cloud: str, workflow_id: str) -> set[str]:
        """The runs of a lifecycle in one cloud, as its audit knows them (`<workflow id>/<run id>/<seq>`)."""
        with self.engine.connect() as conn:
            ids = conn.execute(
                sa.select(audit.c.change_id).where(
                    (audit.c.cloud == cloud) & (audit.c.workflow_id == workflow_id) & (audit.c.operation != ERASE)
                )
            ).scalars()
            return {change_id[len(workflow_id) + 1 :].split("/")[0] for change_id in ids}

    @staticmethod
    def _outbox_of(workflow_id: str, runs: set[str]) -> Any:
        """A lifecycle's emails in one cloud: their keys begin with one of its runs there (a
        workflow id alone would also match the other cloud's relationship of the same ids)."""
        keys = (outbox.c.key.startswith(f"{workflow_id}/{run}/", autoescape=True) for run in sorted(runs))
        return sa.or_(*keys, sa.false())

    def outbox_message_ids(self, cloud: str, workflow_id: str) -> set[str]:
        emails = self._outbox_of(workflow_id, self.runs_of(cloud, workflow_id))
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(outbox.c.message_id).where(emails))
            return {str(m) for m in found.scalars()}

    def erase_customer(self, cloud: str, partner_id: str, customer_id: str, *, now: datetime) -> dict[str, int]:
        """One customer's personal data, gone from the records in one transaction: the company's
        name and the admin's address in the list, who acted and why in the audit, the address and
        subject of every email. What happened, when and in which role stays; one audit row says
        the data was erased (once per run erased: running it again adds none). Answers how many
        rows of each table were changed."""
        wid = workflow_id(partner_id, customer_id)
        runs = self.runs_of(cloud, wid)
        emails = self._outbox_of(wid, runs)
        mark = f"{wid}/erased/{cloud}/{max(runs, default='-')}"
        with self._tx() as conn:
            listed = conn.execute(
                customers.update()
                .where(_of_customer(customers, cloud, partner_id, customer_id))
                .values(company=ERASED, admin_email=None, updated_at=now)
            ).rowcount
            trail = conn.execute(
                audit.update()
                .where((audit.c.cloud == cloud) & (audit.c.workflow_id == wid))
                .values(actor_user=ERASED, reason="")
            ).rowcount
            mail = conn.execute(outbox.update().where(emails).values(recipient=ERASED, subject=ERASED)).rowcount
            logged = self._erase_events(conn, cloud, wid)
            # A letter not yet sent is not sent: its reader asked to be forgotten.
            conn.execute(
                sa.delete(letter_queue).where((letter_queue.c.cloud == cloud) & (letter_queue.c.workflow_id == wid))
            )
            conn.execute(
                self._insert(audit)
                .values(
                    change_id=mark,
                    cloud=cloud,
                    partner_id=partner_id,
                    customer_id=customer_id,
                    workflow_id=wid,
                    operation=ERASE,
                    actor_user="operator",
                    actor_role="operator",
                    from_state=None,
                    to_state="erased",
                    at=now,
                    reason="",
                    correlation_id=mark,
                )
                .on_conflict_do_nothing()
            )
        return {"customers": listed, "audit": trail, "outbox": mail, "event_log": logged}

    def _erase_events(self, conn: Connection, cloud: str, wid: str) -> int:
        """The relationship's events keep what happened; who acted, why, and the names go."""
        rows = conn.execute(
            sa.select(event_log.c.seq, event_log.c.data).where(
                (event_log.c.cloud == cloud) & (event_log.c.subject == wid)
            )
        ).all()
        for seq, data in rows:
            record = {**data.get("record", {}), "company": ERASED, "admin_email": None}
            erased = {**data, "actor": {**data.get("actor", {}), "user": ERASED}, "reason": "", "record": record}
            conn.execute(event_log.update().where(event_log.c.seq == seq).values(data=erased))
        return len(rows)

    # --- the partner registry ----------------------------------------------------------
    def put_partner(self, cloud: str, partner: Partner, *, now: datetime) -> bool:
        """Add or change a partner; True if it was new."""
        if not partner.name:
            raise ValueError("name: a registry entry needs the partner's name")
        values = dict(
            name=partner.name,
            kind=partner.kind.value,
            indirect_provider_id=partner.indirect_provider_id,
            contact_email=partner.contact_email,
            locale=partner.locale,
            updated_at=now,
        )
        with self._tx() as conn:
            existed = conn.execute(
                sa.select(partners.c.partner_id).where(
                    (partners.c.cloud == cloud) & (partners.c.partner_id == partner.id)
                )
            ).first()
            conn.execute(
                self._insert(partners)
                .values(cloud=cloud, partner_id=partner.id, **values)
                .on_conflict_do_update(index_elements=[partners.c.cloud, partners.c.partner_id], set_=values)
            )
        return existed is None

    def partner(self, cloud: str, partner_id: str) -> Partner | None:
        one = self._prepared(
            "partner",
            lambda: sa.select(partners).where(
                (partners.c.cloud == sa.bindparam("cloud")) & (partners.c.partner_id == sa.bindparam("partner_id"))
            ),
        )
        with self.engine.connect() as conn:
            found = one.rows(conn, {"cloud": cloud, "partner_id": partner_id})
        return _partner(found[0]) if found else None

    def partner_list(self, cloud: str) -> list[Partner]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(partners).where(partners.c.cloud == cloud).order_by(partners.c.partner_id)
            ).mappings()
            return [_partner(r) for r in rows]

    def use_proof(self, jti: str, issuer: str, workflow_id: str, run_id: str, expires_at: datetime) -> bool:
        """Spend a start's assertion; False if another run already used it (a retry of the same
        run finds its own row: True). Spent ones are forgotten once they expire."""
        forget = self._prepared(
            "proofs_expired",
            lambda: sa.delete(proofs_used).where(
                proofs_used.c.expires_at < sa.bindparam("before", type_=proofs_used.c.expires_at.type)
            ),
        )
        spend = self._prepared(
            "proof",
            lambda: self._insert(proofs_used).values(_binds(c.name for c in proofs_used.c)).on_conflict_do_nothing(),
        )
        owner = self._prepared(
            "proof_owner", lambda: sa.select(proofs_used.c.run_id).where(proofs_used.c.jti == sa.bindparam("jti"))
        )
        with self._tx() as conn:
            forget.execute(conn, {"before": utc_now() - timedelta(hours=1)})
            spend.execute(
                conn, dict(jti=jti, issuer=issuer, workflow_id=workflow_id, run_id=run_id, expires_at=expires_at)
            )
            [found] = owner.rows(conn, {"jti": jti})
        return bool(found["run_id"] == run_id)

    # --- facts a guard may need -------------------------------------------------------
    def facts(self) -> dict[str, Callable[[str, str, str], Counted]]:
        """The named counts a guard may need, each about one customer (the billing feed's)."""
        return {
            "active_subscriptions": self.active_subscriptions,
            "reseller_ended": self.reseller_ended,
            "invitation_answer": self.invitation_answer,
        }

    def fact(self, name: str, cloud: str, partner_id: str, customer_id: str) -> Counted:
        """A named fact about one customer; unknown names are refused."""
        read = self.facts().get(name)
        if read is None:
            raise ValueError(f"fact: {name} is not a fact the records know")
        return read(cloud, partner_id, customer_id)

    # --- subscriptions (fed by billing) ------------------------------------------
    def set_active_subscriptions(
        self,
        cloud: str,
        partner_id: str,
        customer_id: str,
        active: int,
        *,
        now: datetime,
        detail: Mapping[str, int] | None = None,
    ) -> None:
        """`detail`: how many of what (`{"Azure plan": 1}`), adding up to `active`. Its names are
        checked as names are (they end up in a refusal's words)."""
        if active < 0:
            raise ValueError("active subscriptions must be >= 0")
        if detail is not None:
            detail = dict(
                SubscriptionKind.model_validate({"what": w, "count": n}, context=STRICT).pair()
                for w, n in detail.items()
            )
            if sum(detail.values()) != active:
                raise ValueError(f"detail: its counts must add up to the active subscriptions ({active})")
        values = dict(active=active, updated_at=now, detail=dict(detail) if detail else None)
        with self._tx() as conn:
            conn.execute(
                self._insert(subscriptions)
                .values(cloud=cloud, partner_id=partner_id, customer_id=customer_id, **values)
                .on_conflict_do_update(
                    index_elements=[subscriptions.c.cloud, subscriptions.c.partner_id, subscriptions.c.customer_id],
                    set_=values,
                )
            )

    def reseller_ended(self, cloud: str, partner_id: str, customer_id: str) -> Counted:
        """1 when the partner's reseller relationship with the customer has ended, else 0: what a
        cascade from it must find true before it ends anything else (a signal proves nothing)."""
        with self.engine.connect() as conn:
            state = conn.execute(
                sa.select(customers.c.state).where(_of_customer(customers, cloud, partner_id, customer_id))
            ).scalar()
        return Counted(count=int(state == State.ENDED))

    def invitation_answer(self, cloud: str, partner_id: str, customer_id: str) -> Counted:
        """How the customer answered the reseller invitation: 1 accepted (active since), 2 declined,
        0 not (yet); `detail` names the delegated admin request the invitation carried."""
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(customers.c.state, customers.c.admin_request).where(
                    _of_customer(customers, cloud, partner_id, customer_id)
                )
            ).first()
        if found is None or not found.admin_request:
            return Counted(count=0)
        answer = {State.ACTIVE: 1, State.SUSPENDED: 1, State.DECLINED: 2}.get(State(found.state), 0)
        return Counted(count=answer, detail={found.admin_request: 1})

    def open_lifecycles(self, cloud: str, partner_id: str, customer_id: str, prefix: str, final: set[str]) -> list[str]:
        """Workflow ids (starting with `prefix`) of a customer's lifecycles kept in `entities`,
        not in a `final` state."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(entities.c.workflow_id, entities.c.state).where(
                    _of_customer(entities, cloud, partner_id, customer_id)
                    & entities.c.workflow_id.startswith(prefix, autoescape=True)
                )
            ).all()
        return sorted(wid for wid, state in rows if state not in final)

    def active_subscriptions(self, cloud: str, partner_id: str, customer_id: str) -> Counted:
        read = self._prepared(
            "active_subscriptions",
            lambda: sa.select(subscriptions.c.active, subscriptions.c.detail).where(
                _of_customer(subscriptions, *(sa.bindparam(n) for n in ("cloud", "partner_id", "customer_id")))
            ),
        )
        with self.engine.connect() as conn:
            found = read.rows(conn, {"cloud": cloud, "partner_id": partner_id, "customer_id": customer_id})
        if not found:
            return Counted(count=0)
        return Counted(count=int(found[0]["active"]), detail=dict(found[0]["detail"] or {}))

    # --- outbox --------------------------------------------------------------------
    def outbox_entry(self, key: str) -> OutboxEntry | None:
        entry = self._prepared(
            "outbox_entry",
            lambda: sa.select(outbox).where(outbox.c.key == sa.bindparam("key")),
        )
        with self.engine.connect() as conn:
            found = entry.rows(conn, {"key": key})
        return OutboxEntry.model_validate(found[0]) if found else None

    def outbox_reserve(self, entry: OutboxEntry, *, now: datetime) -> OutboxEntry | None:
        """Claim the right to send `entry`: write (or rewrite) its pending row first.

        None means another attempt already sent it: the caller must not send again.
        """
        with self._tx() as conn:
            values = entry.model_dump(exclude={"key", "status", "attempts"})
            claimed = (
                conn.execute(
                    sa.update(outbox)
                    .where((outbox.c.key == entry.key) & (outbox.c.status == "pending"))
                    .values(attempts=outbox.c.attempts + 1, **values)
                ).rowcount
                or conn.execute(
                    self._insert_ignoring_duplicates(outbox).values(
                        key=entry.key, status="pending", attempts=1, created_at=now, **values
                    )
                ).rowcount
            )
        return entry if claimed else None

    def outbox_sent_from_queue(self, entry: OutboxEntry, *, now: datetime) -> None:
        """A queued letter the server took: its outbox row (sent) and its queued row gone, at once."""

        def build() -> Any:  # the dialect's INSERT (`_insert`)
            # A link's row, promised with its change: now with what was sent.
            sent = _binds(name for name in OUTBOX_NEW if name not in ("key", "attempts", "created_at"))
            return (
                self._insert(outbox)
                .values(_binds(OUTBOX_NEW))
                .on_conflict_do_update(index_elements=[outbox.c.key], set_=sent)
            )

        with self._tx() as conn:
            values = entry.model_dump(exclude={"status", "attempts"})
            self._prepared("sent_from_queue", build).execute(
                conn, {**values, "status": "sent", "attempts": 1, "created_at": now, "sent_at": now}
            )
            self._letter_gone(conn, entry.key)

    def outbox_mark_sent(self, key: str, *, now: datetime) -> None:
        with self._tx() as conn:
            conn.execute(sa.update(outbox).where(outbox.c.key == key).values(status="sent", sent_at=now))

    # --- the letters changes queued (activities/relay.py) ----------------------------
    def letters_claim(self, cloud: str | None, now: datetime, *, until: datetime, limit: int) -> list[QueuedLetter]:
        """The queued letters whose time has come (never sent, failed before, or claimed by a
        relay that died), oldest first, now this relay's until `until`: one statement, so two
        relays never claim the same letter (PostgreSQL re-checks `due_at` on the locked row)."""

        def build() -> sa.sql.ClauseElement:
            due = letter_queue.c.due_at <= sa.bindparam("now", type_=letter_queue.c.due_at.type)
            if cloud is not None:
                due &= letter_queue.c.cloud == sa.bindparam("cloud")
            keys = (
                sa.select(letter_queue.c.key)
                .where(due)
                .order_by(letter_queue.c.due_at)
                .limit(sa.bindparam("limit", type_=sa.Integer, literal_execute=False))
            )
            return (
                sa.update(letter_queue)
                .where(letter_queue.c.key.in_(keys) & (letter_queue.c.due_at <= sa.bindparam("now")))
                .values(
                    attempts=letter_queue.c.attempts + 1, due_at=sa.bindparam("until", type_=letter_queue.c.due_at.type)
                )
                .returning(letter_queue.c.key, letter_queue.c.attempts, letter_queue.c.letter)
            )

        claim = self._prepared(("claim", cloud is None), build)
        with self._tx() as conn:
            rows = claim.rows(conn, {"now": now, "until": until, "limit": limit, "cloud": cloud})
        return [QueuedLetter.model_validate(row) for row in rows]

    def letter_sent(self, key: str) -> None:
        with self._tx() as conn:
            self._letter_gone(conn, key)

    def _letter_gone(self, conn: Connection, key: str) -> None:
        gone = self._prepared(
            "letter_gone",
            lambda: sa.delete(letter_queue).where(letter_queue.c.key == sa.bindparam("key")),
        )
        gone.execute(conn, {"key": key})

    def letters_behind(self, keys: Sequence[str], due_at: datetime) -> None:
        """Letters that wait behind one that failed (the same lifecycle's, later): due just after
        it, in their order, so its reader never gets "ended" before "accepted"."""
        with self._tx() as conn:
            for i, key in enumerate(keys, start=1):
                conn.execute(
                    sa.update(letter_queue)
                    .where(letter_queue.c.key == key)
                    .values(due_at=due_at + timedelta(microseconds=i))
                )

    def letter_later(self, key: str, *, due_at: datetime, error: str) -> None:
        with self._tx() as conn:
            conn.execute(
                sa.update(letter_queue).where(letter_queue.c.key == key).values(due_at=due_at, last_error=error[:200])
            )

    def letters_queued(self, workflow_id: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(letter_queue)
        if workflow_id is not None:
            query = query.where(letter_queue.c.workflow_id == workflow_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def outbox_for(self, workflow_id: str) -> list[OutboxEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(outbox).where(outbox.c.workflow_id == workflow_id).order_by(outbox.c.created_at)
            ).mappings()
            return [OutboxEntry.model_validate(dict(r)) for r in rows]


#: The tables a lifecycle may keep its current row in (`Lifecycle.table`).
#: Where a reseller's customer is linked to its indirect provider too: from the acceptance on.
LINKED_STATES: Final = (State.ACTIVE.value, State.SUSPENDED.value)


def _of_customer(table: sa.Table, cloud: Any, partner_id: Any, customer_id: Any) -> Any:
    """One partner's rows of one customer (the ids' columns every such table has): values, or bound parameters."""
    return (table.c.cloud == cloud) & (table.c.partner_id == partner_id) & (table.c.customer_id == customer_id)


def _of_partner(partner_id: str) -> Any:
    """A partner's customer list: its own customers, and as an indirect provider its resellers'
    linked ones (not an invitation still open or declined, nor one that has ended)."""
    linked = (customers.c.indirect_provider_id == partner_id) & customers.c.state.in_(LINKED_STATES)
    return (customers.c.partner_id == partner_id) | linked


#: What erased personal data reads as, and the audit operation that says it was erased.
ERASED: Final = "[erased]"
ERASE: Final = "EraseCustomerData"

ROW_TABLES: frozenset[str] = frozenset({customers.name, entities.name})
#: Bookkeeping columns an event's `record` leaves out.
INTERNAL_COLUMNS: frozenset[str] = frozenset({"last_change_id"})
EVENT_SCHEMA_VERSION = 1


#: The columns each hot path writes (activities/prepared.py binds each by its own name).
AUDIT_COLUMNS: Final = tuple(c.name for c in audit.c if c.name != "id")
QUEUE_COLUMNS: Final = ("key", "cloud", "workflow_id", "letter", "attempts", "due_at")
OUTBOX_NEW: Final = tuple(c.name for c in outbox.c)
EVENT_COLUMNS: Final = tuple(c.name for c in event_log.c if c.name != "seq")


def _binds(names: Iterable[str]) -> dict[str, Any]:
    """A bound parameter per column, named as the column."""
    return {name: sa.bindparam(name) for name in names}


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


#: PostgreSQL connections kept open: one for every thread that may hold one at once (the
#: event loop's default executor, `min(32, cpus + 4)`, and the SMTP threads' "sent"), so none
#: is opened and closed per call. SQLAlchemy's default keeps 5 and closes each overflow
#: connection on return: a PostgreSQL backend started and stopped per activity was most of an
#: import's cost. SQLite's are cheap to open and each holds a page cache: a few are kept.
POOL_SIZE = {"postgresql": 24, "sqlite": 8}
#: Beyond them, opened for a burst and closed after (PostgreSQL: 32 a worker at most, so three
#: workers stay inside its default `max_connections` of 100).
POOL_OVERFLOW = {"postgresql": 8, "sqlite": 24}


def _engine(url: str, echo: bool) -> Engine:
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    pool = {"pool_size": POOL_SIZE[dialect], "max_overflow": POOL_OVERFLOW[dialect]}
    if dialect == "sqlite":
        if ":memory:" in url or url.rstrip("/") in ("sqlite:", "sqlite+pysqlite:"):
            pool = {}  # in memory (a throwaway): SQLAlchemy's own pool for it
        engine = sa.create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}, **pool)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the CLI and tests read while the worker writes.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return sa.create_engine(url, echo=echo, pool_pre_ping=True, **pool)


def _partner(row: Any) -> Partner:
    return Partner(
        id=row["partner_id"],
        name=row["name"],
        kind=row["kind"],
        indirect_provider_id=row["indirect_provider_id"],
        contact_email=row["contact_email"],
        locale=row["locale"],
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


__all__ = ["Change", "OutboxEntry", "Records", "utc_now"]
