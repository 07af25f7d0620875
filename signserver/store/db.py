"""Database access: the engine, transactions and the queries the core needs.

Every method of :class:`Transaction` runs inside one database transaction, so
a state change and its audit record commit together or not at all. On SQLite
each transaction starts with ``BEGIN IMMEDIATE``: writers queue for the lock at
the start instead of failing when a read turns into a write.

SQLite makes a transaction that finds the database locked sleep and retry,
for 1 ms up to 100 ms at a time, which under load from several worker
processes left requests waiting seconds for a lock that was free. So on
SQLite the store queues its transactions itself: first on an asyncio lock
within the process, then on an flock(2) of ``<database>.txlock`` across
processes, which wakes a waiter as soon as the holder lets go.

Transactions that only read (``Store.read_only``) skip the queue: in WAL mode
they read a snapshot while a writer works.

A transaction that holds the queue does not wait for SQLite's lock, unless a
process outside the service (the sqlite3 shell, say) holds it. So its
statements run directly on the event loop's thread (``InlineSqliteConnection``):
each statement takes microseconds, where aiosqlite's hand-over to its own
thread and back cost two thread wake-ups, about 0.2 ms each on the test
machines, some 30 times per transaction, all while the lock was held.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import functools
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import aiosqlite

try:
    import asyncpg
except ImportError:  # the PostgreSQL driver is needed only with a postgresql+asyncpg URL
    asyncpg = None  # type: ignore[assignment]
from sqlalchemy import and_, bindparam, event, func, insert, or_, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from signserver.errors import DatabaseUnavailable

from . import tables as t
from .records import (
    AdminChange,
    Application,
    AuditRecord,
    Credential,
    CredentialProfile,
    HsmKey,
    Official,
    PolicyVersion,
    SignRequest,
    from_row,
)

__all__ = ["Store", "Transaction", "IntegrityError", "is_database_outage"]


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    # Store.read_only() transactions begin deferred: in WAL mode they read a snapshot beside the writer.
    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(_READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


# The statements of every audit record, built once.
_AUDIT_HEAD = select(t.audit_head.c.seq, t.audit_head.c.hash).where(t.audit_head.c.id == 1)
_AUDIT_HEAD_FOR_UPDATE = _AUDIT_HEAD.with_for_update()
_AUDIT_INSERT = insert(t.audit_log)
_AUDIT_HEAD_INSERT = insert(t.audit_head).values(id=1, seq=bindparam("head_seq"), hash=bindparam("head_hash"))
_AUDIT_HEAD_UPDATE = (update(t.audit_head).where(t.audit_head.c.id == 1)
                      .values(seq=bindparam("head_seq"), hash=bindparam("head_hash")))

@functools.lru_cache(maxsize=8)
def _key_usage_select(counter_count: int) -> Any:
    """SELECT of ``counter_count`` counters of one credential, by (application_N, period_N) parameters."""
    columns = t.key_usage.c
    return select(columns.application_id, columns.period, columns.count).where(
        columns.credential_id == bindparam("for_credential"),
        or_(*[and_(columns.application_id == bindparam(f"application_{number}"),
                   columns.period == bindparam(f"period_{number}")) for number in range(counter_count)]),
    )


@functools.lru_cache(maxsize=64)
def _key_usage_update(limited: tuple[bool, ...]) -> Any:
    """UPDATE adding :added to each counter N whose limit_N (where ``limited[N]``) allows it, returning those raised."""
    columns = t.key_usage.c
    conditions = [
        and_(columns.application_id == bindparam(f"application_{number}"),
             columns.period == bindparam(f"period_{number}"),
             *([columns.count + bindparam("added") <= bindparam(f"limit_{number}")] if has_limit else []))
        for number, has_limit in enumerate(limited)
    ]
    return (update(t.key_usage).where(columns.credential_id == bindparam("for_credential"), or_(*conditions))
            .values(count=columns.count + bindparam("added")).returning(columns.application_id, columns.period))


# The execution option that marks the connection of a Store.read_only() transaction.
_READ_ONLY_OPTION = "signserver_read_only"

# Set while a task is inside Store.transaction, to refuse a nested one, which would wait for itself.
_in_transaction: contextvars.ContextVar[bool] = contextvars.ContextVar("signserver_in_transaction", default=False)


def _try_lock(fd: int) -> bool:
    """Take the lock at once if no other process holds it, without a thread hand-over."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class TransactionQueue:
    """Lets one transaction at a time into an SQLite database, in this process and across processes."""

    def __init__(self, lock_path: str) -> None:
        self._lock_path = lock_path
        self._fd: int | None = None
        self._local: asyncio.Lock | None = None
        # flock blocks, so it waits on a thread of its own rather than behind HSM calls in the default executor.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-txlock")

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self._local is None:
            self._local = asyncio.Lock()
        if self._fd is None:
            self._fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fd = self._fd
        async with self._local:
            if _try_lock(fd):
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                return
            locking = asyncio.get_running_loop().run_in_executor(self._executor, fcntl.flock, fd, fcntl.LOCK_EX)
            try:
                await asyncio.shield(locking)
            except asyncio.CancelledError:
                # The flock call cannot be stopped: wait for it, let go, and only then pass the cancellation on,
                # so the process never keeps the lock with no one inside.
                while not locking.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(locking)
                if not locking.cancelled() and locking.exception() is None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                raise
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._executor.shutdown(wait=False)


