"""Writing many rows in one statement: the plumbing of the hot paths (a lease of 64 slots, an
upload of 64 samples), where Django's bulk helpers spend most of the request's CPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from django.db import IntegrityError, connection, connections
from django.db.models import Model
from django.db.models.fields import AutoFieldMixin

M = TypeVar("M", bound=Model)


def set_columns(model: type[Model], columns: Sequence[str], rows: Sequence[Sequence[int]]) -> None:
    """Writes integer columns of many rows in one statement:
    UPDATE t SET c = v.column2, … FROM (VALUES (pk, c, …), …) AS v WHERE t.id = v.column1
    (PostgreSQL and SQLite >= 3.33 alike). Django's bulk_update builds a CASE per row and
    column instead, about a millisecond of Python per row. The caller holds the rows' locks."""
    if not rows:
        return
    qn = connection.ops.quote_name
    table = qn(model._meta.db_table)
    pk = qn(model._meta.pk.column)  # type: ignore[union-attr]
    names = [qn(model._meta.get_field(c).column) for c in columns]  # type: ignore[union-attr,arg-type]
    sets = ", ".join(f"{name} = v.column{i + 2}" for i, name in enumerate(names))
    row = "(" + ", ".join(["%s"] * (len(columns) + 1)) + ")"
    ids = ", ".join(["%s"] * len(rows))
    # The id list again, as a plain filter: the planner then finds the rows by primary key
    # whatever it guesses of the VALUES join (without it PostgreSQL may scan the table).
    sql = (
        f"UPDATE {table} SET {sets} FROM (VALUES {', '.join([row] * len(rows))}) AS v "  # noqa: S608
        f"WHERE {table}.{pk} = v.column1 AND {table}.{pk} IN ({ids})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for r in rows for value in r] + [r[0] for r in rows])


def insert(model: type[M], objs: list[M]) -> list[M]:
    """Inserts `objs` and sets their primary keys, like bulk_create. On PostgreSQL through
    COPY, with ids drawn from the table's sequence first: Django's INSERT … UNNEST compiles
    and adapts every value in Python, the largest cost of an upload of 64 completions.
    A unique violation is raised as django.db.IntegrityError, as bulk_create raises it; the
    transaction is then unusable and must be rolled back."""
    if not objs:
        return objs
    if connection.vendor != "postgresql":
        return model.objects.bulk_create(objs)  # type: ignore[attr-defined,no-any-return]
    import psycopg

    meta = model._meta
    pk_field = meta.pk
    assert pk_field is not None
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    # The connection itself, not django.db.connection: every attribute of that proxy is a
    # thread-local lookup, and a row asks for it once per field.
    conn = connections[connection.alias]
    qn = conn.ops.quote_name
    columns = ", ".join(qn(f.column) for f in [pk_field, *fields])
    with conn.cursor() as cursor:
        if isinstance(pk_field, AutoFieldMixin):
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                [meta.db_table, pk_field.column, len(objs)],
            )
            ids = [row[0] for row in cursor.fetchall()]
        else:  # a key given by the caller (SampleOrigin's is its sample)
            ids = [pk_field.get_db_prep_save(obj.pk, conn) for obj in objs]
        try:
            with cursor.copy(f"COPY {qn(meta.db_table)} ({columns}) FROM STDIN") as copy:
                for pk, obj in zip(ids, objs, strict=True):
                    copy.write_row(
                        [
                            pk,
                            *(f.get_db_prep_save(f.pre_save(obj, True), conn) for f in fields),
                        ]
                    )
        except psycopg.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc
    for pk, obj in zip(ids, objs, strict=True):
        obj.pk = pk
        obj._state.adding = False
        obj._state.db = conn.alias
    return objs
