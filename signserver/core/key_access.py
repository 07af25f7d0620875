"""May this application use this key now? The one check every signing path makes, in one order.

1. The policy in force must name the application for the key; otherwise the
   key is answered as unknown, so an application learns nothing about keys
   of other agencies.
2. The key (its credential) must be enabled.
3. A rule of the key must allow the format, level and document type, within
   the key's validity window and batch size.
4. The quotas must leave room for the signatures, counted in the same
   transaction as the signing step that uses them.

Each step's refusal names the rule and the policy version that decided it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from signserver.store.db import Transaction
from signserver.store.records import Credential

from .context import CoreContext
from .errors import KeyDisabled, PolicyDenied, SignerUnknown
from .policy import PolicyDecision, PolicyQuery
from .quotas import QuotaExceeded, consume_quota, quota_denial, quota_usage

__all__ = ["KeyUse", "evaluate_key_use"]


@dataclass(frozen=True)
class KeyUse:
    """The outcome: the policy decision, and the error to raise when the use is refused."""

    decision: PolicyDecision
    error: Exception | None

    @property
    def rule(self) -> str:
        return f"{self.decision.rule_id}@{self.decision.policy_version}"


async def evaluate_key_use(tx: Transaction, ctx: CoreContext, credential: Credential, query: PolicyQuery,
                           now: datetime, *, signer_name: str, count: int = 1, consume: bool = False) -> KeyUse:
    """Decide the use of ``credential`` for ``count`` signatures; with ``consume``, also count them.

    A refusal is returned, not raised, so that the caller can record it in
    the audit trail before raising. With ``consume`` the counters change in
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
