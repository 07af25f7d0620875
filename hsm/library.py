"""Loading the PKCS#11 module, serialising calls into it, and finding the token.

python-pkcs11 0.10 always calls C_Initialize with NULL_PTR arguments. Under
the PKCS#11 rules the application thereby promises never to call the module
from two threads at once, and SoftHSM 2.6 then runs without its internal
mutexes. Concurrent calls then abort the process, as this package's
concurrent-sign test did before the lock existed. Every call into a module therefore holds that
module's :func:`module_lock`. C_Sign still runs without the GIL, so other
Python threads, such as an asyncio event loop, keep running meanwhile.

PKCS#11 leaves a forked child without a usable library: the child must call
C_Initialize itself, and sessions and object handles inherited from the
parent are not valid in it. python-pkcs11 keeps one loaded ``pkcs11.lib`` per
module path per process and does not notice a fork, so :func:`load_library`
re-initialises the module the first time it is used in a child.
"""

from __future__ import annotations

import os
import threading

import pkcs11
import structlog
from pkcs11.exceptions import MultipleTokensReturned, NoSuchToken, PKCS11Error

from hsm.errors import AmbiguousTokenError, HsmUnavailable, TokenNotFound

__all__ = [
    "describe_error",
    "find_token",
    "is_not_initialized",
    "library_epoch",
    "load_library",
    "module_lock",
    "reinitialize_library",
]

log = structlog.get_logger(__name__)

# Module path -> id of the process that last called C_Initialize on it through this package.
_initialized_in: dict[str, int] = {}

# Module path -> number of re-initialisations in this process. C_Finalize voids
# every session and object handle, and the module hands out the same handle
# numbers again afterwards, so a pool opened in an earlier epoch must never use
# or close its handles: they may name another pool's new sessions.
_epochs: dict[str, int] = {}

# Module path -> the pkcs11.lib this package loaded, to notice a C_Finalize made elsewhere.
_libraries: dict[str, pkcs11.lib] = {}

_module_locks: dict[str, threading.RLock] = {}
_module_locks_guard = threading.Lock()


def module_lock(module_path: str) -> threading.RLock:
    """Return the lock that every call into the module at ``module_path`` must hold."""
    with _module_locks_guard:
        lock = _module_locks.get(module_path)
        if lock is None:
            lock = _module_locks[module_path] = threading.RLock()
        return lock


def _reset_locks_in_child() -> None:
    # A lock held by another thread at fork time would never be released in
    # the child, where only the forking thread exists.
    global _module_locks_guard
    _module_locks_guard = threading.Lock()
    _module_locks.clear()


os.register_at_fork(after_in_child=_reset_locks_in_child)


def load_library(module_path: str) -> pkcs11.lib:
    """Load and initialise the PKCS#11 module, re-initialising it after a fork."""
    with module_lock(module_path):
        known = _libraries.get(module_path)
        if known is not None and not known.initialized:
            # Someone called C_Finalize, and pkcs11.lib() below calls
            # C_Initialize again, which voids every handle of the old epoch.
            _epochs[module_path] = library_epoch(module_path) + 1
        try:
            library = pkcs11.lib(module_path)
        except PKCS11Error as exc:
            raise HsmUnavailable(f"cannot load PKCS#11 module {module_path}: {exc}") from exc
        _libraries[module_path] = library

        pid = os.getpid()
        initialized_in = _initialized_in.setdefault(module_path, pid)
        if initialized_in != pid:
            reinitialize_library(library, module_path)
            log.info("hsm.library.reinitialized", module_path=module_path, reason="fork", parent_pid=initialized_in)
    return library


def library_epoch(module_path: str) -> int:
    """Return how many times this process re-initialised the module at ``module_path``."""
    return _epochs.get(module_path, 0)


def reinitialize_library(library: pkcs11.lib, module_path: str) -> None:
    """Call C_Finalize, ignoring its failure, then C_Initialize, and start a new epoch.

    C_Finalize fails with CKR_CRYPTOKI_NOT_INITIALIZED in a forked child or
    after the module lost its state. python-pkcs11 marks the library as
    finalised even then, so the following C_Initialize runs.
    """
    with module_lock(module_path):
        # The epoch changes first, so that no pool uses an old handle once
        # C_Initialize can hand the same numbers out again.
        _epochs[module_path] = library_epoch(module_path) + 1
        try:
            library.finalize()
        except PKCS11Error:
            pass
        try:
            library.initialize()
        except PKCS11Error as exc:
            raise HsmUnavailable(
                f"C_Initialize failed for PKCS#11 module {module_path}: {describe_error(exc)}"
            ) from exc
        _initialized_in[module_path] = os.getpid()


def find_token(library: pkcs11.lib, token_label: str) -> pkcs11.Token:
    """Return the one token labelled ``token_label``."""
    try:
        return library.get_token(token_label=token_label)
    except NoSuchToken as exc:
        raise TokenNotFound(
            f"no token labelled {token_label!r} in any slot; initialise it or fix token_label"
        ) from exc
    except MultipleTokensReturned as exc:
        raise AmbiguousTokenError(
            f"more than one token is labelled {token_label!r}; relabel or remove the extra tokens"
        ) from exc
    except PKCS11Error as exc:
        raise HsmUnavailable(f"cannot list tokens to find {token_label!r}: {describe_error(exc)}") from exc


def is_not_initialized(exc: BaseException) -> bool:
    """Return whether ``exc`` is CKR_CRYPTOKI_NOT_INITIALIZED.

    python-pkcs11 0.10 has no class for that code and raises a bare
    PKCS11Error whose message contains "not initialized".
    """
    return type(exc) is PKCS11Error and "not initialized" in str(exc)


def describe_error(exc: PKCS11Error) -> str:
    """Name a python-pkcs11 error by class, adding its message when there is one."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
