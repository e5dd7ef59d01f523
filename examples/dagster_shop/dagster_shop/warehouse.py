"""The deployment's warehouse, as Offshoot hands it to a run in environment variables.

- ``OFFSHOOT_WAREHOUSE_URL``: the deployment's own database. ``sqlite:///abs/path/schema.db``
  (Offshoot's embedded warehouse: one file per deployment schema) or ``postgres://...``.
- ``OFFSHOOT_SCHEMA``: the deployment's schema. On PostgreSQL tables are created there;
  Offshoot's ``PGOPTIONS`` already put it first on the search_path, production's schema second.
- ``OFFSHOOT_PRODUCTION_URL`` (SQLite only): production's file. A branch attaches it read-only,
  so a table the branch has not rebuilt is read from production, and nothing can write to it.

Every asset replaces exactly one table, named like the last component of its key.
"""

import os
import sqlite3
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional, Sequence, Tuple
from urllib.parse import quote

import dagster as dg

SQLITE_PREFIX = "sqlite://"
POSTGRES_PREFIXES = ("postgres://", "postgresql://")


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sqlite_path(url: str) -> str:
    if not url.startswith(SQLITE_PREFIX):
        raise ValueError(f"not a sqlite:// URL: {url!r}")
    # Offshoot writes `sqlite://` + the absolute path, unencoded.
    return url[len(SQLITE_PREFIX) :]


def _file_uri(path: str, read_only: bool = False) -> str:
    uri = "file:" + quote(os.path.abspath(path), safe="/")
    return uri + "?mode=ro" if read_only else uri


class Warehouse(dg.ConfigurableResource):
    """Writes one table per asset into the deployment's own schema.

    Each field defaults to the environment variable Offshoot sets, read when the asset runs.
    """

    url: Optional[str] = None
    schema_name: Optional[str] = None
    production_url: Optional[str] = None

    def _url(self) -> str:
        url = self.url or os.environ.get("OFFSHOOT_WAREHOUSE_URL")
        if not url:
            raise RuntimeError("OFFSHOOT_WAREHOUSE_URL is not set: which warehouse should this run write to?")
        return url

    def _schema(self) -> str:
        schema = self.schema_name or os.environ.get("OFFSHOOT_SCHEMA")
        if not schema:
            raise RuntimeError("OFFSHOOT_SCHEMA is not set")
        return schema

    @contextmanager
    def _connect(self) -> Iterator[Tuple[object, str]]:
        """A fresh connection and the qualifier (schema) new tables go into."""
        url = self._url()
        if url.startswith(POSTGRES_PREFIXES):
            import psycopg2  # only needed on PostgreSQL

            connection = psycopg2.connect(url)  # libpq applies PGOPTIONS (search_path, role)
            try:
                yield connection, quote_identifier(self._schema())
            finally:
                connection.close()
            return

        connection = sqlite3.connect(_file_uri(_sqlite_path(url)), uri=True, timeout=30, isolation_level=None)
        try:
            production = self.production_url or os.environ.get("OFFSHOOT_PRODUCTION_URL")
            if production and production != url:
                # Unqualified names resolve in `main` (the branch) first, then in `prod`.
                connection.execute("ATTACH DATABASE ? AS prod", (_file_uri(_sqlite_path(production), read_only=True),))
            yield connection, "main"
        finally:
            connection.close()

    def _transaction(self, connection, statements: Sequence[Tuple[str, Sequence[Sequence]]]) -> None:
        """Runs each (sql, rows) in one transaction: `sql` once per row, or once if `rows` is empty.

        `sql` uses `?` placeholders on either database.
        """
        if isinstance(connection, sqlite3.Connection):
            connection.execute("BEGIN")
            try:
                for sql, rows in statements:
                    if rows:
                        connection.executemany(sql, rows)
                    else:
                        connection.execute(sql)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        else:
            with connection, connection.cursor() as cursor:  # commits, or rolls back on error
                for sql, rows in statements:
                    if rows:
                        cursor.executemany(sql.replace("?", "%s"), rows)
                    else:
                        cursor.execute(sql)

    def _count(self, connection, table: str) -> int:
        cursor = connection.cursor()
        cursor.execute(f"SELECT count(*) FROM {table}")
        return int(cursor.fetchone()[0])

    def replace_table(self, name: str, select: str) -> int:
        """Replaces table `name` with the result of `select`; returns its row count.

        `select` names other tables unqualified: the deployment's own if it has one, else production's.
        """
        with self._connect() as (connection, schema):
            table = f"{schema}.{quote_identifier(name)}"
            self._transaction(connection, [(f"DROP TABLE IF EXISTS {table}", []), (f"CREATE TABLE {table} AS {select}", [])])
            return self._count(connection, table)

    def load_rows(self, name: str, columns: Sequence[Tuple[str, str]], rows: Iterable[Sequence]) -> int:
        """Replaces table `name` (columns: (name, SQL type) pairs) with `rows`."""
        rows = [tuple(row) for row in rows]
        with self._connect() as (connection, schema):
            table = f"{schema}.{quote_identifier(name)}"
            column_list = ", ".join(f"{quote_identifier(c)} {t}" for c, t in columns)
            placeholders = ", ".join("?" for _ in columns)
            statements = [(f"DROP TABLE IF EXISTS {table}", []), (f"CREATE TABLE {table} ({column_list})", [])]
            if rows:
                statements.append((f"INSERT INTO {table} VALUES ({placeholders})", rows))
            self._transaction(connection, statements)
            return self._count(connection, table)
