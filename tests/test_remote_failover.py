"""Failover between external TSAs, OCSP responders and CRL servers that misbehave, on loopback.

Every server here runs in the test's event loop on 127.0.0.1. Servers that
hang or send one byte per second are raw asyncio servers, so that closing
them never waits for a handler. The others are aiohttp applications: a TSA
certified by the demo CA, and OCSP and CRL sources signed with the demo CA's
issuing CA key, whose responses can be made invalid on purpose (wrong
signature, stale, status unknown).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko_certvalidator import CertificateValidator

from signserver import demo_pki
from signserver.api import demo_ca as demo_ca_routes
from signserver.demo_ca import DemoCa, create_demo_ca
from signserver.errors import SignserverError, Unavailable
from signserver.signing.embedded_validation_data import read_dss
from signserver.signing.keys import SigningKey
from signserver.signing.pades import sign_pdf
from signserver.signing.revocation import RevocationFetcher
from signserver.signing.tsa import InProcessTimeStamper, TimeStampAuthority
from signserver.signing.tsa_client import TSA_REPLY_CONTENT_TYPE, FailoverTimeStamper
from tests.harness import free_port
from tests.signing.conftest import SoftwareRawSigner, to_asn1, write_pdf

TIMEOUT_SECONDS = 1.0
# Time allowed on top of the timeouts that a test expects to run out: loopback requests and pyHanko's
# path validation, on a loaded machine.
SLACK_SECONDS = 1.5
TSA_POLICY_OID = "1.3.6.1.4.1.99999.1.3"
DIGEST = bytes(range(32))


# Servers that never respond, or respond one byte per second.


@dataclass
class RawServer:
    """A loopback HTTP server that reads a request and then never responds, or drips a 200 response."""

    server: asyncio.AbstractServer
    writers: list[asyncio.StreamWriter]
    closing: asyncio.Event

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    @property
    def connections(self) -> int:
        return len(self.writers)

    async def close(self) -> None:
        self.closing.set()
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()


async def start_raw_server(behaviour: str, content_type: str = "application/octet-stream") -> RawServer:
    """Start a server whose ``behaviour`` is ``hang`` (no response at all) or ``drip`` (one body byte per second)."""
    writers: list[asyncio.StreamWriter] = []
    closing = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            if behaviour == "hang":
                await closing.wait()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type.encode() +
                         b"\r\nContent-Length: 1000\r\n\r\n")
            while not closing.is_set():
                writer.write(b"\x30")
                await writer.drain()
                await asyncio.sleep(1)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return RawServer(server, writers, closing)


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def hanging() -> AsyncIterator[RawServer]:
    server = await start_raw_server("hang")
    yield server
    await server.close()


# TSA failover.


@pytest.fixture(scope="module")
def ca_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def demo_ca(tmp_path_factory: pytest.TempPathFactory, ca_port: int) -> DemoCa:
    return create_demo_ca(tmp_path_factory.mktemp("failover-ca") / "pki", f"http://127.0.0.1:{ca_port}/demo-ca")


@pytest.fixture(scope="module")
def tsa_key(demo_ca: DemoCa) -> SigningKey:
    """A TSA key whose certificate the demo CA's issuing CA issued, naming no OCSP responder or CRL."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    public_key_der = private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    subject = demo_pki.SubjectSpec(common_name="Dịch vụ cấp dấu thời gian dự phòng",
                                   organization="Ban Cơ yếu")
    certificate = demo_pki.issue_tsa_certificate(demo_ca.issuing, public_key_der, subject)
    chain = (to_asn1(demo_ca.issuing.certificate), to_asn1(demo_ca.root.certificate))
    return SigningKey(to_asn1(certificate), chain, "EC", SoftwareRawSigner(private_key))


@pytest.fixture
def timestamper(tsa_key: SigningKey) -> InProcessTimeStamper:
    serials = itertools.count(1)

    async def next_serial() -> int:
        return next(serials)

    return InProcessTimeStamper(TimeStampAuthority(tsa_key, policy_oid=TSA_POLICY_OID, serial_source=next_serial))


