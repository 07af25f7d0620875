"""A minimal PKCS#11 client over ctypes, for the raw signing rate of the token.

python-pkcs11 always calls C_Initialize with NULL_PTR, which promises the
module single-threaded use, so SoftHSM 2.6 then drops its internal mutexes.
This client passes CK_C_INITIALIZE_ARGS with CKF_OS_LOCKING_OK instead, so
several threads may sign at once, each in its own session. ctypes releases
the GIL for the duration of every foreign call.

Types and constants follow the PKCS#11 v2.40 headers (pkcs11t.h, pkcs11f.h)
for an LP64 platform, where CK_ULONG is an unsigned long.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, byref, c_ubyte, c_ulong, c_void_p

__all__ = ["Pkcs11Error", "Pkcs11Module", "CKM_RSA_PKCS", "CKM_ECDSA"]

CK_ULONG = c_ulong
CK_RV = c_ulong
CK_SESSION_HANDLE = c_ulong
CK_OBJECT_HANDLE = c_ulong
CK_SLOT_ID = c_ulong

CKR_OK = 0x000
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
CKR_USER_ALREADY_LOGGED_IN = 0x100

CKF_OS_LOCKING_OK = 0x002
CKF_RW_SESSION = 0x002
CKF_SERIAL_SESSION = 0x004

CKU_USER = 1
CKO_PRIVATE_KEY = 3
CKA_CLASS = 0x000
CKA_ID = 0x102

CKM_RSA_PKCS = 0x0001
CKM_ECDSA = 0x1041

# Large enough for RSA-4096 (512 bytes) and EC P-521 (132 bytes).
MAX_SIGNATURE_BYTES = 1024


class Pkcs11Error(RuntimeError):
    """A PKCS#11 function returned a value other than CKR_OK."""

    def __init__(self, function: str, rv: int) -> None:
        super().__init__(f"{function} failed with CKR 0x{rv:08x}")
        self.function = function
        self.rv = rv


class CK_VERSION(ctypes.Structure):
    _fields_ = [("major", c_ubyte), ("minor", c_ubyte)]


class CK_C_INITIALIZE_ARGS(ctypes.Structure):
    _fields_ = [
        ("CreateMutex", c_void_p),
        ("DestroyMutex", c_void_p),
        ("LockMutex", c_void_p),
        ("UnlockMutex", c_void_p),
        ("flags", CK_ULONG),
        ("pReserved", c_void_p),
    ]


class CK_TOKEN_INFO(ctypes.Structure):
    _fields_ = [
        ("label", c_ubyte * 32),
        ("manufacturerID", c_ubyte * 32),
        ("model", c_ubyte * 16),
        ("serialNumber", c_ubyte * 16),
        ("flags", CK_ULONG),
        ("ulMaxSessionCount", CK_ULONG),
        ("ulSessionCount", CK_ULONG),
        ("ulMaxRwSessionCount", CK_ULONG),
        ("ulRwSessionCount", CK_ULONG),
        ("ulMaxPinLen", CK_ULONG),
        ("ulMinPinLen", CK_ULONG),
        ("ulTotalPublicMemory", CK_ULONG),
        ("ulFreePublicMemory", CK_ULONG),
        ("ulTotalPrivateMemory", CK_ULONG),
        ("ulFreePrivateMemory", CK_ULONG),
        ("hardwareVersion", CK_VERSION),
        ("firmwareVersion", CK_VERSION),
        ("utcTime", c_ubyte * 16),
    ]


class CK_ATTRIBUTE(ctypes.Structure):
    _fields_ = [("type", CK_ULONG), ("pValue", c_void_p), ("ulValueLen", CK_ULONG)]


class CK_MECHANISM(ctypes.Structure):
    _fields_ = [("mechanism", CK_ULONG), ("pParameter", c_void_p), ("ulParameterLen", CK_ULONG)]


def _function(*argtypes: object) -> type:
    return ctypes.CFUNCTYPE(CK_RV, *argtypes)


