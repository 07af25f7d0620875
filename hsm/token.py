"""The :class:`Hsm` facade: key generation, signing and secret wrapping on one token.

Every call borrows a logged-in session from a :class:`hsm.pool.SessionPool`.
When the session, login or device fails during a call, the pool is dropped.
It is opened again, with a new login, after a short back-off and at most
once per call (see :meth:`Hsm._run`). While reopening keeps failing, the
wait between attempts doubles up to ``MAX_REOPEN_BACKOFF_SECONDS``, and calls
made during a wait raise HsmUnavailable at once instead of waiting.

Processes that fork: a child must call :meth:`Hsm.open` itself, after the
fork. Sessions opened in the parent are not valid in the child, and an
``Hsm`` opened in the parent raises HsmUnavailable when used in the child
until ``open()`` is called there.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import structlog
from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import KeyHandleInvalid, ObjectHandleInvalid, PKCS11Error
from pkcs11.types import SignMixin

from hsm import inventory, keygen, wrapping
from hsm.config import HsmConfig
from hsm.errors import HsmError, HsmUnavailable, KeyNotFound
from hsm.library import describe_error, find_token, load_library, module_lock, reinitialize_library
from hsm.mechanisms import CURVES, sign_mechanism
from hsm.pool import LoginRejected, PoolClosed, PooledSession, PoolStale, SessionPool, is_session_fault
from hsm.public_keys import subject_public_key_info

__all__ = ["Hsm"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Wait between a session fault and the next attempt to open sessions, so that
# a failing token is not hammered by every waiting thread. A call sleeps
# through this first wait, so that one lost session costs it no error.
REOPEN_BACKOFF_SECONDS = 0.2

# Maximum wait between two failed attempts to reopen. Each failure doubles the
# wait, starting from REOPEN_BACKOFF_SECONDS, so C_Initialize runs at most once
# per this many seconds while the token stays away.
MAX_REOPEN_BACKOFF_SECONDS = 5.0

# A call moves to a newer pool when another thread replaced the one it
# waited on; past this many moves it gives up with HsmUnavailable.
MAX_POOL_SWITCHES = 5


class Hsm:
    """One PKCS#11 token reached through a pool of logged-in sessions.

    All methods are thread-safe. Token operations of one process run one at
    a time (see :mod:`hsm.library` for why), and C_Sign runs with the GIL
    released, so an event loop that awaits ``sign`` in an executor keeps
    serving other requests. Use several processes for parallel signing.
    """

    def __init__(self, config: HsmConfig) -> None:
        self._config = config
        # Guards _pool, _library, _is_open, _pid and the reopen state.
        self._lock = threading.Lock()
        # Guards _available and _down_since. Separate from _lock, which a reopen holds for a while.
        self._state_lock = threading.Lock()
        # Makes the "no object with this id or label" check and the key
        # generation one step for the threads of this process.
        self._generate_lock = threading.Lock()
        self._library: Any = None
        self._pool: SessionPool | None = None
        self._is_open = False
        self._pid: int | None = None
        self._login_rejected: LoginRejected | None = None
        self._reopen_not_before = 0.0
        # Failed reopen attempts since the pool was last open; sets the back-off.
        self._reopen_failures = 0
        # The outcome of the last call or probe, for readiness checks.
        self._available = False
        self._down_since: float | None = None

    # Lifecycle

    def open(self) -> None:
        """Load the module, find the token, open ``pool_size`` sessions after one login, check the token.

        Raises TokenNotFound, HsmUnavailable (module, session or login
        failure) or AmbiguousTokenError. Calling ``open()`` again replaces the
        pool; in a forked child that is how the ``Hsm`` becomes usable.
        """
        self._replace_locks_after_fork()
        with self._lock:
            self._discard_pool_locked()
            self._is_open = False
            self._library = load_library(self._config.module_path)
            self._login_rejected = None
            self._pool = self._open_pool_locked()
            self._pid = os.getpid()
            self._is_open = True
            self._reopen_failures = 0
            self._reopen_not_before = 0.0

        with self._state_lock:
            self._available = True
            self._down_since = None

        try:
            self.check_unambiguous()
        except HsmError:
            self.close()
            raise
        log.info(
            "hsm.opened",
            token_label=self._config.token_label,
            module_path=self._config.module_path,
            pool_size=self._config.pool_size,
        )

    def close(self) -> None:
        """Close idle sessions and log out; sessions still borrowed close when their call ends."""
        self._replace_locks_after_fork()
        with self._lock:
            was_open = self._is_open
            self._is_open = False
            self._discard_pool_locked()
        with self._state_lock:
            self._available = False
        if was_open:
            log.info("hsm.closed", token_label=self._config.token_label)

    def __enter__(self) -> Hsm:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # Keys

    def generate_rsa_key(self, key_id: bytes, label: str, bits: int) -> bytes:
        """Generate an RSA signing key pair on the token and return the public key as SPKI DER."""
        _validate_new_key(key_id, label)
        if bits not in keygen.RSA_KEY_SIZES:
            raise ValueError(f"bits must be one of {', '.join(map(str, keygen.RSA_KEY_SIZES))}, got {bits}")
        return self._generate("RSA", key_id, label, lambda session: keygen.generate_rsa(session, key_id, label, bits))

    def generate_ec_key(self, key_id: bytes, label: str, curve: str) -> bytes:
        """Generate an EC signing key pair on ``curve`` ("P-256" or "P-384") and return SPKI DER."""
        _validate_new_key(key_id, label)
        if curve not in CURVES:
            raise ValueError(f"curve must be one of {', '.join(CURVES)}, got {curve!r}")
        return self._generate("EC", key_id, label, lambda session: keygen.generate_ec(session, key_id, label, curve))

    def generate_secret_key(self, key_id: bytes, label: str) -> None:
        """Generate the AES-256 key that wraps stored secrets such as TOTP seeds."""
        _validate_new_key(key_id, label)
        self._generate("AES", key_id, label, lambda session: keygen.generate_secret(session, key_id, label))

    def destroy_key_pair(self, key_id: bytes) -> int:
        """Destroy the private and public key objects with CKA_ID ``key_id`` and return how many were destroyed.

        Returns 0 when the token has neither, so a repeated call is harmless.
        Other objects with that CKA_ID, such as a secret key or a
        certificate, are left alone. Raises ValueError for an empty
        ``key_id`` and HsmUnavailable.
        """
        if not isinstance(key_id, bytes) or not key_id:
            raise ValueError("key_id must be non-empty bytes (the CKA_ID of the key pair)")

        def destroy(pooled: PooledSession) -> int:
            destroyed = 0
            for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                for found in list(pooled.session.get_objects({Attribute.CLASS: object_class, Attribute.ID: key_id})):
                    found.destroy()
                    destroyed += 1
                self._forget_key_in_all_sessions(object_class, key_id)
            return destroyed

        destroyed = self._run("destroy_key_pair", destroy)
        log.info("hsm.key.destroyed", key_id=key_id.hex(), objects=destroyed)
        return destroyed

    def public_key(self, key_id: bytes) -> bytes:
        """Return the SubjectPublicKeyInfo DER of the public key with CKA_ID ``key_id``."""

        def read_public_key(pooled: PooledSession) -> bytes:
            return _use_key(pooled, ObjectClass.PUBLIC_KEY, key_id, subject_public_key_info)

        return self._run("public_key", read_public_key)

    def key_type(self, key_id: bytes) -> str:
        """Return "RSA" or "EC" for the private key with CKA_ID ``key_id``."""

        def read_key_type(pooled: PooledSession) -> str:
            key = pooled.key(ObjectClass.PRIVATE_KEY, key_id)
            name = inventory.key_type_name(key.key_type)
            if name not in ("RSA", "EC"):
                raise HsmError(f"private key CKA_ID={key_id.hex()} has key type {name}; only RSA and EC are supported")
            return name

        return self._run("key_type", read_key_type)

    def find_key_ids(self) -> list[tuple[bytes, str, str]]:
        """List (CKA_ID, CKA_LABEL, key type) of every private key on the token, sorted by CKA_ID."""
        return self._run("find_key_ids", lambda pooled: inventory.find_key_ids(pooled.session))

    def check_unambiguous(self) -> None:
        """Raise AmbiguousTokenError if two objects of one class share a CKA_ID or a CKA_LABEL."""
        self._run("check_unambiguous", lambda pooled: inventory.check_unambiguous(pooled.session))

    # Operations

    def sign(
        self,
        key_id: bytes,
        mechanism: str,
        data: bytes,
        *,
        pss_hash: str | None = None,
        pss_salt_len: int | None = None,
    ) -> bytes:
        """Sign ``data`` with the private key with CKA_ID ``key_id`` and return the signature.

        ``mechanism`` is "RSA_PKCS" (``data`` is a DER DigestInfo), "RSA_PKCS_PSS"
        (``data`` is the digest; MGF1 uses ``pss_hash``, and the salt length
        defaults to the digest size) or "ECDSA" (``data`` is the digest; the
        result is r || s as the token returns it). Raises ValueError for
        arguments that do not fit the mechanism or the key, KeyNotFound, and
        HsmUnavailable.
        """
        chosen = sign_mechanism(mechanism, data, pss_hash, pss_salt_len)

        def sign_with_key(key: Any) -> bytes:
            if key.key_type != chosen.key_type:
                raise ValueError(
                    f"mechanism {chosen.name} needs a key of type {chosen.key_type.name}, "
                    f"but private key CKA_ID={key_id.hex()} is {inventory.key_type_name(key.key_type)}"
                )
            if not isinstance(key, SignMixin):
                raise HsmError(f"private key CKA_ID={key_id.hex()} has CKA_SIGN false and cannot sign")
            return key.sign(data, mechanism=chosen.mechanism, mechanism_param=chosen.param)

        return self._run("sign", lambda pooled: _use_key(pooled, ObjectClass.PRIVATE_KEY, key_id, sign_with_key))

    def sign_many(
        self,
        key_id: bytes,
        mechanism: str,
        items: list[bytes],
        *,
        pss_hash: str | None = None,
        pss_salt_len: int | None = None,
    ) -> list[bytes]:
        """Sign each of ``items`` as :meth:`sign` does, on one borrowed session, and return the signatures in order.

        One call for a batch saves a thread hand-over and a session borrow per
        signature. After a session fault the whole batch is signed again on
        new sessions; the signatures of the failed attempt are never returned.
        """
        if not items:
            return []
        chosen = [sign_mechanism(mechanism, data, pss_hash, pss_salt_len) for data in items]

        def sign_all(key: Any) -> list[bytes]:
            if key.key_type != chosen[0].key_type:
                raise ValueError(
                    f"mechanism {chosen[0].name} needs a key of type {chosen[0].key_type.name}, "
                    f"but private key CKA_ID={key_id.hex()} is {inventory.key_type_name(key.key_type)}"
                )
            if not isinstance(key, SignMixin):
                raise HsmError(f"private key CKA_ID={key_id.hex()} has CKA_SIGN false and cannot sign")
            return [key.sign(data, mechanism=choice.mechanism, mechanism_param=choice.param)
                    for data, choice in zip(items, chosen)]

        return self._run("sign", lambda pooled: _use_key(pooled, ObjectClass.PRIVATE_KEY, key_id, sign_all))

    def encrypt_secret(self, key_id: bytes, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` with AES-GCM under the secret key ``key_id``; return iv || ciphertext || tag."""

        def encrypt(pooled: PooledSession) -> bytes:
            return _use_key(pooled, ObjectClass.SECRET_KEY, key_id, lambda key: wrapping.encrypt_secret(key, plaintext))

        return self._run("encrypt_secret", encrypt)

    def decrypt_secret(self, key_id: bytes, blob: bytes) -> bytes:
        """Decrypt a blob from :meth:`encrypt_secret`; raise InvalidSecretBlob if it was altered."""

        def decrypt(pooled: PooledSession) -> bytes:
            return _use_key(
                pooled,
                ObjectClass.SECRET_KEY,
                key_id,
                lambda key: wrapping.decrypt_secret(pooled.session, key, blob),
            )

        return self._run("decrypt_secret", decrypt)

    @property
    def available(self) -> bool:
        """Whether the last call or probe reached the token.

        A call that raised HsmUnavailable makes it False, and a call or probe
        that succeeded makes it True again. It is False before :meth:`open`
        and after :meth:`close`. Reading it does not touch the token.
        """
        return self._available

    def probe(self) -> bool:
        """Check that the token responds: C_GetTokenInfo, then C_GenerateRandom on an idle session.

        Reopens a dropped pool like any other call, back-off included, so a
        probe made while reopening waits returns False without reaching the
        token. Returns False on any failure and never raises. Updates
        :attr:`available`, logging only its changes, because keep-alive and
        readiness checks call it every few seconds.
        """
        pool: SessionPool | None = None
        try:
            pool, _ = self._pool_for_call(may_reopen=True)
            with module_lock(self._config.module_path):
                token_info = pool.token.slot.get_token()
            if token_info.label != self._config.token_label:
                raise HsmUnavailable(
                    f"the slot now contains token {token_info.label!r} instead of {self._config.token_label!r}"
                )

            # When every session is busy, the token is evidently responding.
            pooled = pool.try_borrow()
            if pooled is not None:
                try:
                    with module_lock(self._config.module_path):
                        pooled.session.generate_random(64)
                finally:
                    pool.release(pooled)
        except PKCS11Error as exc:
            if pool is not None and is_session_fault(exc):
                self._drop_pool(pool, "probe", describe_error(exc))
            return self._record_availability(False, describe_error(exc))
        except HsmError as exc:
            return self._record_availability(False, str(exc))
        except Exception as exc:  # noqa: BLE001 - probe() must never raise
            log.exception("hsm.probe.error", token_label=self._config.token_label)
            return self._record_availability(False, repr(exc))
        return self._record_availability(True, None)

    # Internals

    def _run(self, operation: str, action: Callable[[PooledSession], T], *, retry: bool = True) -> T:
        """Run ``action`` on a borrowed session, reopening the pool at most once after a session fault.

        Other PKCS#11 errors become HsmError naming ``operation``. With
        ``retry=False`` the call still reopens a pool that an earlier call
        dropped, but after a fault of its own it drops the pool and raises
        without repeating the action. Updates :attr:`available`.
        """
        try:
            result = self._run_with_reopen(operation, action, retry=retry)
        except HsmUnavailable as exc:
            self._record_availability(False, str(exc))
            raise
        self._record_availability(True, None)
        return result

    def _run_with_reopen(self, operation: str, action: Callable[[PooledSession], T], *, retry: bool) -> T:
        reopened = False
        for _ in range(MAX_POOL_SWITCHES):
            pool, reopened_now = self._pool_for_call(may_reopen=not reopened)
            reopened = reopened or reopened_now
            try:
                with pool.borrow(self._config.borrow_timeout) as pooled, module_lock(self._config.module_path):
                    try:
                        return action(pooled)
                    except KeyNotFound:
                        # SoftHSM 2.6 finds no objects once its token directory
                        # is gone, so check that the token is still there:
                        # C_GetTokenInfo then fails with a session fault.
                        pool.token.slot.get_token()
                        raise
            except PoolClosed:
                continue
            except PoolStale:
                self._drop_pool(pool, operation, "module re-initialised")
                continue
            except PKCS11Error as exc:
                message = f"{operation} failed on token {self._config.token_label!r}: {describe_error(exc)}"
                if not is_session_fault(exc):
                    raise HsmError(message) from exc
                self._drop_pool(pool, operation, describe_error(exc))
                if reopened or not retry:
                    raise HsmUnavailable(message) from exc
        raise HsmUnavailable(
            f"{operation} failed: the session pool of token {self._config.token_label!r} "
            f"was replaced {MAX_POOL_SWITCHES} times during the call"
        )

    def _generate(self, key_kind: str, key_id: bytes, label: str, create: Callable[[Any], T]) -> T:
        # No retry after a fault: the first C_GenerateKeyPair may have created
        # the key even though its reply was lost.
        def reject_existing_then_create(pooled: PooledSession) -> T:
            keygen.reject_existing(pooled.session, key_id, label)
            return create(pooled.session)

        # NOTE: the lock covers this process only. Two processes generating the
        # same key id at once can both pass the check; check_unambiguous()
        # reports the result at the next open().
        with self._generate_lock:
            result = self._run(f"generate {key_kind} key", reject_existing_then_create, retry=False)
        log.info("hsm.key.generated", key_id=key_id.hex(), label=label, key_type=key_kind)
        return result

    def _pool_for_call(self, *, may_reopen: bool) -> tuple[SessionPool, bool]:
        """Return the current pool and whether this call opened it."""
        with self._lock:
            if not self._is_open:
                raise HsmUnavailable("Hsm is not open; call open() first")
            if self._pid != os.getpid():
                raise HsmUnavailable(
                    f"Hsm was opened in process {self._pid}; call open() again in process {os.getpid()} after fork"
                )
            if self._pool is not None and self._pool.is_stale():
                self._discard_pool_locked()
                log.warning(
                    "hsm.session_pool.dropped", token_label=self._config.token_label, error="module re-initialised"
                )
            if self._pool is not None:
                return self._pool, False
            if self._login_rejected is not None:
                raise HsmUnavailable(str(self._login_rejected)) from self._login_rejected
            if not may_reopen:
                raise HsmUnavailable(
                    f"the session pool of token {self._config.token_label!r} is down and this call "
                    "may not reopen it again"
                )
            delay = self._reopen_not_before - time.monotonic()
            if delay > 0 and self._reopen_failures > 0:
                raise HsmUnavailable(
                    f"token {self._config.token_label!r} is unavailable after {self._reopen_failures} failed "
                    f"attempts to reopen sessions; the next attempt is in {delay:.1f} s"
                )
            if delay > 0:
                time.sleep(delay)
            self._pool = self._reopen_locked()
            return self._pool, True

    def _reopen_locked(self) -> SessionPool:
        try:
            try:
                pool = self._open_pool_locked()
            except LoginRejected:
                raise
            except HsmError as first_error:
                # Many modules, network HSMs in particular, reconnect only on
                # C_Initialize, and CKR_CRYPTOKI_NOT_INITIALIZED needs it too.
                # It also ends the sessions of any other Hsm on this module in
                # this process; those reopen on their next call.
                log.warning(
                    "hsm.library.reinitializing",
                    token_label=self._config.token_label,
                    error=str(first_error),
                )
                reinitialize_library(self._library, self._config.module_path)
                pool = self._open_pool_locked()
        except LoginRejected as exc:
            self._login_rejected = exc
            log.error("hsm.login.rejected", token_label=self._config.token_label, error=str(exc))
            raise
        except HsmError as exc:
            self._reopen_failures += 1
            backoff = min(REOPEN_BACKOFF_SECONDS * 2**self._reopen_failures, MAX_REOPEN_BACKOFF_SECONDS)
            self._reopen_not_before = time.monotonic() + backoff
            log.warning("hsm.session_pool.reopen_failed", token_label=self._config.token_label, error=str(exc),
                        attempt=self._reopen_failures, retry_in_seconds=round(backoff, 1))
            raise HsmUnavailable(f"cannot reopen sessions on token {self._config.token_label!r}: {exc}") from exc

        self._reopen_failures = 0
        log.info("hsm.session_pool.reopened", token_label=self._config.token_label, pool_size=self._config.pool_size)
        return pool

    def _open_pool_locked(self) -> SessionPool:
        with module_lock(self._config.module_path):
            token = find_token(self._library, self._config.token_label)
        try:
            return SessionPool(token, self._config.user_pin, self._config.pool_size, self._config.module_path)
        except PKCS11Error as exc:
            raise HsmUnavailable(
                f"cannot open {self._config.pool_size} sessions on token {self._config.token_label!r}: "
                f"{describe_error(exc)}"
            ) from exc

    def _drop_pool(self, pool: SessionPool, operation: str, error: str) -> None:
        with self._lock:
            if self._pool is not pool:
                return
            self._pool = None
            self._reopen_not_before = time.monotonic() + REOPEN_BACKOFF_SECONDS
            # Closed under the lock: closing the old login session logs out the
            # whole process, which must happen before a new pool logs in.
            pool.close()
        log.warning(
            "hsm.session_pool.dropped",
            token_label=self._config.token_label,
            operation=operation,
            error=error,
        )

    def _forget_key_in_all_sessions(self, object_class: ObjectClass, key_id: bytes) -> None:
        # Runs inside a token operation, so the module lock is held as the pool
        # requires. self._lock is not taken: _pool_for_call holds it while it
        # reopens a pool, which takes the module lock, so taking it here could
        # deadlock. Reading one attribute is atomic, and a pool replaced
        # meanwhile has empty caches.
        pool = self._pool
        if pool is not None:
            pool.forget_key_in_all_sessions(object_class, key_id)

    def _replace_locks_after_fork(self) -> None:
        if self._pid is not None and self._pid != os.getpid():
            # In a forked child only this thread exists, so a lock that another
            # parent thread held at fork time would never be released.
            self._lock = threading.Lock()
            self._state_lock = threading.Lock()
            self._generate_lock = threading.Lock()

    def _discard_pool_locked(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._pid == os.getpid():
            pool.close()
        else:
            pool.abandon()

    def _record_availability(self, ok: bool, error: str | None) -> bool:
        """Set :attr:`available` to ``ok``, logging ``hsm.up`` or ``hsm.down`` when it changes, and return ``ok``."""
        with self._state_lock:
            if ok == self._available:
                return ok
            self._available = ok
            now = time.monotonic()
            down_since, self._down_since = self._down_since, (None if ok else now)
        if ok:
            down_seconds = None if down_since is None else round(now - down_since, 1)
            log.info("hsm.up", token_label=self._config.token_label, down_seconds=down_seconds)
        else:
            log.warning("hsm.down", token_label=self._config.token_label, error=error)
        return ok


def _use_key(pooled: PooledSession, object_class: ObjectClass, key_id: bytes, use: Callable[[Any], T]) -> T:
    """Call ``use`` with the cached key object, looking the key up again once if its handle went stale."""
    key = pooled.key(object_class, key_id)
    try:
        return use(key)
    except (KeyHandleInvalid, ObjectHandleInvalid):
        # The object was destroyed or replaced since it was cached.
        pooled.forget_key(object_class, key_id)
        return use(pooled.key(object_class, key_id))


def _validate_new_key(key_id: bytes, label: str) -> None:
    if not isinstance(key_id, bytes) or not key_id:
        raise ValueError("key_id must be non-empty bytes (the CKA_ID of the new key)")
    if not isinstance(label, str) or not label:
        raise ValueError("label must be a non-empty string (the CKA_LABEL of the new key)")
