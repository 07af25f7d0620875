"""Settings for reaching one PKCS#11 token."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["HsmConfig"]


@dataclass(frozen=True)
class HsmConfig:
    """PKCS#11 module, token and login settings for :class:`hsm.Hsm`.

    ``user_pin`` is excluded from ``repr`` so that logging the config cannot
    leak it.
    """

    module_path: str
    token_label: str
    user_pin: str = field(repr=False)
    pool_size: int = 4
    # Seconds a call waits for a free session before raising HsmUnavailable,
    # so that a hung token cannot block every executor thread forever.
    borrow_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.module_path:
            raise ValueError("module_path is empty: set it to the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so")
        if not self.token_label:
            raise ValueError("token_label is empty: set it to the label of the token that holds the keys")
        if not self.user_pin:
            raise ValueError("user_pin is empty: set the token's user PIN")
        if self.pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {self.pool_size}")
        if self.borrow_timeout <= 0:
            raise ValueError(f"borrow_timeout must be a positive number of seconds, got {self.borrow_timeout}")
