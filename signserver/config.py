"""Service settings, read once from environment variables.

Every limit the security model talks about (body size, batch size, OTP
lockout, request expiry) is a setting here with a safe default.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

__all__ = ["Settings", "PROJECT_ROOT", "DEFAULT_PKCS11_MODULE"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PKCS11_MODULE = "/usr/lib/softhsm/libsofthsm2.so"

# A UUID-derived OID (ITU-T X.667, arc 2.25) so the demo TSA policy needs no registered arc.
DEFAULT_TSA_POLICY_OID = "2.25.209385934513473128812962397616287140251"


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} không phải số nguyên; hãy bỏ biến này hoặc đặt một số nguyên.\n"
                         f"  ({name}={raw!r} is not a whole number; unset it or give an integer.)") from None


@dataclass(frozen=True)
class Settings:
    home: Path
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = ""
    pkcs11_module: str = DEFAULT_PKCS11_MODULE
    token_label: str = "signserver"
    hsm_pool_size: int = 4
    # Seconds between keep-alive probes of the HSM, so /readyz and the signserver_hsm_up gauge see an outage
    # without a request.
    hsm_probe_seconds: int = 10
    # Processes serving the port, each with its own PKCS#11 sessions; one per core signs fastest.
    workers: int = 1
    # This node's name among the replicas of one database; empty means "<host name>:<data directory>".
    node_name: str = ""
    # Each serving process writes a heartbeat this often. The others take a process silent for the lease
    # for dead, and fail the requests it was signing (see core.instances).
    instance_heartbeat_seconds: int = 5
    instance_lease_seconds: int = 60
    # Claims of one approved request: an outage of the HSM, a TSA or a revocation source puts it back in line
    # (after 5, 10, 20, 40, then 60 s) until this many tries have failed.
    signing_attempts: int = 8
    policies_dir: Path = PROJECT_ROOT / "policies"
    max_body_bytes: int = 50 * 1024 * 1024
    max_batch_size: int = 50
    # Officials named in a sign request's approval chain, the key's approver included.
    approval_chain_max_length: int = 5
    # Maximum period of one delegation of approval (ủy quyền).
    delegation_max_period: timedelta = timedelta(days=90)
    request_ttl: timedelta = timedelta(hours=72)
    min_request_ttl: timedelta = timedelta(seconds=60)
    official_session_ttl: timedelta = timedelta(hours=8)
    # Officials' web inbox: its session cookie is Secure unless this is False (only for plain HTTP on a host
    # other than localhost or 127.0.0.1, where browsers do not store Secure cookies). A session ends after this
    # long without a request, and in any case at its absolute lifetime.
    inbox_cookie_secure: bool = True
    inbox_idle_timeout: timedelta = timedelta(minutes=15)
    inbox_session_ttl: timedelta = timedelta(hours=8)
    otp_lockout_threshold: int = 5
    otp_lockout_period: timedelta = timedelta(minutes=15)
    tsa_policy_oid: str = DEFAULT_TSA_POLICY_OID
    # External RFC 3161 TSAs, tried in order; empty means the built-in TSA signs in-process.
    tsa_urls: tuple[str, ...] = ()
    tsa_timeout_seconds: int = 10
    # CSC API: lifetime of a signature activation data (SAD) and of the bearer tokens of auth/login.
    sad_ttl: timedelta = timedelta(minutes=5)
    csc_access_token_ttl: timedelta = timedelta(hours=1)
    csc_refresh_token_ttl: timedelta = timedelta(days=7)
    # Revocation checking: time allowed to each OCSP or CRL request, largest response read, and the
    # longest time a fetched response is reused (it is dropped earlier at its nextUpdate).
    revocation_timeout_seconds: int = 5
    revocation_max_response_bytes: int = 10 * 1024 * 1024
    revocation_cache_max_age: timedelta = timedelta(seconds=60)
    # A directory of extra trusted root certificates (PEM or DER), added to the demo root.
    trust_anchors_dir: Path | None = None
    # Base URL of the demo CA's OCSP, CRL and certificate services, written into the certificates
    # that `signserver init` issues. Empty means http://127.0.0.1:{port}/demo-ca.
    demo_ca_url: str = ""
    # Signature validation (POST /api/v1/validations): threads that run validations, and the time
    # one validation may take, OCSP and CRL requests included.
    validation_workers: int = 2
    validation_timeout_seconds: int = 120
    # Webhooks to applications: time allowed to one POST, seconds between polls of the outbox, and the
    # retries of a failed event. The delay starts at webhook_retry_seconds and doubles up to
    # webhook_max_delay_seconds; the event is abandoned after webhook_max_attempts attempts.
    webhook_timeout_seconds: int = 15
    webhook_poll_seconds: int = 1
    webhook_retry_seconds: int = 10
    webhook_max_delay_seconds: int = 3600
    webhook_max_attempts: int = 32
    # Seconds between sweeps that move pending requests past their expiry to "expired".
    expiry_sweep_seconds: int = 30
    log_format: str = "console"
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> "Settings":
        home = Path(os.environ.get("SIGNSERVER_HOME") or PROJECT_ROOT / "var").resolve()
        database_url = os.environ.get("SIGNSERVER_DATABASE_URL") or f"sqlite+aiosqlite:///{home / 'signserver.db'}"
        return cls(
            home=home,
            host=os.environ.get("SIGNSERVER_HOST", "127.0.0.1"),
            port=_int_env("SIGNSERVER_PORT", 8080),
            database_url=database_url,
            pkcs11_module=os.environ.get("SIGNSERVER_PKCS11_MODULE", DEFAULT_PKCS11_MODULE),
            token_label=os.environ.get("SIGNSERVER_TOKEN_LABEL", "signserver"),
            hsm_pool_size=_int_env("SIGNSERVER_HSM_POOL_SIZE", 4),
            hsm_probe_seconds=max(1, _int_env("SIGNSERVER_HSM_PROBE_SECONDS", 10)),
            workers=min(64, max(1, _int_env("SIGNSERVER_WORKERS", 1))),
            node_name=os.environ.get("SIGNSERVER_NODE_NAME", "").strip(),
            instance_heartbeat_seconds=max(1, _int_env("SIGNSERVER_HEARTBEAT_SECONDS", 5)),
            instance_lease_seconds=max(3, _int_env("SIGNSERVER_INSTANCE_LEASE_SECONDS", 60)),
            signing_attempts=max(1, _int_env("SIGNSERVER_SIGNING_ATTEMPTS", 8)),
            policies_dir=Path(os.environ.get("SIGNSERVER_POLICIES_DIR") or PROJECT_ROOT / "policies"),
            max_body_bytes=_int_env("SIGNSERVER_MAX_BODY_BYTES", 50 * 1024 * 1024),
            max_batch_size=_int_env("SIGNSERVER_MAX_BATCH_SIZE", 50),
            approval_chain_max_length=max(1, _int_env("SIGNSERVER_APPROVAL_CHAIN_MAX_LENGTH", 5)),
            delegation_max_period=timedelta(days=max(1, _int_env("SIGNSERVER_DELEGATION_MAX_DAYS", 90))),
            request_ttl=timedelta(seconds=_int_env("SIGNSERVER_REQUEST_TTL_SECONDS", 72 * 3600)),
            min_request_ttl=timedelta(seconds=_int_env("SIGNSERVER_MIN_REQUEST_TTL_SECONDS", 60)),
            official_session_ttl=timedelta(seconds=_int_env("SIGNSERVER_SESSION_TTL_SECONDS", 8 * 3600)),
            inbox_cookie_secure=os.environ.get("SIGNSERVER_INBOX_COOKIE_SECURE", "1").strip().lower()
            not in ("0", "false", "no", "off"),
            inbox_idle_timeout=timedelta(seconds=max(1, _int_env("SIGNSERVER_INBOX_IDLE_SECONDS", 15 * 60))),
            inbox_session_ttl=timedelta(seconds=max(60, _int_env("SIGNSERVER_INBOX_SESSION_SECONDS", 8 * 3600))),
            otp_lockout_threshold=_int_env("SIGNSERVER_OTP_LOCKOUT_THRESHOLD", 5),
            otp_lockout_period=timedelta(seconds=_int_env("SIGNSERVER_OTP_LOCKOUT_SECONDS", 15 * 60)),
            log_format=os.environ.get("SIGNSERVER_LOG_FORMAT", "console"),
            tsa_urls=tuple(url.strip() for url in os.environ.get("SIGNSERVER_TSA_URLS", "").split(",") if url.strip()),
            tsa_timeout_seconds=_int_env("SIGNSERVER_TSA_TIMEOUT_SECONDS", 10),
            sad_ttl=timedelta(seconds=_int_env("SIGNSERVER_SAD_TTL_SECONDS", 300)),
            csc_access_token_ttl=timedelta(seconds=_int_env("SIGNSERVER_CSC_TOKEN_TTL_SECONDS", 3600)),
            csc_refresh_token_ttl=timedelta(seconds=_int_env("SIGNSERVER_CSC_REFRESH_TOKEN_TTL_SECONDS", 7 * 86400)),
            revocation_timeout_seconds=_int_env("SIGNSERVER_REVOCATION_TIMEOUT_SECONDS", 5),
            revocation_max_response_bytes=_int_env("SIGNSERVER_REVOCATION_MAX_BYTES", 10 * 1024 * 1024),
            revocation_cache_max_age=timedelta(seconds=_int_env("SIGNSERVER_REVOCATION_CACHE_MAX_SECONDS", 60)),
            trust_anchors_dir=Path(os.environ["SIGNSERVER_TRUST_ANCHORS"]).resolve()
            if os.environ.get("SIGNSERVER_TRUST_ANCHORS") else None,
            demo_ca_url=os.environ.get("SIGNSERVER_DEMO_CA_URL", "").strip(),
            validation_workers=max(1, _int_env("SIGNSERVER_VALIDATION_WORKERS", 2)),
            validation_timeout_seconds=max(1, _int_env("SIGNSERVER_VALIDATION_TIMEOUT_SECONDS", 120)),
            webhook_timeout_seconds=max(1, _int_env("SIGNSERVER_WEBHOOK_TIMEOUT_SECONDS", 15)),
            webhook_poll_seconds=max(1, _int_env("SIGNSERVER_WEBHOOK_POLL_SECONDS", 1)),
            webhook_retry_seconds=max(1, _int_env("SIGNSERVER_WEBHOOK_RETRY_SECONDS", 10)),
            webhook_max_delay_seconds=max(1, _int_env("SIGNSERVER_WEBHOOK_MAX_DELAY_SECONDS", 3600)),
            webhook_max_attempts=max(1, _int_env("SIGNSERVER_WEBHOOK_MAX_ATTEMPTS", 32)),
            expiry_sweep_seconds=max(1, _int_env("SIGNSERVER_EXPIRY_SWEEP_SECONDS", 30)),
        )

    # Files inside the data directory.
    @property
    def softhsm_conf(self) -> Path:
        return self.home / "softhsm2.conf"

    @property
    def token_dir(self) -> Path:
        return self.home / "tokens"

    @property
    def pin_file(self) -> Path:
        return self.home / "secrets" / "hsm-user-pin"

    @property
    def so_pin_file(self) -> Path:
        return self.home / "secrets" / "hsm-so-pin"

    @property
    def pki_dir(self) -> Path:
        return self.home / "pki"

    @property
    def trust_roots_file(self) -> Path:
        return self.pki_dir / "root.pem"

    @property
    def run_dir(self) -> Path:
        """Runtime files of this node's ``signserver serve``: its lock, metrics and accept turns.

        With PostgreSQL, replicas on several hosts may share one data
        directory (token, PKI, documents), so each node has its own.
        """
        if self.database_url.startswith("sqlite"):
            return self.home / "run"
        name = self.node_name or socket.gethostname()
        return self.home / "run" / "".join(c if c.isalnum() or c in "-_." else "_" for c in name)

    @property
    def documents_dir(self) -> Path:
        return self.home / "documents"

    @property
    def credentials_file(self) -> Path:
        return self.home / "demo-credentials.json"

    @property
    def demo_root_file(self) -> Path:
        return self.home / "demo-root.pem"

    @property
    def demo_ca_base_url(self) -> str:
        """The demo CA's base URL for new certificates, without a trailing slash."""
        return (self.demo_ca_url or f"http://127.0.0.1:{self.port}/demo-ca").rstrip("/")

    @property
    def initialized_marker(self) -> Path:
        return self.home / ".initialized"

    def user_pin(self) -> str:
        pin = os.environ.get("SIGNSERVER_HSM_PIN")
        if pin:
            return pin
        return self.pin_file.read_text().strip()
