"""Query results as Arrow tables, for a release's build.

A release reads every published sample once: millions of rows of kilobytes of text. Through a
Python DB driver each value becomes a Python object first (the largest cost of a build), so on
PostgreSQL the rows are read with ADBC instead (`adbc-driver-postgresql`: COPY in binary, straight
into Arrow buffers, in C++), on a connection of its own that imports the snapshot of the build's
transaction (`pg_export_snapshot`, as `pg_dump --jobs` does): every query sees the same data as
the Django connection's. Where that cannot be (SQLite, the embedded default; a build inside a
caller's transaction, whose uncommitted rows another connection cannot see; no ADBC installed)
the same queries run through Django's cursor. Both give the same table for the same query.

Queries are Django querysets: their SQL comes from Django's compiler, and the parameters are
inlined by the database backend's own quoting (`connection.ops.compose_sql`) for ADBC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
from django.db import connection
from django.db.models import FloatField, Func, Lookup

logger = logging.getLogger(__name__)

# libpq connection parameters Django's PostgreSQL backend may hold that ADBC's libpq takes.
_LIBPQ_KEYS = (
    "dbname",
    "user",
    "password",
    "host",
    "port",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "options",
    "application_name",
    "target_session_attrs",
    "service",
    "passfile",
)


class JsonNumber(Func):
    """A number at a top-level key of a JSON column, else NULL (a string there is no number,
    and must not make the query fail). `key` is a constant of ours, never input."""

    output_field = FloatField()

    def __init__(self, column: str, key: str, **extra: Any) -> None:
        if not key.isidentifier():
            raise ValueError(f"not a plain key: {key!r}")
        self.key = key
        super().__init__(column, **extra)

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **extra_context: Any) -> Any:
        raise NotImplementedError(f"JsonNumber has no SQL for {connection.vendor}")

    def as_postgresql(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        column, params = compiler.compile(self.source_expressions[0])
        key = self.key
        sql = (
            f"(CASE WHEN jsonb_typeof({column} -> '{key}') = 'number' "
            f"THEN ({column} ->> '{key}')::double precision END)"
        )
        return sql, [*params, *params]

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        column, params = compiler.compile(self.source_expressions[0])
        key = self.key
        sql = (
            f"(CASE WHEN json_type({column}, '$.{key}') IN ('integer', 'real') "
            f"THEN CAST(json_extract({column}, '$.{key}') AS REAL) END)"
        )
        return sql, [*params, *params]


class Ids(list):  # type: ignore[type-arg]
    """A list of ids given to `any_of`. A query is compiled once with a marker list (one id
    no row has), found again among the compiled parameters, and each chunk's ids are put in
    its place."""


_MARKER_ID = -7_392_019_417


class AnyOf(Lookup):
    """`field__any_of=ids`: `= ANY(array)` on PostgreSQL (one parameter however many ids, so
    a compiled query is reused with other ids), an IN list elsewhere. Registered on the fields
    the release reads by (register_lookups)."""

    lookup_name = "any_of"
    prepare_rhs = False

    def process_rhs(self, compiler: Any, connection: Any) -> Any:
        return "%s", [self.rhs]

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        ids = list(self.rhs)
        if not ids:
            return "1 = 0", list(lhs_params)
        return f"{lhs} IN ({', '.join(['%s'] * len(ids))})", [*lhs_params, *ids]

    def as_postgresql(self, compiler: Any, connection: Any) -> Any:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s::bigint[])", [*lhs_params, self.rhs]


def register_lookups(fields: Sequence[Any]) -> None:
    for field in fields:
        field.register_lookup(AnyOf)


def _to_table(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pa.Table.from_arrays(
        [pa.array(column, type=f.type) for column, f in zip(columns, schema, strict=True)],
        schema=schema,
    )


class Fetcher:
    """Runs querysets (`values_list` in `schema`'s column order) into Arrow tables, through
    Django's cursor."""

    adbc = False

    def by_ids(
        self, key: str, make: Callable[[Ids], Any], ids: Sequence[int], schema: pa.Schema
    ) -> pa.Table:
        """The rows of the queryset `make(ids)` builds; `key` names the kind of query."""
        sql, params = make(Ids(ids)).query.sql_with_params()
        return self._run(sql, list(params), schema)

    def _run(self, sql: str, params: list[Any], schema: pa.Schema) -> pa.Table:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return _to_table(cursor.fetchall(), schema)

    def close(self) -> None:
        pass


class AdbcFetcher(Fetcher):
    adbc = True

    def __init__(self, snapshot: str) -> None:
        import adbc_driver_postgresql.dbapi as adbc
        from psycopg.conninfo import make_conninfo

        params = connection.get_connection_params()
        conninfo = make_conninfo(
            **{k: str(v) for k, v in params.items() if k in _LIBPQ_KEYS and v not in (None, "")}
        )
        self._conn = adbc.connect(conninfo)
        self._cursor = self._conn.cursor()
        # The dbapi wrapper opens a transaction itself (autocommit off): make it the snapshot's.
        self._cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        self._cursor.execute(f"SET TRANSACTION SNAPSHOT '{_snapshot_id(snapshot)}'")
        self._compiled: dict[str, tuple[str, list[Any], list[int]]] = {}

    def by_ids(
        self, key: str, make: Callable[[Ids], Any], ids: Sequence[int], schema: pa.Schema
    ) -> pa.Table:
        # Django compiles each kind of query once; a chunk only swaps its ids in.
        if key not in self._compiled:
            sql, params = make(Ids([_MARKER_ID])).query.sql_with_params()
            params = list(params)
            # Found by value: Django copies a query's parameters as it builds it.
            at = [i for i, p in enumerate(params) if isinstance(p, list) and p == [_MARKER_ID]]
            if not at:
                raise ValueError(f"query {key!r} does not filter by any_of=ids: {params!r}")
            self._compiled[key] = (sql, params, at)
        sql, params, at = self._compiled[key]
        params = list(params)
        for i in at:
            params[i] = [int(pk) for pk in ids]
        return self._run(sql, params, schema)

    def _run(self, sql: str, params: list[Any], schema: pa.Schema) -> pa.Table:
        # PostgreSQL's backend inlines the parameters with the driver's own quoting.
        text = connection.ops.compose_sql(sql, params)  # type: ignore[attr-defined]
        self._cursor.execute(text)
        got = self._cursor.fetch_arrow_table()
        return got.rename_columns(schema.names).cast(schema)

    def close(self) -> None:
        try:
            self._cursor.close()
            self._conn.rollback()
        finally:
            self._conn.close()


def _snapshot_id(value: str) -> str:
    # pg_export_snapshot() gives e.g. 00000003-0000001B-1: hex digits and dashes only.
    if not value or any(c not in "0123456789ABCDEFabcdef-" for c in value):
        raise ValueError(f"not a snapshot id: {value!r}")
    return value


def open_fetcher(snapshot: str | None) -> Fetcher:
    """ADBC in the exported `snapshot` when there is one and the driver is installed; Django's
    cursor otherwise."""
    if snapshot is None:
        return Fetcher()
    try:
        return AdbcFetcher(snapshot)
    except ImportError:
        logger.info("adbc-driver-postgresql is not installed: reading through Django's cursor")
        return Fetcher()
