"""Table definitions (SQLAlchemy Core), shared by the queries and the migrations.

One schema serves SQLite (embedded default) and PostgreSQL (several replicas).
Columns that must be unique or single-use carry the constraint here, so the
database, not process memory, serialises them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "metadata",
    "applications",
    "officials",
    "credentials",
    "credential_profiles",
    "sign_requests",
    "approvals",
    "approval_items",
    "otp_used_steps",
    "official_sessions",
    "audit_log",
    "audit_head",
    "tsa_serials",
    "csc_tokens",
    "csc_sads",
    "csc_sad_hashes",
    "hsm_keys",
    "admin_changes",
    "policy_versions",
    "key_usage",
    "service_instances",
    "approval_steps",
    "delegations",
    "webhook_events",
    "webhook_attempts",
]

metadata = MetaData()

applications = Table(
    "applications",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("agency", Text, nullable=False, server_default=""),
    # SHA-256 of a 256-bit random API key: high-entropy keys need no slow hash.
    Column("api_key_sha256", String(64), nullable=False, unique=True),
    Column("basic_username", String(128), unique=True),
    Column("basic_password_hash", Text),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Where the application's webhooks go, and their HMAC-SHA256 key wrapped by the HSM's
    # secret-wrapping key (the key must be recoverable to sign, so it cannot be hashed).
    Column("webhook_url", Text),
    Column("webhook_secret_wrapped", LargeBinary),
)

officials = Table(
    "officials",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("username", String(128), nullable=False, unique=True),
    Column("full_name", Text, nullable=False),
    Column("title", Text, nullable=False, server_default=""),
    Column("agency", Text, nullable=False, server_default=""),
    Column("password_hash", Text, nullable=False),
    # TOTP seed encrypted by the HSM's secret-wrapping key.
    Column("totp_secret_wrapped", LargeBinary, nullable=False),
    Column("otp_failed_count", Integer, nullable=False, server_default="0"),
    Column("otp_locked_until", DateTime(timezone=True)),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Comma-separated: official, seal_holder, security_officer, auditor (see core.roles).
    Column("roles", Text, nullable=False, server_default="official"),
)

credentials = Table(
    "credentials",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # personal | seal | tsa
    Column("key_id_hex", String(128), nullable=False, unique=True),  # CKA_ID
    Column("key_label", Text, nullable=False),
    Column("key_type", String(8), nullable=False),  # RSA | EC
    Column("key_size", Integer, nullable=False),
    Column("certificate_der", LargeBinary, nullable=False),
    Column("chain_pem", Text, nullable=False),
    Column("cert_serial_hex", String(64), nullable=False),
    Column("owner_official_id", String(64), ForeignKey("officials.id")),
    # The official whose OTP approves signatures with this key.
    Column("approver_official_id", String(64), ForeignKey("officials.id")),
    Column("display_name", Text, nullable=False),
    Column("signer_title", Text, nullable=False, server_default=""),
    Column("agency", Text, nullable=False, server_default=""),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# The visible appearance of a credential's signatures, set by a security
# officer: PNG images as uploaded (validated, at most 1 MiB each), the seal's
# real diameter, and the appearance used when a request names none. NULL
# means not set: no image, 36 mm, and a default chosen from the images.
credential_profiles = Table(
    "credential_profiles",
    metadata,
    Column("credential_id", String(64), ForeignKey("credentials.id"), primary_key=True),
    Column("signature_image", LargeBinary),
    Column("seal_image", LargeBinary),
    Column("seal_diameter_mm", Float),
    Column("default_appearance", String(16)),  # signature | seal | text
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(128), nullable=False),
)

sign_requests = Table(
    "sign_requests",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("application_id", String(64), ForeignKey("applications.id"), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    # SHA-256 of the request's metadata and document digest: a retry must match it.
    Column("fingerprint", String(64), nullable=False),
    Column("dossier_code", String(128), nullable=False),
    Column("title", Text, nullable=False),
    Column("document_type", String(128)),
    Column("credential_id", String(64), ForeignKey("credentials.id"), nullable=False),
    Column("approver_official_id", String(64), ForeignKey("officials.id")),
    Column("signature_format", String(16), nullable=False),
    Column("signature_level", String(16), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("location", Text, nullable=False, server_default=""),
    Column("placement_json", Text),
    Column("document_name", Text, nullable=False),
    Column("document_path", Text, nullable=False),
    Column("document_sha256", String(64), nullable=False),
    Column("document_size", BigInteger, nullable=False),
    Column("page_count", Integer),
    Column("pdf_password_wrapped", LargeBinary),
    Column("state", String(32), nullable=False),
    Column("state_reason", String(64)),
    Column("policy_rule", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("approval_id", String(64)),
    Column("decided_by", String(64)),
    Column("decided_at", DateTime(timezone=True)),
    Column("rejection_reason", Text),
    Column("signed_path", Text),
    Column("signed_sha256", String(64)),
    Column("signed_at", DateTime(timezone=True)),
    # The service instance (process) that moved the request to signing; see service_instances.
    Column("signing_instance", String(64)),
    # Claims so far: a request whose signing met an outage goes back to approved, a few times at most.
    Column("signing_attempts", Integer, nullable=False, server_default="0"),
    # Set when a deputy approves in a delegator's place (ủy quyền): the delegation, and the
    # credential the application asked for, which the deputy's own credential replaced.
    Column("delegation_id", String(64)),
    Column("requested_credential_id", String(64)),
    UniqueConstraint("application_id", "idempotency_key", name="uq_sign_requests_idempotency"),
    Index("ix_sign_requests_state", "state"),
)

# Every serving process, with the time it last showed it was alive. A request
# in signing whose instance stopped beating is failed by the others, never
# signed again; see core.instances.
service_instances = Table(
    "service_instances",
    metadata,
    Column("id", String(64), primary_key=True),
    # Host name and data directory: the processes of one `signserver serve`.
    Column("node", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("official_id", String(64), ForeignKey("officials.id"), nullable=False),
    Column("otp_step", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

approval_items = Table(
    "approval_items",
    metadata,
    Column("approval_id", String(64), ForeignKey("approvals.id"), primary_key=True),
    Column("request_id", String(64), ForeignKey("sign_requests.id"), primary_key=True),
    Column("document_sha256", String(64), nullable=False),
)

# Each accepted TOTP time step, once per official: the primary key makes a replay fail.
otp_used_steps = Table(
    "otp_used_steps",
    metadata,
    Column("official_id", String(64), ForeignKey("officials.id"), primary_key=True),
    Column("step", BigInteger, primary_key=True),
    Column("used_at", DateTime(timezone=True), nullable=False),
)

official_sessions = Table(
    "official_sessions",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("official_id", String(64), ForeignKey("officials.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # api (bearer token) | inbox (cookie of the officials' web inbox, with an idle timeout)
    Column("kind", String(16), nullable=False, server_default="api"),
    Column("last_seen_at", DateTime(timezone=True)),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("actor_type", String(32), nullable=False),
    Column("actor_id", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("request_id", String(64)),
    Column("dossier_code", String(128)),
    Column("document_sha256", String(64)),
    Column("key_id_hex", String(128)),
    Column("cert_serial_hex", String(64)),
    Column("details_json", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
)

# One row: the newest record's sequence number and hash. Updating it in the same
# transaction as the append serialises writers and reveals a truncated tail.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

tsa_serials = Table(
    "tsa_serials",
    metadata,
    # SQLite assigns rowids only to a column typed exactly INTEGER PRIMARY KEY.
    Column("serial", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)


# Bearer tokens of the CSC API's auth/login, stored as SHA-256 digests. An
# access token and the refresh token it was issued with share a grant_id, so
# revoking the refresh token revokes the whole grant.
csc_tokens = Table(
    "csc_tokens",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # access | refresh
    Column("grant_id", String(64), nullable=False, index=True),
    Column("application_id", String(64), ForeignKey("applications.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Signature activation data (SAD) of the CSC API, stored as a SHA-256 digest,
# bound to one application, one credential and the hashes the official approved.
csc_sads = Table(
    "csc_sads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("sad_sha256", String(64), nullable=False, unique=True),
    Column("application_id", String(64), ForeignKey("applications.id"), nullable=False),
    Column("credential_id", String(64), ForeignKey("credentials.id"), nullable=False),
    Column("official_id", String(64), ForeignKey("officials.id"), nullable=False),
    # asn1crypto name of the hash algorithm, NULL when a CSC v1 client did not name one.
    Column("hash_algorithm", String(16)),
    Column("num_signatures", Integer, nullable=False),
    Column("otp_step", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# The hashes a SAD covers, one row per authorized signature, so the same hash
# authorized twice has two rows. A row is spent by setting used_at.
csc_sad_hashes = Table(
    "csc_sad_hashes",
    metadata,
    Column("sad_id", String(64), ForeignKey("csc_sads.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("hash_hex", String(128), nullable=False),
    Column("used_at", DateTime(timezone=True)),
    Index("ix_csc_sad_hashes_sad_id_hash_hex", "sad_id", "hash_hex"),
)


# The inventory of signing key pairs in the HSM, so that listing keys never
# walks the token. A key is "generated" until its certificate is imported,
# then "active" as the key of one credential. Rotation makes the previous key
# "retired", kept with its certificate for validation. A destroyed key keeps
# its row as the record of what existed.
hsm_keys = Table(
    "hsm_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("key_id_hex", String(128), nullable=False, unique=True),  # CKA_ID
    Column("key_label", Text, nullable=False, unique=True),  # CKA_LABEL
    Column("key_type", String(8), nullable=False),  # RSA | EC
    Column("key_size", Integer, nullable=False),  # RSA modulus bits, or the EC curve's bits
    Column("public_key_der", LargeBinary, nullable=False),  # SubjectPublicKeyInfo
    Column("state", String(16), nullable=False),  # generated | active | retired | destroyed
    Column("credential_id", String(64), ForeignKey("credentials.id")),
    Column("certificate_der", LargeBinary),
    Column("chain_pem", Text),
    Column("cert_serial_hex", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Changes that need a second security officer (four-eyes): applying a policy,
# destroying a key. The requester's change waits here until another officer
# approves or rejects it; only then does it take effect.
admin_changes = Table(
    "admin_changes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),  # policy_apply | key_destroy
    Column("summary", Text, nullable=False),
    Column("payload_json", Text, nullable=False),
    Column("requested_by", String(64), ForeignKey("officials.id"), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),  # pending | carrying_out | applied | rejected | expired | failed
    Column("decided_by", String(64), ForeignKey("officials.id")),
    Column("decided_at", DateTime(timezone=True)),
    Column("decision_note", Text),
)

# Every policy version ever applied, with who wrote and who approved it. The
# highest version is in force; the primary key makes two concurrent applies
# of the same next version fail instead of both winning.
policy_versions = Table(
    "policy_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("documents_json", Text, nullable=False),  # [{"name": file name, "text": YAML}]
    Column("digest", String(64), nullable=False),
    Column("author_id", String(64), nullable=False),
    Column("approver_id", String(64), nullable=False),
    Column("change_id", String(64)),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

# Signatures made per key, per application ("" for all applications) and per
# period: a Vietnam-time day "2026-12-05", a month "2026-12", or "lifetime".
# Quotas are checked and counted in the same transaction, before the HSM call.
key_usage = Table(
    "key_usage",
    metadata,
    Column("credential_id", String(64), ForeignKey("credentials.id"), primary_key=True),
    Column("application_id", String(64), primary_key=True),
    Column("period", String(16), primary_key=True),
    Column("count", BigInteger, nullable=False),
)


# The ordered approvers of a sign request (for example a specialist, then the
# leader whose key signs). One step is current at a time; the request is
# approved when its last step is, and rejected when any step is. The assignee
# is the named official, or their deputy when a delegation was in force.
approval_steps = Table(
    "approval_steps",
    metadata,
    Column("request_id", String(64), ForeignKey("sign_requests.id"), primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("official_id", String(64), ForeignKey("officials.id"), nullable=False),
    Column("assignee_official_id", String(64), ForeignKey("officials.id"), nullable=False),
    Column("delegation_id", String(64)),
    Column("state", String(16), nullable=False),  # waiting | current | approved | rejected
    Column("approval_id", String(64)),
    Column("decided_at", DateTime(timezone=True)),
    Index("ix_approval_steps_assignee_state", "assignee_official_id", "state"),
)

# An official's delegation of approval to a named deputy for a period (ủy quyền).
delegations = Table(
    "delegations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("delegator_official_id", String(64), ForeignKey("officials.id"), nullable=False),
    Column("deputy_official_id", String(64), ForeignKey("officials.id"), nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("revoked_by", String(64)),
    Index("ix_delegations_delegator", "delegator_official_id"),
)

# The durable outbox of webhooks: a row is written in the transaction that
# changes the request's state, so nothing is sent for a change that rolled
# back, and nothing committed is lost. A sender claims a row until
# claimed_until, posts it, and records the attempt.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("application_id", String(64), ForeignKey("applications.id"), nullable=False),
    Column("request_id", String(64)),
    Column("event_type", String(64), nullable=False),
    Column("payload_json", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("delivered_at", DateTime(timezone=True)),
    Column("abandoned_at", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("claimed_by", String(64)),
    Column("claimed_until", DateTime(timezone=True)),
    Index("ix_webhook_events_due", "delivered_at", "next_attempt_at"),
    # A sender posts an event only when no earlier event of its request is pending: this finds those.
    Index("ix_webhook_events_request", "request_id", "created_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("event_id", String(64), ForeignKey("webhook_events.id"), primary_key=True),
    Column("attempt", Integer, primary_key=True, autoincrement=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("instance", String(64)),
)