@dataclass
class FakeTsa:
    """A TSA with routes under ``base``.

    The routes are ``/good``, ``/error`` (HTTP 500), ``/garbage``, ``/wrong-nonce`` and ``/wrong-imprint``.
    """

    base: str
    requests: list[str] = field(default_factory=list)

    def url(self, mode: str) -> str:
        return f"{self.base}/{mode}"

    def count(self, mode: str) -> int:
        return self.requests.count(mode)


@pytest.fixture
async def fake_tsa(timestamper: InProcessTimeStamper) -> AsyncIterator[FakeTsa]:
    authority = timestamper.authority
    fake = FakeTsa("")

    async def respond(request: web.Request) -> web.Response:
        mode = request.match_info["mode"]
        fake.requests.append(mode)
        body = await request.read()
        if mode == "error":
            return web.Response(status=500, text="internal error")
        if mode == "garbage":
            return web.Response(body=secrets.token_bytes(300), content_type=TSA_REPLY_CONTENT_TYPE)
        query = tsp.TimeStampReq.load(body)
        if mode == "wrong-nonce":
            query["nonce"] = query["nonce"].native + 1
        elif mode == "wrong-imprint":
            query["message_imprint"]["hashed_message"] = bytes(32)
        reply = await authority.respond(query.dump())
        return web.Response(body=reply, content_type=TSA_REPLY_CONTENT_TYPE)

    app = web.Application()
    app.router.add_post("/{mode}", respond)
    runner, fake.base = await serve(app)
    yield fake
    await runner.cleanup()


async def timed(call: Awaitable[object]) -> tuple[object, float]:
    started = time.monotonic()
    result = await call
    return result, time.monotonic() - started


def hashed_message(token) -> bytes:
    """Return the message imprint's hash value of a time-stamp token."""
    return token["content"]["encap_content_info"]["content"].parsed["message_imprint"]["hashed_message"].native


@pytest.mark.parametrize("mode", ["error", "garbage", "wrong-nonce", "wrong-imprint"])
async def test_tsa_bad_reply_fails_over(fake_tsa: FakeTsa, mode: str) -> None:
    stamper = FailoverTimeStamper([fake_tsa.url(mode), fake_tsa.url("good")], timeout_seconds=TIMEOUT_SECONDS)

    token = await stamper.async_timestamp(DIGEST, "sha256")

    assert hashed_message(token) == DIGEST
    assert fake_tsa.requests == [mode, "good"]


async def test_tsa_hang_fails_over_after_timeout(fake_tsa: FakeTsa, hanging: RawServer) -> None:
    stamper = FailoverTimeStamper([f"{hanging.url}/tsa", fake_tsa.url("good")], timeout_seconds=TIMEOUT_SECONDS)

    token, elapsed = await timed(stamper.async_timestamp(DIGEST, "sha256"))

    assert hashed_message(token) == DIGEST
    assert hanging.connections == 1
    assert fake_tsa.requests == ["good"]
    assert TIMEOUT_SECONDS <= elapsed < TIMEOUT_SECONDS + SLACK_SECONDS


async def test_tsa_slow_drip_cut_at_timeout(fake_tsa: FakeTsa) -> None:
    dripping = await start_raw_server("drip", content_type=TSA_REPLY_CONTENT_TYPE)
    stamper = FailoverTimeStamper([f"{dripping.url}/tsa", fake_tsa.url("good")], timeout_seconds=2)
    try:
        token, elapsed = await timed(stamper.async_timestamp(DIGEST, "sha256"))
    finally:
        await dripping.close()

    assert hashed_message(token) == DIGEST
    assert dripping.connections == 1
    assert fake_tsa.requests == ["good"]
    assert 2 <= elapsed < 2 + SLACK_SECONDS