class InlineSqliteConnection(aiosqlite.Connection):
    """aiosqlite's connection, except that each call runs at once on the calling thread.

    Only for connections whose transactions go through :class:`TransactionQueue`:
    a call that had to wait for SQLite's lock would stop the event loop.
    Opening and closing still use aiosqlite's thread.
    """

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)


def _inline_connector(path: str) -> Any:
    async def connect() -> InlineSqliteConnection:
        # check_same_thread off: aiosqlite's thread opens the connection, the event loop's thread uses it.
        connection = InlineSqliteConnection(lambda: sqlite3.connect(path, check_same_thread=False),
                                            iter_chunk_size=64)
        return await connection

    return connect


def is_database_outage(exc: BaseException | None, depth: int = 0) -> bool:
    """Return whether ``exc`` means the database could not be reached, rather than a rejected statement.

    SQLAlchemy wraps the driver's error, and its asyncpg adapter wraps
    asyncpg's in turn, so the causes are followed a few levels down.
    """
    if exc is None or depth > 4:
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, DBAPIError) and (exc.connection_invalidated or isinstance(exc, (OperationalError,
                                                                                       InterfaceError))):
        return True
    if asyncpg is not None and isinstance(exc, (asyncpg.exceptions.PostgresConnectionError,
                                                asyncpg.exceptions.CannotConnectNowError,
                                                asyncpg.exceptions.InterfaceError)):
        return True
    inner = exc.orig if isinstance(exc, DBAPIError) else None
    return any(is_database_outage(cause, depth + 1) for cause in (inner, exc.__cause__) if cause is not exc)


