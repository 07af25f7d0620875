"""The baseline levels that CAdES (ETSI EN 319 122-1) and PAdES (ETSI EN 319 142-1) share.

Both standards name the same four levels in the same order, and each level
includes everything the lower ones require.
"""

from __future__ import annotations

__all__ = ["BASELINE_LEVELS", "LONG_TERM_LEVELS", "level_reaches"]

BASELINE_LEVELS = ("B-B", "B-T", "B-LT", "B-LTA")
# The levels that embed validation data: the certificates and the revocation
# data that validate the signer's and the TSA's chains.
LONG_TERM_LEVELS = ("B-LT", "B-LTA")


def level_reaches(reached: str, requested: str) -> bool:
    """Return whether level ``reached`` includes level ``requested`` ("none" reaches nothing)."""
    if reached not in BASELINE_LEVELS:
        return False
    return BASELINE_LEVELS.index(reached) >= BASELINE_LEVELS.index(requested)