async def test_tsa_all_failing_names_each_url(fake_tsa: FakeTsa, hanging: RawServer) -> None:
    urls = [f"{hanging.url}/tsa", fake_tsa.url("error"), fake_tsa.url("garbage"), fake_tsa.url("wrong-nonce"),
            f"http://127.0.0.1:{free_port()}/tsa"]
    stamper = FailoverTimeStamper(urls, timeout_seconds=TIMEOUT_SECONDS)

    started = time.monotonic()
    with pytest.raises(TimestampRequestError) as caught:
        await stamper.async_timestamp(DIGEST, "sha256")
    elapsed = time.monotonic() - started

    message = str(caught.value)
    for url in urls:
        assert url in message
    assert f"no complete response within {TIMEOUT_SECONDS:g} s" in message
    assert "HTTP status 500" in message
    assert "nonce" in message
    assert "connection failed" in message
    assert elapsed < TIMEOUT_SECONDS + SLACK_SECONDS


# OCSP and CRL failover.

SUBJECT = x509.Name([
    x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ủy ban nhân dân huyện Mẫu Sơn"),
    x509.NameAttribute(NameOID.COMMON_NAME, "Đỗ Minh Khoa"),
])


@pytest.fixture
async def demo_ca_service(demo_ca: DemoCa, ca_port: int) -> AsyncIterator[None]:
    """The demo CA's own routes, which serve the root CRL that covers the issuing CA."""
    app = web.Application()
    app["demo_ca"] = demo_ca
    app.add_routes(demo_ca_routes.routes)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", ca_port).start()
    yield
    await runner.cleanup()


def sign_ocsp_response(demo_ca: DemoCa, request_der: bytes, *, status: ocsp.OCSPCertStatus,
                       next_update_in: timedelta, corrupt_signature: bool = False) -> bytes:
    """Sign an OCSP response as the issuing CA itself, echoing the request's nonce.

    ``corrupt_signature`` flips a bit of the signature value, so that it no
    longer verifies with the key of the responder the response names.
    """
    request = ocsp.load_der_ocsp_request(request_der)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    this_update = min(now, now + next_update_in - timedelta(minutes=10))
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=request.issuer_name_hash, issuer_key_hash=request.issuer_key_hash,
        serial_number=request.serial_number, algorithm=request.hash_algorithm, cert_status=status,
        this_update=this_update, next_update=now + next_update_in, revocation_time=None, revocation_reason=None,
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, demo_ca.issuing.certificate)
    for extension in request.extensions:
        if isinstance(extension.value, x509.OCSPNonce):
            builder = builder.add_extension(extension.value, critical=False)
    response = builder.sign(demo_ca.issuing.private_key, hashes.SHA256())
    der = response.public_bytes(serialization.Encoding.DER)
    if corrupt_signature:
        signature = response.signature
        der = der.replace(signature, signature[:-1] + bytes([signature[-1] ^ 1]))
    return der


def sign_crl(demo_ca: DemoCa, *, next_update_in: timedelta, signing_key: rsa.RSAPrivateKey | None = None) -> bytes:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    issuing = demo_ca.issuing.certificate
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuing.subject)
               .last_update(min(now, now + next_update_in - timedelta(days=1)))
               .next_update(now + next_update_in)
               .add_extension(x509.CRLNumber(secrets.randbelow(2**32)), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuing.public_key()),
                              critical=False))
    return builder.sign(signing_key or demo_ca.issuing.private_key, hashes.SHA256()).public_bytes(
        serialization.Encoding.DER)


