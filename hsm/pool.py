"""A bounded, thread-safe pool of logged-in PKCS#11 sessions.

PKCS#11 login state belongs to the application, not to one session: one
C_Login makes every session of the process on that token a user session,
and C_Logout from any of them ends it for all. The pool therefore keeps one
extra "login session" outside the pool that performs C_Login and is closed
last. The pooled sessions are opened without a PIN, so python-pkcs11 never
calls C_Logout when one of them is closed.

One borrowed session serves one thread at a time. Calls into the module
are serialised by :func:`hsm.library.module_lock`, so ``pool_size`` bounds
the threads holding a session, not parallel token operations.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import pkcs11
import structlog
from pkcs11 import ObjectClass
from pkcs11.exceptions import (
    DeviceError,
    DeviceMemory,
    DeviceRemoved,
    GeneralError,
    MultipleObjectsReturned,
    NoSuchKey,
    PinExpired,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    SessionClosed,
    SessionHandleInvalid,
    TokenNotPresent,
    TokenNotRecognised,
    UserAlreadyLoggedIn,
    UserNotLoggedIn,
)
from pkcs11.types import Key

from hsm.errors import AmbiguousTokenError, HsmUnavailable, KeyNotFound
from hsm.inventory import OBJECT_CLASS_NAMES, describe_object
from hsm.library import describe_error, library_epoch, module_lock

__all__ = ["LoginRejected", "PoolClosed", "PoolStale", "PooledSession", "SessionPool", "is_session_fault"]

log = structlog.get_logger(__name__)

# Errors after which the sessions, the login or the device can no longer be
# trusted. The pool is dropped and opened again. A bare PKCS11Error is
# included because python-pkcs11 raises it for CKR_CRYPTOKI_NOT_INITIALIZED
# and for vendor-defined codes, which network HSMs use for lost connections.
SESSION_FAULTS: tuple[type[PKCS11Error], ...] = (
    DeviceError,
    DeviceMemory,
    DeviceRemoved,
    GeneralError,
    SessionClosed,
    SessionHandleInvalid,
    TokenNotPresent,
    TokenNotRecognised,
    UserNotLoggedIn,
)

PIN_ERRORS: tuple[type[PKCS11Error], ...] = (PinExpired, PinIncorrect, PinInvalid, PinLenRange, PinLocked)

def is_session_fault(exc: BaseException) -> bool:
    """Return whether ``exc`` means the session pool must be opened again."""
    return isinstance(exc, SESSION_FAULTS) or type(exc) is PKCS11Error


class PoolClosed(Exception):
    """The pool was closed while a thread waited for one of its sessions."""


class PoolStale(Exception):
    """The module was re-initialised after the pool opened, so its handles are void."""


class LoginRejected(HsmUnavailable):
    """The token rejected the user PIN; the pool does not retry the login."""


class PooledSession:
    """One session of the pool with its cache of key objects by CKA_ID.

    Object handles stay valid for the session's lifetime, so the cache saves a
    C_FindObjects round trip per operation. It lives and dies with the session.
    """

    def __init__(self, session: pkcs11.Session) -> None:
        self.session = session
        self._keys: dict[tuple[ObjectClass, bytes], Key] = {}

    def key(self, object_class: ObjectClass, key_id: bytes) -> Key:
        """Return the one key of ``object_class`` with CKA_ID ``key_id``, from the cache when possible."""
        cache_key = (object_class, key_id)
        cached = self._keys.get(cache_key)
        if cached is not None:
            return cached

        try:
            key = self.session.get_key(object_class=object_class, id=key_id)
        except NoSuchKey as exc:
            raise KeyNotFound(key_id, OBJECT_CLASS_NAMES[object_class]) from exc
        except MultipleObjectsReturned as exc:
            template = {pkcs11.Attribute.CLASS: object_class, pkcs11.Attribute.ID: key_id}
            objects = tuple(describe_object(found) for found in self.session.get_objects(template))
            names = "; ".join(str(found) for found in objects)
            class_name = OBJECT_CLASS_NAMES[object_class]
            raise AmbiguousTokenError(
                f"{len(objects)} {class_name} objects share CKA_ID {key_id.hex()}: {names}; "
                "remove or relabel the extra objects",
                objects,
            ) from exc

        self._keys[cache_key] = key
        return key

    def forget_key(self, object_class: ObjectClass, key_id: bytes) -> None:
        self._keys.pop((object_class, key_id), None)


class SessionPool:
    """``size`` read/write sessions on one token, opened after one login."""

    def __init__(self, token: pkcs11.Token, user_pin: str, size: int, module_path: str) -> None:
        self.token = token
        self.token_label = token.label
        self.size = size
        self._module_path = module_path
        # Taken before any session opens, so that a re-initialisation during
        # the opening already makes the pool stale.
        self._epoch = library_epoch(module_path)
        self._condition = threading.Condition()
        self._idle: deque[PooledSession] = deque()
        # Every session of the pool, idle or borrowed, so that a destroyed key
        # can be dropped from all their caches.
        self._sessions: list[PooledSession] = []
        self._closed = False
        with module_lock(module_path):
            self._login_session = _log_in(token, user_pin)
            try:
                for _ in range(size):
                    pooled = PooledSession(token.open(rw=True))
                    self._sessions.append(pooled)
                    self._idle.append(pooled)
            except PKCS11Error:
                self.close()
                raise

    @contextmanager
    def borrow(self, timeout: float) -> Iterator[PooledSession]:
        """Lend an idle session for the ``with`` block, waiting at most ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while not self._idle and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise HsmUnavailable(
                        f"no free session on token {self.token_label!r} within {timeout} s; "
                        f"all {self.size} sessions are busy or the token does not respond"
                    )
                self._condition.wait(remaining)
            if self._closed:
                raise PoolClosed
            if self.is_stale():
                raise PoolStale
            pooled = self._idle.popleft()

        try:
            yield pooled
        finally:
            self._release(pooled)

    def try_borrow(self) -> PooledSession | None:
        """Take an idle session without waiting, or return None; return it with :meth:`release`."""
        with self._condition:
            if self._closed or self.is_stale() or not self._idle:
                return None
            return self._idle.popleft()

    def release(self, pooled: PooledSession) -> None:
        self._release(pooled)

    def forget_key_in_all_sessions(self, object_class: ObjectClass, key_id: bytes) -> None:
        """Drop the cached key object of ``key_id`` from every session, idle or borrowed.

        Call it with the module lock held: every cache lookup runs under that
        lock, so no session reads its cache meanwhile.
        """
        for pooled in self._sessions:
            pooled.forget_key(object_class, key_id)

    def is_stale(self) -> bool:
        """Return whether the module was re-initialised since this pool opened."""
        return library_epoch(self._module_path) != self._epoch

    def close(self) -> None:
        """Close idle sessions now, then the login session; borrowed sessions close when returned.

        A stale pool forgets its sessions instead, because its handle numbers
        may now belong to sessions of another pool.
        """
        with self._condition:
            if self._closed:
                return
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            self._condition.notify_all()

        if self.is_stale():
            return
        with module_lock(self._module_path):
            for pooled in idle:
                _close_quietly(pooled.session)
            # Last, because closing the login session logs every session of the process out.
            _close_quietly(self._login_session)

    def abandon(self) -> None:
        """Forget every session without closing it.

        Used in a forked child, where the parent's session handles mean
        nothing and closing them could close the child's own sessions that
        happen to reuse the same handle numbers.
        """
        with self._condition:
            self._closed = True
            self._idle.clear()
            self._condition.notify_all()

    def _release(self, pooled: PooledSession) -> None:
        with self._condition:
            if not self._closed:
                self._idle.append(pooled)
                self._condition.notify()
                return
        if not self.is_stale():
            with module_lock(self._module_path):
                _close_quietly(pooled.session)


def _log_in(token: pkcs11.Token, user_pin: str) -> pkcs11.Session:
    try:
        return token.open(rw=True, user_pin=user_pin)
    except UserAlreadyLoggedIn:
        # Another Hsm of this process is logged in to the token already, and
        # login state is shared, so a session without a PIN is a user session.
        # NOTE: python-pkcs11 0.10 leaves the session it opened for the failed
        # C_Login open; it is closed only by C_Finalize or process exit.
        log.info("hsm.login.already_logged_in", token_label=token.label)
        return token.open(rw=True)
    except PIN_ERRORS as exc:
        raise LoginRejected(
            f"token {token.label!r} rejected the user PIN ({type(exc).__name__}); "
            "fix user_pin and call Hsm.open() again"
        ) from exc


def _close_quietly(session: pkcs11.Session) -> None:
    try:
        session.close()
    except PKCS11Error as exc:
        # Expected after a fault: the handle is often invalid already.
        log.debug("hsm.session.close_failed", error=describe_error(exc))
