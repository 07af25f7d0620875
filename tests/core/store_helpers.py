"""A migrated store with two applications and one credential, and sign requests inserted directly.

The store is SQLite, or PostgreSQL with SIGNSERVER_TEST_STORE=postgresql.
Tests of the core's queries use it where a whole server is not needed.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from signserver.store.db import Store
from signserver.store.migrate import upgrade_to_head
from signserver.store.records import SignRequest
from tests.postgres import new_database_url

NOW = datetime(2026, 12, 5, 3, 0, tzinfo=timezone.utc)
# An application with a webhook URL, whose requests' state changes write outbox events.
APPLICATION = "app-webhooks"
QUIET_APPLICATION = "app-no-webhook"
CREDENTIAL = "cred-webhooks"


async def open_seeded_store(tmp_path: Path) -> Store:
    """Create and migrate a database under ``tmp_path``, and insert the applications and the credential."""
    url = new_database_url(tmp_path, "core.db")
    upgrade_to_head(url)
    store = Store(url)
    async with store.transaction() as tx:
        await tx.insert_application(id=APPLICATION, name="Một cửa thử", agency="A", api_key_sha256="1" * 64,
                                    enabled=True, created_at=NOW, webhook_url="http://127.0.0.1:9/hook",
                                    webhook_secret_wrapped=b"wrapped")
        await tx.insert_application(id=QUIET_APPLICATION, name="Một cửa khác", agency="A", api_key_sha256="2" * 64,
                                    enabled=True, created_at=NOW)
        await tx.insert_credential(
            id=CREDENTIAL, kind="seal", key_id_hex="01", key_label=CREDENTIAL, key_type="EC", key_size=256,
            certificate_der=b"\x30\x00", chain_pem="", cert_serial_hex="01", display_name="Cơ quan A", agency="A",
            status="active", created_at=NOW,
        )
    return store


async def new_request(store: Store, request_id: str, state: str = "pending_approval",
                      application_id: str = APPLICATION) -> SignRequest:
    """Insert a PAdES request of ``application_id`` in ``state`` and return it."""
    async with store.transaction() as tx:
        await tx.insert_sign_request(
            id=request_id, application_id=application_id, idempotency_key=f"key-{request_id}",
            fingerprint="f" * 64, dossier_code="000.00.01.H01-261205-0001", title="Giấy xác nhận",
            credential_id=CREDENTIAL, signature_format="pades", signature_level="B-T", document_name="a.pdf",
            document_path="/nonexistent/a.pdf", document_sha256="a" * 64, document_size=10, state=state,
            created_at=NOW, updated_at=NOW, expires_at=NOW + timedelta(hours=1),
        )
        request = await tx.sign_request(request_id)
    assert request is not None
    return request