@dataclass
class Sources:
    """OCSP responses at ``/ocsp/<mode>`` and CRLs at ``/crl/<mode>``, with the requests received."""

    base: str
    requests: list[str] = field(default_factory=list)

    def ocsp(self, mode: str) -> str:
        return f"{self.base}/ocsp/{mode}"

    def crl(self, mode: str) -> str:
        return f"{self.base}/crl/{mode}"

    def count(self, path: str) -> int:
        return sum(1 for url in self.requests if url == f"{self.base}/{path}")


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def sources(demo_ca: DemoCa, demo_ca_service: None, other_key: rsa.RSAPrivateKey) -> AsyncIterator[Sources]:
    """OCSP modes: good, error, garbage, bad-signature, stale, unknown. CRL modes: good, error, bad-signature, stale."""
    served = Sources("")
    good, unknown = ocsp.OCSPCertStatus.GOOD, ocsp.OCSPCertStatus.UNKNOWN
    ocsp_modes: dict[str, Callable[[bytes], bytes]] = {
        "good": demo_ca.ocsp_response_der,
        "bad-signature": lambda body: sign_ocsp_response(demo_ca, body, status=good,
                                                         next_update_in=timedelta(minutes=10), corrupt_signature=True),
        "stale": lambda body: sign_ocsp_response(demo_ca, body, status=good, next_update_in=-timedelta(hours=1)),
        "unknown": lambda body: sign_ocsp_response(demo_ca, body, status=unknown,
                                                   next_update_in=timedelta(minutes=10)),
    }
    crl_modes: dict[str, Callable[[], bytes]] = {
        "good": lambda: demo_ca.crl_der("issuing"),
        "bad-signature": lambda: sign_crl(demo_ca, next_update_in=timedelta(days=1), signing_key=other_key),
        "stale": lambda: sign_crl(demo_ca, next_update_in=-timedelta(hours=1)),
    }

    async def ocsp_route(request: web.Request) -> web.Response:
        served.requests.append(str(request.url))
        mode = request.match_info["mode"]
        body = await request.read()
        if mode == "error":
            return web.Response(status=500, text="internal error")
        if mode == "garbage":
            return web.Response(body=secrets.token_bytes(200), content_type="application/ocsp-response")
        return web.Response(body=ocsp_modes[mode](body), content_type="application/ocsp-response")

    async def crl_route(request: web.Request) -> web.Response:
        served.requests.append(str(request.url))
        mode = request.match_info["mode"]
        if mode == "error":
            return web.Response(status=500, text="internal error")
        return web.Response(body=crl_modes[mode](), content_type="application/pkix-crl")

    app = web.Application()
    app.router.add_post("/ocsp/{mode}", ocsp_route)
    app.router.add_get("/crl/{mode}", crl_route)
    runner, served.base = await serve(app)
    yield served
    await runner.cleanup()


@pytest.fixture
def issue(demo_ca: DemoCa) -> Callable[..., object]:
    """Return a function that issues a recorded signer certificate naming several OCSP URLs and CRL points."""

    def issue_certificate(ocsp_urls: list[str], crl_urls: list[str],
                          private_key: ec.EllipticCurvePrivateKey | None = None):
        issuing = demo_ca.issuing.certificate
        public_key = (private_key or ec.generate_private_key(ec.SECP256R1())).public_key()
        now = datetime.now(timezone.utc)
        access = [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url))
                  for url in ocsp_urls]
        points = [x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(url)], relative_name=None,
                                         reasons=None, crl_issuer=None) for url in crl_urls]
        builder = (x509.CertificateBuilder()
                   .subject_name(SUBJECT)
                   .issuer_name(issuing.subject)
                   .public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(hours=1))
                   .not_valid_after(now + timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=False, crl_sign=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuing.public_key()),
                                  critical=False))
        if access:
            builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
        if points:
            builder = builder.add_extension(x509.CRLDistributionPoints(points), critical=False)
        certificate = builder.sign(demo_ca.issuing.private_key, hashes.SHA256())
        demo_ca.record_issued(certificate)
        return to_asn1(certificate)

    return issue_certificate


@pytest.fixture
def chain(demo_ca: DemoCa) -> list:
    return [to_asn1(demo_ca.issuing.certificate), to_asn1(demo_ca.root.certificate)]


@pytest.fixture
def roots(demo_ca: DemoCa) -> list:
    return [to_asn1(demo_ca.root.certificate)]


@pytest.fixture
async def fetcher() -> AsyncIterator[RevocationFetcher]:
    revocation = RevocationFetcher(timeout_seconds=TIMEOUT_SECONDS)
    yield revocation
    await revocation.close()


@pytest.mark.parametrize("mode", ["error", "garbage", "bad-signature", "stale", "unknown"])
async def test_bad_ocsp_falls_over_to_next_ocsp(fetcher, sources, issue, chain, roots, mode):
    certificate = issue([sources.ocsp(mode), sources.ocsp("good")], [sources.crl("error")])

    check = await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True)

    assert sources.count(f"ocsp/{mode}") == 1
    assert sources.count("ocsp/good") == 1
    assert sources.count("crl/error") == 0
    assert [failure.url for failure in check.unavailable] == [sources.ocsp(mode)]


