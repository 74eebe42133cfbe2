"""Plain SQL for the few queries every repository page runs.

The ORM builds a query anew on every call; for the small queries of every repository page that
building took longer than the database took to answer (figures in bench/README.md). These helpers keep the SQL portable across SQLite and
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
