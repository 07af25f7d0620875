"""PKCS#11 layer of signserver: token lookup, session pool, key generation, signing and secret wrapping.

This package does not import the service. It talks to any PKCS#11 module
through python-pkcs11 and is tested against SoftHSM2. A process that forks
must call :meth:`Hsm.open` in the child.
"""

from hsm.config import HsmConfig
from hsm.errors import (
    AmbiguousTokenError,
    HsmError,
    HsmUnavailable,
    InvalidSecretBlob,
    KeyAlreadyExists,
    KeyNotFound,
    TokenNotFound,
    TokenObject,
)
from hsm.softhsm import init_softhsm_token, write_softhsm_config
from hsm.token import Hsm

__all__ = [
    "AmbiguousTokenError",
    "Hsm",
    "HsmConfig",
    "HsmError",
    "HsmUnavailable",
    "InvalidSecretBlob",
    "KeyAlreadyExists",
    "KeyNotFound",
    "TokenNotFound",
    "TokenObject",
    "init_softhsm_token",
    "write_softhsm_config",
]