@pytest.mark.parametrize("mode", ["bad-signature", "stale", "unknown"])
async def test_bad_ocsp_response_not_embedded(fetcher, sources, issue, chain, roots, mode):
    certificate = issue([sources.ocsp(mode), sources.ocsp("good")], [])
    context = fetcher.validation_context(roots, revocation_required=True, other_certs=chain)

    await CertificateValidator(certificate, intermediate_certs=chain, validation_context=context).async_validate_path()

    [response] = [response for response in context.ocsps
                  if response.basic_ocsp_response["tbs_response_data"]["responses"][0]["cert_id"]["serial_number"]
                  .native == certificate.serial_number]
    single = response.basic_ocsp_response["tbs_response_data"]["responses"][0]
    assert single["cert_status"].name == "good"
    assert single["next_update"].native > datetime.now(timezone.utc)


async def test_hanging_ocsp_falls_over_within_timeout(fetcher, sources, hanging, issue, chain, roots):
    certificate = issue([f"{hanging.url}/ocsp", sources.ocsp("good")], [])

    check, elapsed = await timed(
        fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True))

    assert [failure.reason for failure in check.unavailable] == [
        f"no complete response within {TIMEOUT_SECONDS:g} s"]
    assert sources.count("ocsp/good") == 1
    assert elapsed < TIMEOUT_SECONDS + SLACK_SECONDS


async def test_dripping_ocsp_cut_at_timeout(sources, issue, chain, roots):
    dripping = await start_raw_server("drip", content_type="application/ocsp-response")
    certificate = issue([f"{dripping.url}/ocsp", sources.ocsp("good")], [])
    fetcher = RevocationFetcher(timeout_seconds=2)
    try:
        check, elapsed = await timed(
            fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True))
    finally:
        await fetcher.close()
        await dripping.close()

    assert [failure.reason for failure in check.unavailable] == ["no complete response within 2 s"]
    assert sources.count("ocsp/good") == 1
    assert 2 <= elapsed < 2 + SLACK_SECONDS


async def test_crl_used_when_every_ocsp_fails(fetcher, sources, hanging, issue, chain, roots):
    certificate = issue([f"{hanging.url}/ocsp", sources.ocsp("bad-signature")],
                        [f"{hanging.url}/issuing.crl", sources.crl("good")])

    check, elapsed = await timed(
        fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True))

    failed_urls = [failure.url for failure in check.unavailable]
    assert failed_urls == [f"{hanging.url}/ocsp", sources.ocsp("bad-signature"), f"{hanging.url}/issuing.crl"]
    assert sources.count("crl/good") == 1
    # Two requests that run out of time, one after the other.
    assert elapsed < 2 * TIMEOUT_SECONDS + SLACK_SECONDS


@pytest.mark.parametrize("mode", ["bad-signature", "stale"])
async def test_bad_crl_skipped_for_next_point(fetcher, sources, issue, chain, roots, mode):
    certificate = issue([sources.ocsp("error")], [sources.crl(mode), sources.crl("good")])

    check = await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True)

    assert sources.count("crl/good") == 1
    assert sources.ocsp("error") in [failure.url for failure in check.unavailable]


@pytest.mark.parametrize("mode", ["bad-signature", "stale"])
async def test_bad_crl_alone_rejected(fetcher, sources, issue, chain, roots, mode):
    certificate = issue([sources.ocsp("error")], [sources.crl(mode)])

    with pytest.raises(SignserverError) as caught:
        await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True)

    assert caught.value.code == "revocation_unavailable"
    assert sources.count(f"crl/{mode}") == 1