# The CK_FUNCTION_LIST members in the order of pkcs11f.h. Only the functions
# this client calls get a prototype; the others are placeholders of pointer size.
_CALLED = {
    "C_Initialize": _function(c_void_p),
    "C_Finalize": _function(c_void_p),
    "C_GetSlotList": _function(c_ubyte, POINTER(CK_SLOT_ID), POINTER(CK_ULONG)),
    "C_GetTokenInfo": _function(CK_SLOT_ID, POINTER(CK_TOKEN_INFO)),
    "C_OpenSession": _function(CK_SLOT_ID, CK_ULONG, c_void_p, c_void_p, POINTER(CK_SESSION_HANDLE)),
    "C_CloseSession": _function(CK_SESSION_HANDLE),
    "C_Login": _function(CK_SESSION_HANDLE, CK_ULONG, c_void_p, CK_ULONG),
    "C_FindObjectsInit": _function(CK_SESSION_HANDLE, POINTER(CK_ATTRIBUTE), CK_ULONG),
    "C_FindObjects": _function(CK_SESSION_HANDLE, POINTER(CK_OBJECT_HANDLE), CK_ULONG, POINTER(CK_ULONG)),
    "C_FindObjectsFinal": _function(CK_SESSION_HANDLE),
    "C_SignInit": _function(CK_SESSION_HANDLE, POINTER(CK_MECHANISM), CK_OBJECT_HANDLE),
    "C_Sign": _function(CK_SESSION_HANDLE, c_void_p, CK_ULONG, c_void_p, POINTER(CK_ULONG)),
}
_FUNCTION_NAMES = (
    "C_Initialize C_Finalize C_GetInfo C_GetFunctionList C_GetSlotList C_GetSlotInfo C_GetTokenInfo "
    "C_GetMechanismList C_GetMechanismInfo C_InitToken C_InitPIN C_SetPIN C_OpenSession C_CloseSession "
    "C_CloseAllSessions C_GetSessionInfo C_GetOperationState C_SetOperationState C_Login C_Logout "
    "C_CreateObject C_CopyObject C_DestroyObject C_GetObjectSize C_GetAttributeValue C_SetAttributeValue "
    "C_FindObjectsInit C_FindObjects C_FindObjectsFinal C_EncryptInit C_Encrypt C_EncryptUpdate C_EncryptFinal "
    "C_DecryptInit C_Decrypt C_DecryptUpdate C_DecryptFinal C_DigestInit C_Digest C_DigestUpdate C_DigestKey "
    "C_DigestFinal C_SignInit C_Sign C_SignUpdate C_SignFinal C_SignRecoverInit C_SignRecover C_VerifyInit "
    "C_Verify C_VerifyUpdate C_VerifyFinal C_VerifyRecoverInit C_VerifyRecover C_DigestEncryptUpdate "
    "C_DecryptDigestUpdate C_SignEncryptUpdate C_DecryptVerifyUpdate C_GenerateKey C_GenerateKeyPair C_WrapKey "
    "C_UnwrapKey C_DeriveKey C_SeedRandom C_GenerateRandom C_GetFunctionStatus C_CancelFunction "
    "C_WaitForSlotEvent"
).split()


class CK_FUNCTION_LIST(ctypes.Structure):
    _fields_ = [("version", CK_VERSION)] + [(name, _CALLED.get(name, c_void_p)) for name in _FUNCTION_NAMES]


