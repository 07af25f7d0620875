"""May this application use this key now? The one check every signing path makes, in one order.

1. The policy in force must name the application for the key. Otherwise the
   response is the same as for an unknown signer, so an application learns
   nothing about the keys of other agencies.
2. The key (its credential) must be enabled.
3. A rule of the key must allow the format, level and document type, within
   the key's validity window and batch size.
4. The quotas must leave room for the signatures, counted in the same
   transaction as the signing step that uses them.

A policy denial names the rule and the policy version that decided it, and a
quota error names its quota rule. ``explain_key_use`` returns the reasons for
a decision to security officers and auditors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from signserver.errors import InvalidInput
from signserver.store.db import Transaction
from signserver.store.records import Credential, Official

from .context import CoreContext
from .errors import KeyDisabled, PolicyDenied, SignerUnknown
from .policy import Explanation, PolicyDecision, PolicyQuery
from .quotas import QuotaExceeded, consume_quota, quota_denial, quota_usage
from .roles import AUDITOR, SECURITY_OFFICER, require_role

__all__ = ["KeyUse", "evaluate_key_use", "explain_key_use", "POLICY_FORMATS", "POLICY_LEVELS"]

# The formats and levels a policy rule can name (the enums of policies/schema.json).
POLICY_FORMATS = ("pades", "cades", "raw")
POLICY_LEVELS = ("B-B", "B-T", "B-LT", "B-LTA", "none")


@dataclass(frozen=True)
class KeyUse:
    """The policy decision, and the error to raise when the use is rejected."""

    decision: PolicyDecision
    error: Exception | None

    @property
    def rule(self) -> str:
        return f"{self.decision.rule_id}@{self.decision.policy_version}"


async def evaluate_key_use(tx: Transaction, ctx: CoreContext, credential: Credential, query: PolicyQuery,
                           now: datetime, *, signer_name: str, count: int = 1, consume: bool = False) -> KeyUse:
    """Decide the use of ``credential`` for ``count`` signatures, and with ``consume`` also count them.

    A rejection is returned, not raised, so that the caller can record it in
    the audit trail before raising it. With ``consume`` the counters change in
    ``tx`` only when the use is allowed.
    """
    policy = await ctx.policies.current(tx)
    decision = policy.decide(query, now)
    if not decision.visible:
        return KeyUse(decision, SignerUnknown(signer=signer_name))
    if credential.status != "active":
        return KeyUse(decision, KeyDisabled(signer=signer_name))
    if not decision.allowed:
        return KeyUse(decision, PolicyDenied(rule=decision.rule_id, reason=decision.reason, signer=signer_name,
                                             policy_version=decision.policy_version))
    key_policy = policy.key_policy(credential.id)
    if consume:
        try:
            # In a savepoint: when one counter is full, the counters already raised are put back.
            async with tx.savepoint():
                await consume_quota(tx, key_policy, credential.id, query.application_id, count, now)
        except QuotaExceeded as exc:
            return KeyUse(decision, exc)
        return KeyUse(decision, None)
    denied = quota_denial(await quota_usage(tx, key_policy, credential.id, query.application_id, now), count)
    return KeyUse(decision, denied.error() if denied is not None else None)


async def explain_key_use(ctx: CoreContext, person: Official, query: PolicyQuery) -> Explanation:
    """Decide ``query`` with the policy in force and explain why, with the key's quota counters.

    The explanation shows the key's whole policy entry, so only security
    officers and auditors may read it.
    """
    require_role(person, SECURITY_OFFICER, AUDITOR)
    if query.signature_format not in POLICY_FORMATS:
        raise InvalidInput("field_invalid", field="format", reason=f"use one of {', '.join(POLICY_FORMATS)}")
    if query.signature_level not in POLICY_LEVELS:
        raise InvalidInput("field_invalid", field="level", reason=f"use one of {', '.join(POLICY_LEVELS)}")
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        policy = await ctx.policies.current(tx)
        key_policy = policy.key_policy(query.credential_id)
        usage = await quota_usage(tx, key_policy, query.credential_id, query.application_id, now)
    return policy.explain(query, now, usage)