class Store:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.is_sqlite = database_url.startswith("sqlite")
        self._queue: TransactionQueue | None = None
        database = make_url(database_url).database if self.is_sqlite else None
        if database and database != ":memory:":
            self._queue = TransactionQueue(f"{database}.txlock")
            self.engine = create_async_engine(database_url, async_creator=_inline_connector(database))
        else:
            self.engine = create_async_engine(database_url, pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            _configure_sqlite(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()
        if self._queue is not None:
            self._queue.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator["Transaction"]:
        """Open a transaction that commits when the block ends and rolls back when it raises.

        A lost or refused database connection, while opening or inside the
        block, raises :class:`DatabaseUnavailable`: the transaction was not
        committed.
        """
        if _in_transaction.get():
            raise RuntimeError("Store.transaction() opened inside another transaction of the same task")
        marker = _in_transaction.set(True)
        try:
            if self._queue is None:
                async with self.engine.begin() as connection:
                    yield Transaction(connection, self.is_sqlite)
            else:
                async with self._queue.turn(), self.engine.begin() as connection:
                    yield Transaction(connection, self.is_sqlite)
        except Exception as exc:
            if is_database_outage(exc):
                raise DatabaseUnavailable() from exc
            raise
        finally:
            _in_transaction.reset(marker)

    @contextlib.asynccontextmanager
    async def read_only(self) -> AsyncIterator["Transaction"]:
        """Open a transaction for reading only, which neither waits for nor blocks the writers.

        On SQLite it reads a snapshot (a deferred BEGIN in WAL mode) without
        the transaction queue. Nothing may be written in it: on SQLite the
        write would have to wait for the lock on the event loop's thread.
        """
        if _in_transaction.get():
            raise RuntimeError("Store.read_only() opened inside another transaction of the same task")
        marker = _in_transaction.set(True)
        try:
            async with self.engine.connect() as connection:
                await connection.execution_options(**{_READ_ONLY_OPTION: True})
                async with connection.begin():
                    yield Transaction(connection, self.is_sqlite)
        except Exception as exc:
            if is_database_outage(exc):
                raise DatabaseUnavailable() from exc
            raise
        finally:
            _in_transaction.reset(marker)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as connection:
                # Without this, SQLite's BEGIN IMMEDIATE would wait for the write lock on the event loop.
                await connection.execution_options(**{_READ_ONLY_OPTION: True})
                await connection.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - readiness probe reports any failure as "down"
            return False


class Transaction:
    def __init__(self, connection: AsyncConnection, is_sqlite: bool) -> None:
        self.connection = connection
        self.is_sqlite = is_sqlite

    async def _one(self, statement: Any) -> dict[str, Any] | None:
        row = (await self.connection.execute(statement)).mappings().first()
        return dict(row) if row is not None else None

    async def _all(self, statement: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in (await self.connection.execute(statement)).mappings().all()]

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """Open a nested transaction: an exception inside undoes only what was done inside."""
        async with self.connection.begin_nested():
            yield

    async def commit(self) -> None:
        """Commit what the transaction contains so far, for a record that must outlast the error raised next.

        The ``Store.transaction`` block then ends without a rollback to do.
        """
        await self.connection.commit()

    def _for_update(self, statement: Any) -> Any:
        # SQLite already holds the write lock from BEGIN IMMEDIATE.
        return statement if self.is_sqlite else statement.with_for_update()

    # Applications
    async def insert_application(self, **values: Any) -> None:
        await self.connection.execute(insert(t.applications).values(**values))

    async def application_by_api_key(self, api_key_sha256: str) -> Application | None:
        row = await self._one(select(t.applications).where(t.applications.c.api_key_sha256 == api_key_sha256))
        return from_row(Application, row) if row else None

    async def application_by_username(self, username: str) -> Application | None:
        row = await self._one(select(t.applications).where(t.applications.c.basic_username == username))
        return from_row(Application, row) if row else None

    async def applications(self) -> list[Application]:
        statement = select(t.applications).order_by(t.applications.c.id)
        return [from_row(Application, row) for row in await self._all(statement)]

    async def application_ids(self) -> list[str]:
        return [row["id"] for row in await self._all(select(t.applications.c.id))]

    async def application(self, application_id: str) -> Application | None:
        row = await self._one(select(t.applications).where(t.applications.c.id == application_id))
        return from_row(Application, row) if row else None

    # Officials
    async def insert_official(self, **values: Any) -> None:
        await self.connection.execute(insert(t.officials).values(**values))

    async def official(self, official_id: str, *, for_update: bool = False) -> Official | None:
        statement = select(t.officials).where(t.officials.c.id == official_id)
        row = await self._one(self._for_update(statement) if for_update else statement)
        return from_row(Official, row) if row else None

    async def official_ids(self) -> list[str]:
        return [row["id"] for row in await self._all(select(t.officials.c.id))]

    async def officials(self) -> list[Official]:
        return [from_row(Official, row) for row in await self._all(select(t.officials).order_by(t.officials.c.id))]

    async def official_by_username(self, username: str) -> Official | None:
        row = await self._one(select(t.officials).where(t.officials.c.username == username))
        return from_row(Official, row) if row else None

    async def update_official(self, official_id: str, **values: Any) -> None:
        await self.connection.execute(update(t.officials).where(t.officials.c.id == official_id).values(**values))

    async def record_otp_step(self, official_id: str, step: int, used_at: datetime) -> bool:
        """Insert an accepted TOTP step; False when that step was already used (a replay)."""
        try:
            async with self.connection.begin_nested():
                await self.connection.execute(
                    insert(t.otp_used_steps).values(official_id=official_id, step=step, used_at=used_at)
                )
        except IntegrityError:
            return False
        return True

    # Sessions
    async def insert_session(self, **values: Any) -> None:
        await self.connection.execute(insert(t.official_sessions).values(**values))

    async def session(self, token_sha256: str) -> dict[str, Any] | None:
        return await self._one(select(t.official_sessions).where(t.official_sessions.c.token_sha256 == token_sha256))

    async def delete_session(self, token_sha256: str) -> None:
        await self.connection.execute(
            t.official_sessions.delete().where(t.official_sessions.c.token_sha256 == token_sha256)
        )

    # Credentials
    async def insert_credential(self, **values: Any) -> None:
        await self.connection.execute(insert(t.credentials).values(**values))

    async def update_credential(self, credential_id: str, **values: Any) -> None:
        await self.connection.execute(update(t.credentials).where(t.credentials.c.id == credential_id).values(**values))

    async def credential(self, credential_id: str) -> Credential | None:
        row = await self._one(select(t.credentials).where(t.credentials.c.id == credential_id))
        return from_row(Credential, row) if row else None

    async def credentials(self, *, kind: str | None = None) -> list[Credential]:
        statement = select(t.credentials).order_by(t.credentials.c.id)
        if kind is not None:
            statement = statement.where(t.credentials.c.kind == kind)
        return [from_row(Credential, row) for row in await self._all(statement)]

    async def personal_credential(self, official_id: str) -> Credential | None:
        statement = (
            select(t.credentials)
            .where(t.credentials.c.owner_official_id == official_id, t.credentials.c.kind == "personal")
            .where(t.credentials.c.status == "active")
            .order_by(t.credentials.c.created_at.desc())
        )
        row = await self._one(statement)
        return from_row(Credential, row) if row else None

    # Credential appearance profiles
    async def credential_profile(self, credential_id: str) -> CredentialProfile | None:
        statement = select(t.credential_profiles).where(t.credential_profiles.c.credential_id == credential_id)
        row = await self._one(statement)
        return from_row(CredentialProfile, row) if row else None

    async def save_credential_profile(self, credential_id: str, **values: Any) -> None:
        """Insert the profile of ``credential_id``, or update the given columns of the existing one."""
        columns = t.credential_profiles.c
        result = await self.connection.execute(
            update(t.credential_profiles).where(columns.credential_id == credential_id).values(**values)
        )
        if result.rowcount == 0:
            await self.connection.execute(
                insert(t.credential_profiles).values(credential_id=credential_id, **values)
            )

    # Sign requests
    async def insert_sign_request(self, **values: Any) -> None:
        await self.connection.execute(insert(t.sign_requests).values(**values))

    async def sign_request(self, request_id: str, *, for_update: bool = False) -> SignRequest | None:
        statement = select(t.sign_requests).where(t.sign_requests.c.id == request_id)
        row = await self._one(self._for_update(statement) if for_update else statement)
        return from_row(SignRequest, row) if row else None

    async def sign_request_states(self, request_ids: Sequence[str]) -> dict[str, str]:
        """Return the state of each of ``request_ids`` that exists."""
        columns = t.sign_requests.c
        states: dict[str, str] = {}
        # In chunks of 500, below the 999 bound parameters that SQLite builds before 3.32 allow.
        for start in range(0, len(request_ids), 500):
            chunk = list(request_ids[start:start + 500])
            result = await self.connection.execute(select(columns.id, columns.state).where(columns.id.in_(chunk)))
            states.update({row.id: row.state for row in result})
        return states

    async def sign_request_by_idempotency_key(self, application_id: str, key: str) -> SignRequest | None:
        statement = select(t.sign_requests).where(
            t.sign_requests.c.application_id == application_id, t.sign_requests.c.idempotency_key == key
        )
        row = await self._one(statement)
        return from_row(SignRequest, row) if row else None

    async def update_sign_request(self, request_id: str, expected_state: str, **values: Any) -> bool:
        """Compare-and-set: change the request only if it is still in ``expected_state``."""
        statement = (
            update(t.sign_requests)
            .where(t.sign_requests.c.id == request_id, t.sign_requests.c.state == expected_state)
            .values(**values)
        )
        result = await self.connection.execute(statement)
        return result.rowcount == 1

    async def sign_requests(
        self,
        *,
        application_id: str | None = None,
        approver_official_id: str | None = None,
        states: Sequence[str] | None = None,
        dossier_code: str | None = None,
        expires_before: datetime | None = None,
        limit: int = 100,
    ) -> list[SignRequest]:
        columns = t.sign_requests.c
        statement = select(t.sign_requests).order_by(columns.created_at, columns.id).limit(limit)
        if application_id is not None:
            statement = statement.where(columns.application_id == application_id)
        if approver_official_id is not None:
            statement = statement.where(columns.approver_official_id == approver_official_id)
        if states:
            statement = statement.where(columns.state.in_(list(states)))
        if dossier_code is not None:
            statement = statement.where(columns.dossier_code == dossier_code)
        if expires_before is not None:
            statement = statement.where(columns.expires_at <= expires_before)
        return [from_row(SignRequest, row) for row in await self._all(statement)]

    async def interrupted_sign_requests(self, alive_after: datetime, *,
                                        dead_node: str | None = None) -> list[SignRequest]:
        """Requests in ``signing`` whose instance has not beaten since ``alive_after``, or is of ``dead_node``."""
        requests, instances = t.sign_requests.c, t.service_instances.c
        alive = select(instances.id).where(instances.heartbeat_at >= alive_after)
        if dead_node is not None:
            alive = alive.where(instances.node != dead_node)
        statement = (select(t.sign_requests).where(requests.state == "signing")
                     .where(or_(requests.signing_instance.is_(None), requests.signing_instance.not_in(alive)))
                     .order_by(requests.updated_at).limit(1000))
        return [from_row(SignRequest, row) for row in await self._all(statement)]

    async def approved_request_ids(self, updated_before: datetime | None = None, limit: int = 1000) -> list[str]:
        """Requests still waiting for a signer: all, or those approved before ``updated_before``."""
        columns = t.sign_requests.c
        statement = select(columns.id).where(columns.state == "approved").order_by(columns.updated_at).limit(limit)
        if updated_before is not None:
            statement = statement.where(columns.updated_at < updated_before)
        return [row["id"] for row in await self._all(statement)]

    # Service instances
    async def insert_service_instance(self, **values: Any) -> None:
        await self.connection.execute(insert(t.service_instances).values(**values))

    async def beat_service_instance(self, instance_id: str, now: datetime) -> bool:
        """Record that the instance is alive; False when its row is gone (another instance gave it up)."""
        columns = t.service_instances.c
        result = await self.connection.execute(
            update(t.service_instances).where(columns.id == instance_id).values(heartbeat_at=now))
        return result.rowcount == 1

    async def delete_service_instances(self, *, node: str | None = None, beat_before: datetime | None = None,
                                       instance_id: str | None = None) -> int:
        """Remove the instances of ``node``, those silent since ``beat_before``, or the one ``instance_id``."""
        columns = t.service_instances.c
        conditions = []
        if node is not None:
            conditions.append(columns.node == node)
        if beat_before is not None:
            conditions.append(columns.heartbeat_at < beat_before)
        if instance_id is not None:
            conditions.append(columns.id == instance_id)
        if not conditions:
            return 0
        result = await self.connection.execute(t.service_instances.delete().where(or_(*conditions)))
        return result.rowcount

    # Approvals
    async def insert_approval(self, approval_id: str, official_id: str, otp_step: int, created_at: datetime,
                              items: Sequence[tuple[str, str]]) -> None:
        await self.connection.execute(
            insert(t.approvals).values(id=approval_id, official_id=official_id, otp_step=otp_step, created_at=created_at)
        )
        await self.connection.execute(
            insert(t.approval_items),
            [{"approval_id": approval_id, "request_id": rid, "document_sha256": digest} for rid, digest in items],
        )

    async def approval_request_ids(self, approval_id: str, official_id: str) -> list[str] | None:
        """Return the ids of the requests in ``official_id``'s approval, or None when they made no such approval."""
        approval = await self._one(select(t.approvals.c.id).where(
            t.approvals.c.id == approval_id, t.approvals.c.official_id == official_id))
        if approval is None:
            return None
        items = t.approval_items.c
        result = await self.connection.execute(
            select(items.request_id).where(items.approval_id == approval_id).order_by(items.request_id))
        return [row.request_id for row in result]

    # Audit trail
    async def audit_head(self) -> tuple[int, str] | None:
        statement = _AUDIT_HEAD if self.is_sqlite else _AUDIT_HEAD_FOR_UPDATE
        row = (await self.connection.execute(statement)).first()
        return (row.seq, row.hash) if row else None

    async def append_audit_row(self, values: dict[str, Any], *, first: bool) -> None:
        # Built once (module level), so each record costs no statement construction.
        await self.connection.execute(_AUDIT_INSERT, values)
        head = {"head_seq": values["seq"], "head_hash": values["hash"]}
        await self.connection.execute(_AUDIT_HEAD_INSERT if first else _AUDIT_HEAD_UPDATE, head)

    async def audit_records(self, *, dossier_code: str | None = None, request_id: str | None = None,
                            after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        statement = select(t.audit_log).where(t.audit_log.c.seq > after_seq).order_by(t.audit_log.c.seq)
        if dossier_code is not None:
            statement = statement.where(t.audit_log.c.dossier_code == dossier_code)
        if request_id is not None:
            statement = statement.where(t.audit_log.c.request_id == request_id)
        if limit is not None:
            statement = statement.limit(limit)
        return [from_row(AuditRecord, row) for row in await self._all(statement)]

    # TSA serial numbers
    async def next_tsa_serial(self, issued_at: datetime) -> int:
        result = await self.connection.execute(insert(t.tsa_serials).values(issued_at=issued_at))
        return int(result.inserted_primary_key[0])

    async def count_sign_requests(self) -> int:
        return int((await self.connection.execute(select(func.count()).select_from(t.sign_requests))).scalar_one())

    # CSC API bearer tokens
    async def insert_csc_token(self, **values: Any) -> None:
        await self.connection.execute(insert(t.csc_tokens).values(**values))

    async def csc_token(self, token_sha256: str) -> dict[str, Any] | None:
        return await self._one(select(t.csc_tokens).where(t.csc_tokens.c.token_sha256 == token_sha256))

    async def delete_csc_token(self, token_sha256: str) -> int:
        result = await self.connection.execute(
            t.csc_tokens.delete().where(t.csc_tokens.c.token_sha256 == token_sha256)
        )
        return result.rowcount

    async def delete_csc_grant(self, grant_id: str) -> int:
        result = await self.connection.execute(t.csc_tokens.delete().where(t.csc_tokens.c.grant_id == grant_id))
        return result.rowcount

    async def delete_expired_csc_tokens(self, before: datetime) -> int:
        result = await self.connection.execute(t.csc_tokens.delete().where(t.csc_tokens.c.expires_at < before))
        return result.rowcount

    # CSC API signature activation data
    async def insert_csc_sad(self, values: dict[str, Any], hash_hexes: Sequence[str]) -> None:
        await self.connection.execute(insert(t.csc_sads).values(**values))
        await self.connection.execute(
            insert(t.csc_sad_hashes),
            [{"sad_id": values["id"], "position": position, "hash_hex": hash_hex}
             for position, hash_hex in enumerate(hash_hexes)],
        )

    async def csc_sad_by_digest(self, sad_sha256: str, *, for_update: bool = False) -> dict[str, Any] | None:
        statement = select(t.csc_sads).where(t.csc_sads.c.sad_sha256 == sad_sha256)
        return await self._one(self._for_update(statement) if for_update else statement)

    async def unused_csc_sad_hashes(self, sad_id: str, among: Sequence[str] | None = None) -> list[tuple[int, str]]:
        """Return (position, hash) of the SAD's unspent hashes, only those in ``among`` when it is given."""
        columns = t.csc_sad_hashes.c
        statement = (
            select(columns.position, columns.hash_hex)
            .where(columns.sad_id == sad_id, columns.used_at.is_(None))
            .order_by(columns.position)
        )
        if among is not None:
            statement = statement.where(columns.hash_hex.in_(sorted(set(among))))
        result = await self.connection.execute(statement)
        return [(position, hash_hex) for position, hash_hex in result.all()]

    async def has_unused_csc_sad_hashes(self, sad_id: str) -> bool:
        columns = t.csc_sad_hashes.c
        statement = select(columns.position).where(columns.sad_id == sad_id, columns.used_at.is_(None)).limit(1)
        return (await self.connection.execute(statement)).first() is not None

    async def mark_csc_sad_hashes_used(self, sad_id: str, positions: Sequence[int], used_at: datetime) -> int:
        """Spend the given rows that are still unused, as a compare-and-set, and return how many changed."""
        columns = t.csc_sad_hashes.c
        statement = (
            update(t.csc_sad_hashes)
            .where(columns.sad_id == sad_id, columns.position.in_(list(positions)), columns.used_at.is_(None))
            .values(used_at=used_at)
        )
        result = await self.connection.execute(statement)
        return result.rowcount

    async def update_csc_sad(self, sad_id: str, **values: Any) -> None:
        await self.connection.execute(update(t.csc_sads).where(t.csc_sads.c.id == sad_id).values(**values))

    async def delete_expired_csc_sads(self, before: datetime) -> int:
        expired = select(t.csc_sads.c.id).where(t.csc_sads.c.expires_at < before)
        await self.connection.execute(t.csc_sad_hashes.delete().where(t.csc_sad_hashes.c.sad_id.in_(expired)))
        result = await self.connection.execute(t.csc_sads.delete().where(t.csc_sads.c.expires_at < before))
        return result.rowcount

    # The HSM key inventory
    async def insert_hsm_key(self, **values: Any) -> None:
        await self.connection.execute(insert(t.hsm_keys).values(**values))

    async def update_hsm_key(self, key_id: str, **values: Any) -> None:
        await self.connection.execute(update(t.hsm_keys).where(t.hsm_keys.c.id == key_id).values(**values))

    async def hsm_key(self, key_id: str, *, for_update: bool = False) -> HsmKey | None:
        statement = select(t.hsm_keys).where(t.hsm_keys.c.id == key_id)
        row = await self._one(self._for_update(statement) if for_update else statement)
        return from_row(HsmKey, row) if row else None

    async def hsm_key_by_key_id(self, key_id_hex: str) -> HsmKey | None:
        row = await self._one(select(t.hsm_keys).where(t.hsm_keys.c.key_id_hex == key_id_hex))
        return from_row(HsmKey, row) if row else None

    async def hsm_keys(self, *, credential_id: str | None = None, states: Sequence[str] | None = None) -> list[HsmKey]:
        statement = select(t.hsm_keys).order_by(t.hsm_keys.c.created_at, t.hsm_keys.c.id)
        if credential_id is not None:
            statement = statement.where(t.hsm_keys.c.credential_id == credential_id)
        if states:
            statement = statement.where(t.hsm_keys.c.state.in_(list(states)))
        return [from_row(HsmKey, row) for row in await self._all(statement)]

    # Four-eyes changes
    async def insert_admin_change(self, **values: Any) -> None:
        await self.connection.execute(insert(t.admin_changes).values(**values))

    async def admin_change(self, change_id: str, *, for_update: bool = False) -> AdminChange | None:
        statement = select(t.admin_changes).where(t.admin_changes.c.id == change_id)
        row = await self._one(self._for_update(statement) if for_update else statement)
        return from_row(AdminChange, row) if row else None

    async def admin_changes(self, *, states: Sequence[str] | None = None, limit: int = 100) -> list[AdminChange]:
        columns = t.admin_changes.c
        statement = select(t.admin_changes).order_by(columns.requested_at.desc(), columns.id).limit(limit)
        if states:
            statement = statement.where(columns.state.in_(list(states)))
        return [from_row(AdminChange, row) for row in await self._all(statement)]

    async def update_admin_change(self, change_id: str, expected_state: str, **values: Any) -> bool:
        """Compare-and-set: change it only if it is still in ``expected_state``."""
        columns = t.admin_changes.c
        result = await self.connection.execute(
            update(t.admin_changes).where(columns.id == change_id, columns.state == expected_state).values(**values)
        )
        return result.rowcount == 1

    # Policy versions
    async def current_policy_version(self) -> PolicyVersion | None:
        statement = select(t.policy_versions).order_by(t.policy_versions.c.version.desc()).limit(1)
        row = await self._one(statement)
        return from_row(PolicyVersion, row) if row else None

    async def current_policy_number(self) -> int | None:
        return (await self.connection.execute(select(func.max(t.policy_versions.c.version)))).scalar_one()

    async def policy_version(self, version: int) -> PolicyVersion | None:
        row = await self._one(select(t.policy_versions).where(t.policy_versions.c.version == version))
        return from_row(PolicyVersion, row) if row else None

    async def policy_versions(self, limit: int = 100) -> list[PolicyVersion]:
        statement = select(t.policy_versions).order_by(t.policy_versions.c.version.desc()).limit(limit)
        return [from_row(PolicyVersion, row) for row in await self._all(statement)]

    async def insert_policy_version(self, **values: Any) -> None:
        await self.connection.execute(insert(t.policy_versions).values(**values))

    # Key usage counters
    async def key_usage(self, credential_id: str, application_id: str, period: str) -> int:
        return (await self.key_usages(credential_id, [(application_id, period)]))[(application_id, period)]

    async def key_usages(self, credential_id: str,
                         counters: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Read several counters of one credential in one statement: (application id, period) -> count."""
        params: dict[str, Any] = {"for_credential": credential_id}
        for number, (application, period) in enumerate(counters):
            params[f"application_{number}"] = application
            params[f"period_{number}"] = period
        result = await self.connection.execute(_key_usage_select(len(counters)), params)
        found = {(application, period): int(count) for application, period, count in result.all()}
        return {counter: found.get(counter, 0) for counter in counters}

    async def add_key_usages(self, credential_id: str, additions: Sequence[tuple[str, str, int | None]],
                             count: int, existing: set[tuple[str, str]]) -> list[tuple[str, str]]:
        """Add ``count`` to each (application id, period, limit) counter that stays within its limit.

        ``existing`` names the counters that have a row, as read in this
        transaction. The others are created at 0 first, and a row another
        transaction created meanwhile is kept. One UPDATE then raises every
        counter whose limit allows it, so on PostgreSQL a concurrent
        transaction cannot push a counter past its limit. Returns the
        counters not raised, in the order of ``additions``: when there are
        any, the caller must roll back the ones that were.
        """
        missing = [{"credential_id": credential_id, "application_id": application, "period": period, "count": 0}
                   for application, period, _ in additions if (application, period) not in existing]
        if missing:
            await self.connection.execute(self._insert_ignoring_duplicates(t.key_usage), missing)
        params: dict[str, Any] = {"for_credential": credential_id, "added": count}
        for number, (application, period, limit) in enumerate(additions):
            params[f"application_{number}"] = application
            params[f"period_{number}"] = period
            if limit is not None:
                params[f"limit_{number}"] = limit
        statement = _key_usage_update(tuple(limit is not None for _, _, limit in additions))
        raised = {(application, period) for application, period in (await self.connection.execute(statement, params))}
        return [(application, period) for application, period, _ in additions if (application, period) not in raised]

    def _insert_ignoring_duplicates(self, table: Any) -> Any:
        if self.is_sqlite:
            return sqlite_insert(table).on_conflict_do_nothing()
        return postgresql_insert(table).on_conflict_do_nothing()