class Pkcs11Module:
    """One loaded PKCS#11 module, initialised for OS locking, logged in to one token.

    The login session stays open until :meth:`close`, because closing the
    last session of a token logs the application out.
    """

    def __init__(self, module_path: str, token_label: str, user_pin: str) -> None:
        self._library = ctypes.CDLL(module_path)
        function_list = POINTER(CK_FUNCTION_LIST)()
        get_function_list = self._library.C_GetFunctionList
        get_function_list.argtypes = [POINTER(POINTER(CK_FUNCTION_LIST))]
        get_function_list.restype = CK_RV
        _check("C_GetFunctionList", get_function_list(byref(function_list)))
        self._functions = function_list.contents

        arguments = CK_C_INITIALIZE_ARGS(flags=CKF_OS_LOCKING_OK)
        rv = self._functions.C_Initialize(ctypes.cast(byref(arguments), c_void_p))
        if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
            raise Pkcs11Error("C_Initialize", rv)

        self.slot = self._find_slot(token_label)
        self._login_session = self.open_session()
        pin = user_pin.encode()
        pin_buffer = ctypes.create_string_buffer(pin, len(pin))
        rv = self._functions.C_Login(self._login_session, CKU_USER, ctypes.cast(pin_buffer, c_void_p), len(pin))
        if rv not in (CKR_OK, CKR_USER_ALREADY_LOGGED_IN):
            raise Pkcs11Error("C_Login", rv)

    def _find_slot(self, token_label: str) -> int:
        count = CK_ULONG()
        _check("C_GetSlotList", self._functions.C_GetSlotList(1, None, byref(count)))
        slots = (CK_SLOT_ID * count.value)()
        _check("C_GetSlotList", self._functions.C_GetSlotList(1, slots, byref(count)))
        for slot in slots[: count.value]:
            info = CK_TOKEN_INFO()
            _check("C_GetTokenInfo", self._functions.C_GetTokenInfo(slot, byref(info)))
            # CK_TOKEN_INFO.label is blank-padded to 32 bytes, not NUL-terminated.
            if bytes(info.label).decode("utf-8", "replace").rstrip(" ") == token_label:
                return int(slot)
        raise LookupError(f"no token labelled {token_label!r} among {count.value} slot(s) with a token")

    def open_session(self) -> int:
        session = CK_SESSION_HANDLE()
        flags = CKF_SERIAL_SESSION | CKF_RW_SESSION
        _check("C_OpenSession", self._functions.C_OpenSession(self.slot, flags, None, None, byref(session)))
        return session.value

    def close_session(self, session: int) -> None:
        _check("C_CloseSession", self._functions.C_CloseSession(session))

    def find_private_key(self, session: int, key_id: bytes) -> int:
        """Return the handle of the one private key with CKA_ID ``key_id``; raise LookupError otherwise."""
        key_class = CK_ULONG(CKO_PRIVATE_KEY)
        id_buffer = ctypes.create_string_buffer(key_id, len(key_id))
        template = (CK_ATTRIBUTE * 2)(
            CK_ATTRIBUTE(CKA_CLASS, ctypes.cast(byref(key_class), c_void_p), ctypes.sizeof(key_class)),
            CK_ATTRIBUTE(CKA_ID, ctypes.cast(id_buffer, c_void_p), len(key_id)),
        )
        _check("C_FindObjectsInit", self._functions.C_FindObjectsInit(session, template, 2))
        try:
            handles = (CK_OBJECT_HANDLE * 2)()
            found = CK_ULONG()
            _check("C_FindObjects", self._functions.C_FindObjects(session, handles, 2, byref(found)))
        finally:
            _check("C_FindObjectsFinal", self._functions.C_FindObjectsFinal(session))
        if found.value != 1:
            raise LookupError(f"{found.value} private keys with CKA_ID {key_id.hex()}; expected exactly 1")
        return int(handles[0])

    def sign(self, session: int, key: int, mechanism: int, data: bytes) -> bytes:
        """Run C_SignInit and C_Sign with a parameterless ``mechanism`` and return the signature."""
        mechanism_struct = CK_MECHANISM(mechanism, None, 0)
        _check("C_SignInit", self._functions.C_SignInit(session, byref(mechanism_struct), key))
        data_buffer = ctypes.create_string_buffer(data, len(data))
        signature = ctypes.create_string_buffer(MAX_SIGNATURE_BYTES)
        length = CK_ULONG(MAX_SIGNATURE_BYTES)
        _check("C_Sign", self._functions.C_Sign(session, ctypes.cast(data_buffer, c_void_p), len(data),
                                                ctypes.cast(signature, c_void_p), byref(length)))
        return signature.raw[: length.value]

    def close(self) -> None:
        """Close the login session and finalise the module."""
        self.close_session(self._login_session)
        _check("C_Finalize", self._functions.C_Finalize(None))


def _check(function: str, rv: int) -> None:
    if rv != CKR_OK:
        raise Pkcs11Error(function, rv)
