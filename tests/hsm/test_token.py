"""Opening the token: lookup, login, the ambiguity check, probe, fault recovery and fork."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import replace

import pkcs11
import pytest
import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11 import Attribute, KeyType, MechanismFlag

from hsm import AmbiguousTokenError, Hsm, HsmConfig, HsmUnavailable, TokenNotFound
from tests.hsm.conftest import MODULE_PATH, SoftHsmTokens

DIGEST = hashlib.sha256(b"ho-so-000.00.01.H01-240101-0001").digest()


def verify_ecdsa(spki: bytes, raw_signature: bytes) -> None:
    half = len(raw_signature) // 2
    signature = encode_dss_signature(
        int.from_bytes(raw_signature[:half], "big"), int.from_bytes(raw_signature[half:], "big")
    )
    public_key = load_der_public_key(spki)
    public_key.verify(signature, b"ho-so-000.00.01.H01-240101-0001", ec.ECDSA(hashes.SHA256()))


def plant_secret_key(session: pkcs11.Session, key_id: bytes, label: str) -> None:
    """Create an AES key directly with python-pkcs11, bypassing the duplicate check of Hsm."""
    session.generate_key(
        KeyType.AES,
        256,
        id=key_id,
        label=label,
        store=True,
        capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
    )


def event_names(logs: list[dict[str, object]]) -> list[object]:
    return [entry["event"] for entry in logs]


def test_probe_open_token_true(hsm: Hsm) -> None:
    assert hsm.probe() is True


def test_probe_closed_hsm_false(softhsm_tokens: SoftHsmTokens) -> None:
    closed = Hsm(softhsm_tokens.config(softhsm_tokens.scratch_label))

    assert closed.probe() is False


def test_call_before_open_raises_unavailable(softhsm_tokens: SoftHsmTokens) -> None:
    closed = Hsm(softhsm_tokens.config(softhsm_tokens.scratch_label))

    with pytest.raises(HsmUnavailable, match="call open"):
        closed.sign(b"\x01", "ECDSA", DIGEST)


def test_open_unknown_label_raises_token_not_found(softhsm_tokens: SoftHsmTokens) -> None:
    config = softhsm_tokens.config("no-such-token")

    with pytest.raises(TokenNotFound, match="no-such-token"):
        Hsm(config).open()


def test_open_missing_module_raises_unavailable(softhsm_tokens: SoftHsmTokens, tmp_path: os.PathLike) -> None:
    config = HsmConfig(str(tmp_path / "missing.so"), softhsm_tokens.scratch_label, softhsm_tokens.user_pin)

    with pytest.raises(HsmUnavailable, match="cannot load PKCS#11 module"):
        Hsm(config).open()


def test_open_wrong_pin_raises_unavailable(softhsm_tokens: SoftHsmTokens) -> None:
    wrong_pin = secrets.token_urlsafe(12)
    config = replace(softhsm_tokens.config(softhsm_tokens.scratch_label), user_pin=wrong_pin)

    with pytest.raises(HsmUnavailable, match="rejected the user PIN") as raised:
        Hsm(config).open()
    assert wrong_pin not in str(raised.value)


def test_config_repr_hides_pin(softhsm_tokens: SoftHsmTokens) -> None:
    config = softhsm_tokens.config(softhsm_tokens.main_label)

    assert softhsm_tokens.user_pin not in repr(config)


def test_config_rejects_zero_pool_size() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        HsmConfig(MODULE_PATH, "token", "1234", pool_size=0)


def test_ambiguous_label_stops_open(softhsm_tokens: SoftHsmTokens, scratch_objects: pkcs11.Session) -> None:
    first_id, second_id = secrets.token_bytes(4), secrets.token_bytes(4)
    plant_secret_key(scratch_objects, first_id, "shared-label")
    plant_secret_key(scratch_objects, second_id, "shared-label")

    with pytest.raises(AmbiguousTokenError) as raised:
        Hsm(softhsm_tokens.config(softhsm_tokens.scratch_label)).open()

    message = str(raised.value)
    assert "CKA_LABEL 'shared-label'" in message
    assert f"secret key CKA_ID={first_id.hex()} CKA_LABEL='shared-label'" in message
    assert f"secret key CKA_ID={second_id.hex()} CKA_LABEL='shared-label'" in message
    assert {found.key_id for found in raised.value.objects} == {first_id, second_id}


def test_ambiguous_id_stops_open(softhsm_tokens: SoftHsmTokens, scratch_objects: pkcs11.Session) -> None:
    shared_id = secrets.token_bytes(4)
    plant_secret_key(scratch_objects, shared_id, "first-of-two")
    plant_secret_key(scratch_objects, shared_id, "second-of-two")

    with pytest.raises(AmbiguousTokenError) as raised:
        Hsm(softhsm_tokens.config(softhsm_tokens.scratch_label)).open()

    message = str(raised.value)
    assert f"CKA_ID {shared_id.hex()}" in message
    assert "CKA_LABEL='first-of-two'" in message
    assert "CKA_LABEL='second-of-two'" in message


def test_key_pair_sharing_id_not_ambiguous(softhsm_tokens: SoftHsmTokens, scratch_objects: pkcs11.Session) -> None:
    # A private key and its public key share CKA_ID and CKA_LABEL by design.
    scratch_objects.generate_keypair(
        KeyType.EC,
        id=b"\x0a\x0b",
        label="pair",
        store=True,
        public_template={Attribute.EC_PARAMS: pkcs11.util.ec.encode_named_curve_parameters("secp256r1")},
    )

    with Hsm(softhsm_tokens.config(softhsm_tokens.scratch_label)) as opened:
        assert opened.key_type(b"\x0a\x0b") == "EC"


# python-pkcs11 0.10 ends a search operation in __del__; on a dead session its
# C_FindObjectsFinal fails there and pytest reports the error as unraisable.
ignore_unraisable_from_dead_session = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)


@ignore_unraisable_from_dead_session
def test_sign_recovers_after_session_closed(softhsm_tokens: SoftHsmTokens, key_id: bytes, label: str) -> None:
    config = softhsm_tokens.config(softhsm_tokens.scratch_label, pool_size=1)
    with Hsm(config) as opened:
        spki = opened.generate_ec_key(key_id, label, "P-256")
        # White-box fault: close the only pooled session behind the pool's
        # back, so that the next C_Sign gets CKR_SESSION_HANDLE_INVALID.
        pooled = opened._pool.try_borrow()
        pooled.session.close()
        opened._pool.release(pooled)

        with structlog.testing.capture_logs() as logs:
            signature = opened.sign(key_id, "ECDSA", DIGEST)

        verify_ecdsa(spki, signature)
        assert "hsm.session_pool.dropped" in event_names(logs)
        assert "hsm.session_pool.reopened" in event_names(logs)


@ignore_unraisable_from_dead_session
def test_sign_recovers_after_library_finalized(
    hsm: Hsm, softhsm_tokens: SoftHsmTokens, key_id: bytes, label: str
) -> None:
    with Hsm(softhsm_tokens.config(softhsm_tokens.scratch_label)) as opened:
        spki = opened.generate_ec_key(key_id, label, "P-256")
        # Every session and login of the process ends, as after a lost
        # connection to a network HSM.
        pkcs11.lib(MODULE_PATH).finalize()

        with structlog.testing.capture_logs() as logs:
            signature = opened.sign(key_id, "ECDSA", DIGEST)

        verify_ecdsa(spki, signature)
        assert "hsm.library.reinitializing" in event_names(logs)
        assert "hsm.session_pool.reopened" in event_names(logs)

    # The session-wide Hsm on the other token notices the new epoch and reopens too.
    assert hsm.probe() is True


@ignore_unraisable_from_dead_session
def test_probe_recovers_after_session_closed(softhsm_tokens: SoftHsmTokens) -> None:
    config = softhsm_tokens.config(softhsm_tokens.scratch_label, pool_size=1)
    with Hsm(config) as opened:
        pooled = opened._pool.try_borrow()
        pooled.session.close()
        opened._pool.release(pooled)

        first = opened.probe()
        second = opened.probe()

    assert first is False
    assert second is True


def test_closed_hsm_rejects_sign(softhsm_tokens: SoftHsmTokens) -> None:
    opened = Hsm(softhsm_tokens.config(softhsm_tokens.scratch_label))
    opened.open()
    opened.close()

    with pytest.raises(HsmUnavailable, match="not open"):
        opened.sign(b"\x01", "ECDSA", DIGEST)


def test_forked_child_must_open_again(hsm: Hsm, key_id: bytes, label: str) -> None:
    spki = hsm.generate_ec_key(key_id, label, "P-256")
    read_fd, write_fd = os.pipe()

    pid = os.fork()
    if pid == 0:
        # Child: report "unavailable-before-open", then the signature, and
        # leave without running pytest's teardown.
        status = 1
        try:
            os.close(read_fd)
            try:
                hsm.sign(key_id, "ECDSA", DIGEST)
                os.write(write_fd, b"N")
            except HsmUnavailable:
                os.write(write_fd, b"U")
            hsm.open()
            os.write(write_fd, hsm.sign(key_id, "ECDSA", DIGEST))
            status = 0
        finally:
            os._exit(status)

    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        output = pipe.read()
    _, wait_status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert output[:1] == b"U"
    verify_ecdsa(spki, output[1:])
    assert hsm.probe() is True
