"""Plain SQL for the few queries every repository page runs.

The ORM builds a query anew on every call; for the small queries of a page with a 30 ms budget
that building took longer than the database took to answer (a window filter or an aggregate
over a subquery: ten times longer). These helpers keep the SQL portable across SQLite and
PostgreSQL: table names come from the models, values are always parameters.
"""

from __future__ import annotations

from collections.abc import Collection

from django.db import connection
from django.db.models import Model


def table(model: type[Model]) -> str:
    """The model's quoted table name."""
    return connection.ops.quote_name(model._meta.db_table)


def placeholders(values: Collection) -> str:
    """`%s, %s, %s` for an IN list of `values`."""
    return ", ".join(["%s"] * len(values))


def select(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
