"""Link tokens are kept only as their SHA-256: the one helper every side agrees on."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime


def token_hash(token: str) -> str:
    """The only form in which a link token is ever kept."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_live(token: str | None, live_sha256: str | None, expires_at: datetime | None, now: datetime) -> bool:
    """Does `token` open the live link? Unexpired, and one constant-time comparison of digests."""
    if not token or not live_sha256:
        return False
    if expires_at and now >= expires_at:
        return False
    return hmac.compare_digest(token_hash(token), live_sha256)
