"""The descriptive methods of the CSC API: info, credentials/list, credentials/info, sendOTP, getChallenge, timestamp."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import requests
from asn1crypto import cms, tsp
from cryptography import x509

from tests.csc.conftest import SHA256_OID, CscClient, assert_csc_error
from tests.harness import Client
from tests.verifiers import openssl_ts_verify

RSA_ALGORITHMS = ["1.2.840.113549.1.1.11", "1.2.840.113549.1.1.12", "1.2.840.113549.1.1.13",
                  "1.2.840.113549.1.1.10", "1.2.840.113549.1.1.1"]
EC_ALGORITHMS = ["1.2.840.10045.4.3.2", "1.2.840.10045.4.3.3", "1.2.840.10045.4.3.4"]
P256_OID = "1.2.840.10045.3.1.7"
GENERALIZED_TIME = re.compile(r"^\d{14}Z$")


def info(client: Client, version: str) -> dict[str, Any]:
    response = requests.post(f"{client.url}/csc/{version}/info", json={}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def credential_info(csc: CscClient, version: str, credential_id: str, **extra: Any) -> dict[str, Any]:
    response = csc.call(version, "credentials/info", {"credentialID": credential_id, **extra})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(("version", "specs"), [("v1", "1.0.4.0"), ("v2", "2.0.0.2")])
def test_info_names_spec_version(client: Client, version: str, specs: str) -> None:
    assert info(client, version)["specs"] == specs


@pytest.mark.parametrize("field", ["name", "logo", "lang", "description", "authType", "methods"])
def test_info_has_field(client: Client, field: str) -> None:
    assert info(client, "v1")[field]


def test_info_region_vn(client: Client) -> None:
    assert info(client, "v2")["region"] == "VN"


@pytest.mark.parametrize("field", ["signAlgorithms", "signature_formats", "conformance_levels"])
def test_info_v2_has_field(client: Client, field: str) -> None:
    assert info(client, "v2")[field]


def test_info_v1_lists_sign_hash(client: Client) -> None:
    assert "signatures/signHash" in info(client, "v1")["methods"]


def test_info_v1_omits_sign_doc(client: Client) -> None:
    assert "signatures/signDoc" not in info(client, "v1")["methods"]


def test_info_v2_conformance_levels(client: Client) -> None:
    assert info(client, "v2")["conformance_levels"] == ["Ades-B-B", "Ades-B-T", "Ades-B-LT", "Ades-B-LTA"]


def test_info_english_by_lang(client: Client) -> None:
    response = requests.post(f"{client.url}/csc/v1/info", json={"lang": "en"}, timeout=30)
    assert response.json()["lang"] == "en"


def test_list_has_both_officials(csc: CscClient, credentials: dict) -> None:
    listed = csc.call("v1", "credentials/list").json()["credentialIDs"]
    assert sorted(listed) == sorted(official["credential_id"] for official in credentials["officials"])


def test_list_v2_credential_infos(csc: CscClient) -> None:
    body = csc.call("v2", "credentials/list", {"credentialInfo": True}).json()
    assert [item["credentialID"] for item in body["credentialInfos"]] == body["credentialIDs"]


def test_list_user_id_rejected(csc: CscClient) -> None:
    assert_csc_error(csc.call("v1", "credentials/list", {"userID": "someone"}), 400, "invalid_request")


def test_list_max_results_pages(csc: CscClient) -> None:
    first = csc.call("v1", "credentials/list", {"maxResults": 1}).json()
    second = csc.call("v1", "credentials/list", {"maxResults": 1, "pageToken": first["nextPageToken"]}).json()
    assert first["credentialIDs"] + second["credentialIDs"] == csc.call("v1", "credentials/list").json()["credentialIDs"]


def test_info_rsa_algorithms(csc: CscClient, rsa_official: dict) -> None:
    assert credential_info(csc, "v1", rsa_official["credential_id"])["key"]["algo"] == RSA_ALGORITHMS


def test_info_ec_algorithms(csc: CscClient, ec_official: dict) -> None:
    assert credential_info(csc, "v2", ec_official["credential_id"])["key"]["algo"] == EC_ALGORITHMS


def test_info_ec_curve(csc: CscClient, ec_official: dict) -> None:
    assert credential_info(csc, "v2", ec_official["credential_id"])["key"]["curve"] == P256_OID


def test_info_rsa_has_no_curve(csc: CscClient, rsa_official: dict) -> None:
    assert "curve" not in credential_info(csc, "v2", rsa_official["credential_id"])["key"]


@pytest.mark.parametrize(("index", "length"), [(0, 2048), (1, 256)])
def test_info_key_length(csc: CscClient, client: Client, index: int, length: int) -> None:
    assert credential_info(csc, "v1", client.official(index)["credential_id"])["key"]["len"] == length


def test_info_key_enabled(csc: CscClient, rsa_official: dict) -> None:
    assert credential_info(csc, "v1", rsa_official["credential_id"])["key"]["status"] == "enabled"


def test_info_cert_valid(csc: CscClient, rsa_official: dict) -> None:
    assert credential_info(csc, "v1", rsa_official["credential_id"])["cert"]["status"] == "valid"


def test_info_single_certificate(csc: CscClient, rsa_official: dict) -> None:
    assert len(credential_info(csc, "v1", rsa_official["credential_id"])["cert"]["certificates"]) == 1


def test_info_no_certificates(csc: CscClient, rsa_official: dict) -> None:
    cert = credential_info(csc, "v1", rsa_official["credential_id"], certificates="none")["cert"]
    assert "certificates" not in cert


def test_info_chain_end_entity_first(csc: CscClient, rsa_official: dict, demo_root: Path) -> None:
    encoded = credential_info(csc, "v2", rsa_official["credential_id"], certificates="chain")["cert"]["certificates"]
    chain = [x509.load_der_x509_certificate(base64.b64decode(item)) for item in encoded]
    root = x509.load_pem_x509_certificate(demo_root.read_bytes())
    assert len(chain) == 3
    assert chain[0].issuer == chain[1].subject
    assert chain[1].issuer == chain[2].subject
    assert chain[2] == root


def test_info_invalid_certificates_choice(csc: CscClient, rsa_official: dict) -> None:
    response = csc.call("v1", "credentials/info", {"credentialID": rsa_official["credential_id"],
                                                   "certificates": "all"})
    assert_csc_error(response, 400, "invalid_request")


def test_info_cert_info_fields(csc: CscClient, rsa_official: dict) -> None:
    cert = credential_info(csc, "v1", rsa_official["credential_id"], certInfo=True)["cert"]
    certificate = x509.load_der_x509_certificate(base64.b64decode(cert["certificates"][0]))
    assert cert["serialNumber"] == format(certificate.serial_number, "X")
    assert cert["subjectDN"] == certificate.subject.rfc4514_string()
    assert cert["issuerDN"] == certificate.issuer.rfc4514_string()
    assert GENERALIZED_TIME.match(cert["validFrom"])
    assert cert["validTo"] == certificate.not_valid_after_utc.strftime("%Y%m%d%H%M%SZ")


def test_info_scal_2(csc: CscClient, rsa_official: dict) -> None:
    assert credential_info(csc, "v1", rsa_official["credential_id"])["SCAL"] == "2"


def test_info_multisign_is_batch_limit(csc: CscClient, rsa_official: dict) -> None:
    assert credential_info(csc, "v2", rsa_official["credential_id"])["multisign"] == 50


def test_info_v1_otp_offline(csc: CscClient, rsa_official: dict) -> None:
    body = credential_info(csc, "v1", rsa_official["credential_id"])
    assert body["authMode"] == "explicit"
    assert body["OTP"]["presence"] == "true"
    assert body["OTP"]["type"] == "offline"
    assert body["OTP"]["format"] == "N"
    assert body["OTP"]["ID"]


def test_info_v1_otp_label_in_lang(csc: CscClient, rsa_official: dict) -> None:
    body = credential_info(csc, "v1", rsa_official["credential_id"], lang="vi")
    assert body["OTP"]["label"] == "Mã OTP"


def test_info_v2_auth_totp_password(csc: CscClient, ec_official: dict) -> None:
    auth = credential_info(csc, "v2", ec_official["credential_id"])["auth"]
    assert auth["mode"] == "explicit"
    assert auth["objects"][0]["type"] == "Password"
    assert auth["objects"][0]["generator"] == "totp"
    assert auth["objects"][0]["id"] == "OTP"


def test_send_otp_offline_rejected(csc: CscClient, rsa_official: dict) -> None:
    response = csc.call("v1", "credentials/sendOTP", {"credentialID": rsa_official["credential_id"]})
    body = assert_csc_error(response, 400, "invalid_request")
    assert body["error_description"].startswith("OTP is generated offline")


def test_get_challenge_not_needed(csc: CscClient, rsa_official: dict) -> None:
    response = csc.call("v2", "credentials/getChallenge", {"credentialID": rsa_official["credential_id"],
                                                          "authObjectID": "OTP"})
    body = assert_csc_error(response, 400, "invalid_request")
    assert "needs no challenge" in body["error_description"]


def test_get_challenge_unknown_object_rejected(csc: CscClient, rsa_official: dict) -> None:
    response = csc.call("v2", "credentials/getChallenge", {"credentialID": rsa_official["credential_id"],
                                                          "authObjectID": "PIN"})
    body = assert_csc_error(response, 400, "invalid_request")
    assert body["error_description"].startswith("Invalid parameter authObjectID")


def test_timestamp_token_verifies(csc: CscClient, demo_root: Path, tmp_path: Path) -> None:
    digest = hashlib.sha256(b"CSC timestamp test").digest()
    response = csc.call("v2", "signatures/timestamp", {"hash": base64.b64encode(digest).decode(),
                                                       "hashAlgo": SHA256_OID, "nonce": "1f2e3d"})
    assert response.status_code == 200, response.text
    token_path = tmp_path / "token.der"
    token_path.write_bytes(base64.b64decode(response.json()["timestamp"]))
    ok, output = openssl_ts_verify(token_path, demo_root, digest_hex=digest.hex(), token_only=True)
    assert ok, output


def test_timestamp_carries_nonce(csc: CscClient) -> None:
    digest = hashlib.sha256(b"nonce").digest()
    response = csc.call("v1", "signatures/timestamp", {"hash": base64.b64encode(digest).decode(),
                                                       "hashAlgo": SHA256_OID, "nonce": "abcdef"})
    token = cms.ContentInfo.load(base64.b64decode(response.json()["timestamp"]))
    tst_info = tsp.TSTInfo.load(token["content"]["encap_content_info"]["content"].parsed.dump())
    assert tst_info["nonce"].native == 0xABCDEF


def test_timestamp_wrong_length_rejected(csc: CscClient) -> None:
    response = csc.call("v1", "signatures/timestamp", {"hash": base64.b64encode(b"x" * 20).decode(),
                                                       "hashAlgo": SHA256_OID})
    body = assert_csc_error(response, 400, "invalid_request")
    assert body["error_description"].startswith("Invalid digest value length")

