"""Who may fire a trigger, read off the row's `by`: roles, the partner it must be, kind and cloud rules.

The workflow's validators, the client and the role-matrix tests all ask `check`, so a
rule lives only in the declaration it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from partnerflow.states.declaration import (
    WHOSE,
    CustomerAdmin,
    Lifecycle,
    PartnerStaff,
    Recipient,
    Send,
    Timer,
    Upstream,
)
from partnerflow.states.models import Actor, PartnerKind


@dataclass(frozen=True)
class Denial:
    """Why a request is refused: the rule's name and a sentence naming the field."""

    rule: str
    message: str


def check(lifecycle: Lifecycle, trigger: str, *, actor: Actor | None, start: Any) -> Denial | None:
    """None if `actor` may fire `trigger` on the lifecycle `start` began, else the denial."""
    rows = lifecycle.rows_for(trigger)
    if not rows:
        return Denial("action", f"unknown action {trigger}")
    by = rows[0].by
    if isinstance(by, Timer):
        return Denial("action", f"{trigger} is fired by partnerflow's timer, never by a caller")
    if isinstance(by, Upstream):
        return Denial("action", f"{trigger} is fired by partnerflow (a related change), never by a caller")
    if isinstance(by, CustomerAdmin):
        return None  # proven by the live link token or the customer portal (the row's guards)
    return _partner_staff(by, trigger, actor, start)


def owners(by: PartnerStaff, start: Any) -> dict[str, str]:
    """The partner ids whose staff may fire a `by` row of the lifecycle `start` began, by whose."""
    ids = {"partner": start.partner.id, "referrer": getattr(start, "referred_by", None), "provider": provider_of(start)}
    return {whose: ids[whose] for whose in by.whose if ids[whose]}


def provider_of(start: Any) -> str | None:
    """The indirect provider linked to the relationship: an indirect reseller's only."""
    partner = start.partner
    if getattr(partner, "kind", None) is not PartnerKind.INDIRECT_RESELLER:
        return None
    provider: str | None = getattr(partner, "indirect_provider_id", None)
    return provider


def reaches(send: Send, start: Any) -> bool:
    """Whether a letter has someone to go to: the provider's only where there is one."""
    return send.to is not Recipient.PROVIDER_CONTACT or provider_of(start) is not None


def _partner_staff(by: PartnerStaff, trigger: str, actor: Actor | None, start: Any) -> Denial | None:
    if start.cloud in by.clouds_denied:
        return Denial("cloud", f"{trigger} does not exist in the {start.cloud.value} cloud")
    if actor is None:
        return Denial("actor", f"actor is required for {trigger}")
    allowed = owners(by, start)
    if actor.partner_id not in allowed.values():
        whose = " or ".join(f"{WHOSE[w]} ({allowed[w]})" for w in by.whose if w in allowed) or WHOSE[by.whose[0]]
        return Denial("partner", f"actor.partner_id must be {whose}; {actor.partner_id} may not {trigger}")
    if actor.role not in by.roles:
        roles = ", ".join(sorted(r.value for r in by.roles))
        return Denial("role", f"actor.role {actor.role.value} may not {trigger} (allowed: {roles})")
    if actor.partner_id == start.partner.id and start.partner.kind in by.kinds_denied:
        provider = " (its indirect provider may)" if "provider" in by.whose else ""
        return Denial("partner_kind", f"an {start.partner.kind.value} partner may not {trigger}{provider}")
    return None
