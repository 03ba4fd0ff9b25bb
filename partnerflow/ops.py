"""The saved searches that answer ops' daily questions (Temporal visibility queries).

One place for them: the README lists them, the CLI's `list --saved` runs them,
and a test runs each against a real server.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_BASE = "WorkflowType = 'Relationship'"


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def saved_queries(now: datetime, partner_id: str = "p-100") -> dict[str, str]:
    month_start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return {
        "pending-over-a-week": (
            f"{_BASE} AND RelationshipState = 'invited' AND StateChangedAt < '{_at(now - timedelta(days=7))}'"
        ),
        "expiring-in-3-days": (
            f"{_BASE} AND RelationshipState = 'invited' AND InvitationExpiresAt < '{_at(now + timedelta(days=3))}'"
        ),
        "ended-this-month": f"{_BASE} AND RelationshipState = 'ended' AND StateChangedAt >= '{_at(month_start)}'",
        "one-partner": f"{_BASE} AND PartnerId = '{partner_id}'",
    }
