"""A PostgreSQL server of the tests' own, from Debian's packages, on a loopback port.

The cluster lives in a new directory under /tmp, owned by the ``postgres``
account when the tests run as root (the server refuses to run as root), and
is removed when the server stops. Every data directory the tests create gets
a database of its own (``create_database``), so tests never share state.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import psycopg.rows

__all__ = ["PostgresServer", "find_postgres_bin", "TEST_STORE", "use_postgres"]

# `make test-postgres` sets this to "postgresql": every data directory of the suite then uses PostgreSQL.
TEST_STORE = os.environ.get("SIGNSERVER_TEST_STORE", "sqlite")


def use_postgres() -> bool:
    return TEST_STORE == "postgresql"


def find_postgres_bin() -> Path | None:
    """Debian keeps the server's programs in /usr/lib/postgresql/<version>/bin; take the newest."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda path: int(path.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


class PostgresServer:
    """Start, stop and restart one cluster; hand out fresh databases on it."""

    def __init__(self, port: int) -> None:
        bin_dir = find_postgres_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server programs not found under /usr/lib/postgresql: run `make setup`")
        self.bin_dir = bin_dir
        self.port = port
        self.directory = Path(tempfile.mkdtemp(prefix="signserver-pg-", dir="/tmp"))
        self.data_dir = self.directory / "data"
        self.log_file = self.directory / "server.log"
        self._as_postgres = os.geteuid() == 0
        os.chmod(self.directory, 0o700)
        if self._as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data_dir), "-U", "signserver", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(self.bin_dir / program), *args]
        return ["runuser", "-u", "postgres", "--", *command] if self._as_postgres else command

    def _run(self, program: str, *args: str, timeout: float = 120) -> None:
        subprocess.run(self._command(program, *args), check=True, capture_output=True, timeout=timeout,
                       cwd=self.directory)

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c max_connections=400 "
                   "-c shared_buffers=64MB")
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, "-w", "-t", "60",
                  "start")
        self._wait_until_accepting()

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.directory, ignore_errors=True)

    def _wait_until_accepting(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.admin_dsn(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def admin_dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=signserver dbname={database}"

    def url(self, database: str) -> str:
        """The service's SQLAlchemy URL of ``database``."""
        return f"postgresql+asyncpg://signserver@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.admin_dsn(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


_shared: PostgresServer | None = None


def shared_server() -> PostgresServer:
    """The test session's server, started on first use and removed when the process exits."""
    global _shared
    if _shared is None:
        import atexit
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = PostgresServer(port)
        server.start()
        atexit.register(server.remove)
        _shared = server
    return _shared


def _database_url_file(home: Path) -> Path:
    """The file beside a test data directory that names its PostgreSQL database.

    Beside it, not inside: ``signserver init`` refuses a directory that is not empty.
    """
    return home.parent / f"{home.name}.database-url"


def database_url_for_home(home: Path) -> str:
    """The store URL of a test data directory: its own PostgreSQL database, created on first use."""
    marker = _database_url_file(home)
    if marker.exists():
        return marker.read_text(encoding="utf-8").strip()
    url = shared_server().create_database()
    marker.write_text(url + "\n", encoding="utf-8")
    return url


def new_database_url(directory: Path, name: str) -> str:
    """A fresh store URL for a test: an SQLite file in ``directory``, or a new PostgreSQL database."""
    if use_postgres():
        return shared_server().create_database()
    return f"sqlite+aiosqlite:///{directory / name}"


def _psycopg_statement(statement: str, parameters: tuple) -> tuple[str, tuple | None]:
    """Turn ``?`` placeholders into psycopg's ``%s``, keeping a literal ``%`` (as in LIKE 'sign%')."""
    if not parameters:
        return statement, None
    return statement.replace("%", "%%").replace("?", "%s"), parameters


def _psycopg_dsn(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return f"host={parsed.host} port={parsed.port} user={parsed.username} dbname={parsed.database}"


def query(database: Path | str, statement: str, parameters: tuple = ()) -> list[tuple]:
    """Run one SQL statement with ``?`` placeholders on a test store and return the rows.

    ``database`` is a data directory (its own store) or a store URL.
    """
    url = store_url(database) if isinstance(database, Path) else database
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.split(":///", 1)[1]) as connection:
            rows = connection.execute(statement, parameters).fetchall()
        connection.close()
        return rows
    with psycopg.connect(_psycopg_dsn(url), autocommit=True) as connection:
        cursor = connection.execute(*_psycopg_statement(statement, parameters))
        return cursor.fetchall() if cursor.description else []


def store_url(home: Path) -> str:
    """The store URL of a test data directory."""
    marker = _database_url_file(home)
    if marker.exists():
        return marker.read_text(encoding="utf-8").strip()
    return f"sqlite+aiosqlite:///{home / 'signserver.db'}"


def query_dicts(database: Path | str, statement: str, parameters: tuple = ()) -> list[dict]:
    """Like :func:`query`, with each row as a dict by column name."""
    url = store_url(database) if isinstance(database, Path) else database
    if url.startswith("sqlite"):
        import sqlite3

        connection = sqlite3.connect(url.split(":///", 1)[1])
        connection.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in connection.execute(statement, parameters).fetchall()]
        finally:
            connection.close()
    with psycopg.connect(_psycopg_dsn(url), autocommit=True, row_factory=psycopg.rows.dict_row) as connection:
        return list(connection.execute(*_psycopg_statement(statement, parameters)).fetchall())


def copy_store(home: Path, sqlite_copy: Path) -> str:
    """Copy a data directory's store while its service runs, and return the copy's URL.

    SQLite copies to ``sqlite_copy`` with the backup API; PostgreSQL into a
    new database with pg_dump and psql.
    """
    url = store_url(home)
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(home / "signserver.db") as source, sqlite3.connect(sqlite_copy) as copy:
            source.backup(copy)
        source.close()
        copy.close()
        return f"sqlite+aiosqlite:///{sqlite_copy}"
    server = shared_server()
    target = server.create_database("copy")
    dump = subprocess.run([str(server.bin_dir / "pg_dump"), "--no-owner", _psycopg_dsn(url)], check=True,
                          capture_output=True, timeout=120).stdout
    subprocess.run([str(server.bin_dir / "psql"), "-q", "-v", "ON_ERROR_STOP=1", _psycopg_dsn(target)], input=dump,
                   check=True, capture_output=True, timeout=120)
    return target
