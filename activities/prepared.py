"""Statements compiled once per database dialect, run on the driver's own cursor.

SQLAlchemy Core builds, caches, binds and wraps a statement on every call. On a change's
path (five changes and three letters per lifecycle) that cost more than the database's own
work: 24 % of the worker's CPU in `python -m bench --profile`, of which SQLite itself was
under 1 %. A `Prepared` is written with Core as before (so SQLite and PostgreSQL still share
one text, with the dialect's placeholders and casts), compiled once, and then only binds:
each value through its column type's own processor, exactly as SQLAlchemy would send it,
and each returned column through its result processor, exactly as SQLAlchemy would read it.

Run it inside a `Records` transaction (`cursor(conn)`): commit and rollback stay SQLAlchemy's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any]


class Prepared:
    """One statement for one dialect: its text, its parameters' order and processors, and the
    columns it returns (`returning`, in the order the statement returns them)."""

    def __init__(self, statement: sa.sql.ClauseElement, dialect: Dialect, returning: Sequence[sa.Column[Any]] = ()):
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
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
        self.columns = tuple(c.name for c in returning)
        self._read: tuple[Processor | None, ...] = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in returning
        )

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
        cur = cursor(conn)
        try:
            cur.execute(self.sql, self.params(values))
            return int(cur.rowcount)
        finally:
            cur.close()

    def execute_many(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        cur = cursor(conn)
        try:
            cur.executemany(self.sql, [self.params(row) for row in rows])
        finally:
            cur.close()

    def rows(self, conn: Connection, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run it and read what it returns, each column as SQLAlchemy would give it."""
        cur = cursor(conn)
        try:
            cur.execute(self.sql, self.params(values))
            found = cur.fetchall()
        finally:
            cur.close()
        return [
            {
                name: (read(value) if read is not None else value)
                for name, read, value in zip(self.columns, self._read, row, strict=True)
            }
            for row in found
        ]


def cursor(conn: Connection) -> Any:
    """The driver's cursor on `conn`'s connection: inside its transaction, which SQLAlchemy ends."""
    return conn.connection.cursor()
