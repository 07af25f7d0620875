"""Roles of the people who use the service, and the check every route and command makes.

Applications are a separate kind of account (``applications`` table) and
have the single role "application". People hold one or more roles:

- ``official``: approves signatures with their own key;
- ``seal_holder``: the agency's văn thư, approves signatures with the agency seal key;
- ``security_officer``: manages keys, certificates, policies (four-eyes for the grave ones);
- ``auditor``: reads the audit trail.

Signing roles and administrative roles are never given to one account: a
security officer who could also approve signatures could grant himself a key.
Security officers and auditors sign in with a password and a TOTP code.
"""

from __future__ import annotations

from collections.abc import Iterable

from signserver.errors import InvalidInput
from signserver.store.records import Official

from .errors import RoleRequired

__all__ = [
    "OFFICIAL",
    "SEAL_HOLDER",
    "SECURITY_OFFICER",
    "AUDITOR",
    "PERSON_ROLES",
    "SIGNING_ROLES",
    "ADMIN_ROLES",
    "require_role",
    "parse_roles",
    "login_needs_otp",
    "audit_actor_type",
]

OFFICIAL = "official"
SEAL_HOLDER = "seal_holder"
SECURITY_OFFICER = "security_officer"
AUDITOR = "auditor"

PERSON_ROLES = (OFFICIAL, SEAL_HOLDER, SECURITY_OFFICER, AUDITOR)
SIGNING_ROLES = frozenset({OFFICIAL, SEAL_HOLDER})
ADMIN_ROLES = frozenset({SECURITY_OFFICER, AUDITOR})


def require_role(person: Official, *roles: str) -> None:
    """Raise RoleRequired unless ``person`` has one of ``roles``."""
    if not person.role_set.intersection(roles):
        raise RoleRequired(role=", ".join(roles))


def login_needs_otp(person: Official) -> bool:
    """Return whether ``person`` needs a TOTP code to sign in.

    Administrative accounts do. Officials give a code for every approval instead.
    """
    return bool(person.role_set & ADMIN_ROLES)


def audit_actor_type(person: Official) -> str:
    """Return the audit actor type of ``person``: their administrative role if they have one, else "official"."""
    for role in (SECURITY_OFFICER, AUDITOR):
        if role in person.role_set:
            return role
    return OFFICIAL


def parse_roles(values: Iterable[str]) -> str:
    """Validate a set of roles and return the stored comma-separated form."""
    roles = sorted({value.strip() for value in values if value.strip()})
    if not roles:
        raise InvalidInput("field_missing", field="roles")
    unknown = [role for role in roles if role not in PERSON_ROLES]
    if unknown:
        raise InvalidInput("field_invalid", field="roles",
                           reason=f"unknown role {unknown[0]}; use {', '.join(PERSON_ROLES)}")
    if set(roles) & SIGNING_ROLES and set(roles) & ADMIN_ROLES:
        raise InvalidInput("field_invalid", field="roles",
                           reason="signing roles and administrative roles need separate accounts")
    if set(roles) >= ADMIN_ROLES:
        # An auditor checks what security officers did, so one person cannot be both.
        raise InvalidInput("field_invalid", field="roles",
                           reason="security_officer and auditor need separate accounts")
    return ",".join(roles)
