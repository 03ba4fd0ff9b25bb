"""Statements compiled once per database dialect, run on the driver's own cursor.

SQLAlchemy Core builds, caches, binds and wraps a statement on every call. On a change's
path (five changes and three letters per lifecycle) that cost more than the database's own
work: 24 % of the worker's CPU in `python -m bench --profile`, of which SQLite itself was
under 1 %. A `Prepared` is written with Core as before (so SQLite and PostgreSQL still share
one text, with the dialect's placeholders and casts), compiled once, and then only binds:
each value through its column type's own processor, exactly as SQLAlchemy would send it,
and each returned column through its result processor, exactly as SQLAlchemy would read it.
A column's scalar default fills in for a value the statement leaves out, as SQLAlchemy's does.

Run it inside a `Records` transaction or connection: commit and rollback stay SQLAlchemy's,
and a driver's error comes out as SQLAlchemy's (`sqlalchemy.exc.DBAPIError`, parameters
hidden). What SQLAlchemy's events would see (the engine's `echo`, OpenTelemetry's SQLAlchemy
instrumentation) does not see these: each execution opens a span of its own here instead,
with the same `db.system` and `db.statement` (the text, never the values).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import sqlalchemy as sa
from opentelemetry import trace
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler

from partnerflow.states.names import TRACER

Processor = Callable[[Any], Any]


class Prepared:
    """One statement for one dialect: its text, its parameters' order and processors, and the
    columns it returns (a SELECT's, or an INSERT's, UPDATE's or DELETE's RETURNING)."""

    def __init__(self, statement: sa.sql.ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        if compiled.post_compile_params or compiled.literal_execute_params:
            raise ValueError(f"Prepared: a statement with parameters rendered per call: {compiled.string}")
        self.dialect = dialect
        self.sql = compiled.string
        self._order: tuple[str, ...] | None = tuple(compiled.positiontup or ()) if compiled.positional else None
        self._defaults: dict[str, Any] = {}
        self._bind: dict[str, Processor] = {}
        for bind, name in compiled.bind_names.items():
            if not bind.required:  # a literal of the statement's own (`version + 1`)
                self._defaults[name] = bind.effective_value
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self._bind[name] = process
        for column in (*compiled.insert_prefetch, *compiled.update_prefetch):  # a column left out
            default = column.default if column in compiled.insert_prefetch else column.onupdate
            if not isinstance(default, sa.ColumnDefault) or not default.is_scalar:
                raise ValueError(f"Prepared: {column} has a default made per call: bind it")
            self._defaults[column.key] = default.arg
        returning = list(getattr(statement, "exported_columns", ()))
        self.columns = tuple(c.name for c in returning)
        self._read: tuple[Processor | None, ...] = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in returning
        )
        self._span_attributes = {"db.system": dialect.name, "db.statement": self.sql}
        self._span_name = self.sql.split(None, 1)[0]

    def params(self, values: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        """The driver's parameters; a value the statement needs and `values` lacks is a KeyError."""
        merged = {**self._defaults, **values}
        for name, process in self._bind.items():
            merged[name] = process(merged[name])
        if self._order is None:
            return merged
        return tuple(merged[name] for name in self._order)

    def execute(self, conn: Connection, values: Mapping[str, Any]) -> int:
        """Run it once; the rows it changed."""
        with self._cursor(conn) as cur:
            cur.execute(self.sql, self.params(values))
            return int(cur.rowcount)

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        with self._cursor(conn) as cur:
            cur.executemany(self.sql, [self.params(row) for row in rows])

    def rows(self, conn: Connection, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run it and read what it returns, each column as SQLAlchemy would give it."""
        with self._cursor(conn) as cur:
            cur.execute(self.sql, self.params(values))
            found = cur.fetchall()
        return [
            {
                name: (read(value) if read is not None else value)
                for name, read, value in zip(self.columns, self._read, row, strict=True)
            }
            for row in found
        ]

    @contextmanager
    def _cursor(self, conn: Connection) -> Iterator[Any]:
        """The driver's cursor on `conn`'s connection (inside its transaction), in a span; a
        driver's error as SQLAlchemy raises it, the connection dropped when it is gone."""
        tracer = trace.get_tracer(TRACER)
        with tracer.start_as_current_span(
            self._span_name, kind=trace.SpanKind.CLIENT, attributes=self._span_attributes
        ):
            dbapi = conn.connection.dbapi_connection
            cur = conn.connection.cursor()
            try:
                yield cur
            except self.dialect.loaded_dbapi.Error as error:
                gone = self.dialect.is_disconnect(error, dbapi, cur)
                if gone:
                    conn.invalidate(error)
                raise sa.exc.DBAPIError.instance(
                    self.sql,
                    None,
                    error,
                    self.dialect.loaded_dbapi.Error,
                    hide_parameters=True,
                    connection_invalidated=gone,
                    dialect=self.dialect,
                ) from error
            finally:
                cur.close()