async def test_no_valid_source_fails_required_check(fetcher, sources, issue, chain, roots):
    ocsp_urls = [sources.ocsp("bad-signature"), sources.ocsp("stale"), sources.ocsp("unknown")]
    crl_urls = [sources.crl("bad-signature"), sources.crl("stale")]
    certificate = issue(ocsp_urls, crl_urls)

    with pytest.raises(SignserverError) as caught:
        await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True)

    assert caught.value.code == "revocation_unavailable"
    assert caught.value.params["subject"] == "Đỗ Minh Khoa"
    for url in ocsp_urls:
        assert url in caught.value.params["urls"]
    assert isinstance(caught.value, Unavailable)


async def test_no_valid_source_tolerated_when_optional(fetcher, sources, issue, chain, roots):
    ocsp_urls = [sources.ocsp("bad-signature"), sources.ocsp("stale"), sources.ocsp("unknown")]
    crl_urls = [sources.crl("bad-signature"), sources.crl("stale")]
    certificate = issue(ocsp_urls, crl_urls)

    check = await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=False)

    assert {failure.url for failure in check.unavailable} >= set(ocsp_urls)


# Signature levels with no valid revocation data.


@pytest.fixture
def all_sources_bad(sources: Sources) -> tuple[list[str], list[str]]:
    """OCSP and CRL URLs that all respond, and none with usable revocation data."""
    return ([sources.ocsp("bad-signature"), sources.ocsp("stale"), sources.ocsp("unknown")],
            [sources.crl("bad-signature"), sources.crl("stale")])


@pytest.mark.parametrize("level", ["B-LT", "B-LTA"])
async def test_long_term_refused_without_revocation(fetcher, sources, all_sources_bad, issue, chain,
                                                                roots, tsa_key, timestamper, tmp_path, level):
    private_key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue(*all_sources_bad, private_key=private_key)
    raw_signer = SoftwareRawSigner(private_key)
    key = SigningKey(certificate, tuple(chain), "EC", raw_signer)
    output_dir = tmp_path / "output"
    output_dir.mkdir()
    context = fetcher.validation_context(roots, revocation_required=True, other_certs=chain)

    with pytest.raises(SignserverError) as caught:
        await sign_pdf(write_pdf(tmp_path / "in.pdf", 1), output_dir / "signed.pdf", key=key,
                       timestamper=timestamper, reason="Phê duyệt", location="Mẫu Sơn", stamp=None, level=level,
                       validation_context=context)

    assert caught.value.code == "revocation_unavailable"
    assert isinstance(caught.value, Unavailable)
    assert raw_signer.calls == 0
    assert list(output_dir.iterdir()) == []


async def test_b_t_signed_without_revocation(sources, all_sources_bad, issue, chain, timestamper, tmp_path):
    private_key = ec.generate_private_key(ec.SECP256R1())
    key = SigningKey(issue(*all_sources_bad, private_key=private_key), tuple(chain), "EC",
                     SoftwareRawSigner(private_key))

    result = await sign_pdf(write_pdf(tmp_path / "in.pdf", 1), tmp_path / "signed.pdf", key=key,
                            timestamper=timestamper, reason="Phê duyệt", location="Mẫu Sơn", stamp=None,
                            level="B-T")

    with (tmp_path / "signed.pdf").open("rb") as signed:
        dss = read_dss(PdfFileReader(signed))
    assert result.level == "B-T"
    assert dss is None


async def test_hanging_sources_bounded_by_budget(sources, hanging, issue, chain, roots):
    ocsp_urls = [f"{hanging.url}/ocsp/{number}" for number in range(4)]
    crl_urls = [f"{hanging.url}/crl/{number}" for number in range(2)]
    certificate = issue(ocsp_urls, crl_urls)
    fetcher = RevocationFetcher(timeout_seconds=TIMEOUT_SECONDS, max_seconds_per_context=2.5)
    started = time.monotonic()
    try:
        with pytest.raises(SignserverError) as caught:
            await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True)
    finally:
        elapsed = time.monotonic() - started
        await fetcher.close()

    assert caught.value.code == "revocation_unavailable"
    assert "took more than 2.5 s" in caught.value.params["reason"]
    # Six requests of one timeout each would take 6 s.
    assert elapsed < 2.5 + SLACK_SECONDS
    assert hanging.connections < len(ocsp_urls) + len(crl_urls)
