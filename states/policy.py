"""Who may do what: role, partner-kind and cloud rules, as tables.

`check` answers for one request; the workflow's validators, the client and
the role-matrix tests all ask it, so the rules live only here.
"""

from __future__ import annotations

from dataclasses import dataclass

from states.models import Actor, Cloud, PartnerKind, Role

R = Role

_PARTNER_STAFF = frozenset({R.GLOBAL_ADMIN, R.ADMIN_AGENT, R.SALES_AGENT})

# fmt: off
#: Partner-side actions and the roles that may take them. `helpdesk_agent` is in
#: no row: it reads only. Starting a relationship is `invite` or `refer`.
PARTNER_ROLES: dict[str, frozenset[Role]] = {
    "invite":                  _PARTNER_STAFF,
    "refer":                   _PARTNER_STAFF,
    "accept_referral":         _PARTNER_STAFF,
    "decline_referral":        _PARTNER_STAFF,
    "resend_invitation":       _PARTNER_STAFF,
    "cancel_invitation":       _PARTNER_STAFF,
    "set_purchase_permission": frozenset({R.GLOBAL_ADMIN, R.ADMIN_AGENT}),
    "end_relationship":        _PARTNER_STAFF,
    "reinstate":               _PARTNER_STAFF,
}

#: Actions only the customer's global admin takes (no partner actor at all).
CUSTOMER_ACTIONS: frozenset[str] = frozenset({"accept_invitation", "decline_invitation", "remove_partner"})

#: Partner kinds that may never take an action.
KIND_DENIED: dict[str, frozenset[PartnerKind]] = {
    "end_relationship": frozenset({PartnerKind.INDIRECT_RESELLER}),
}

#: Clouds in which an action does not exist (no referrals in the US Government cloud).
CLOUD_DENIED: dict[str, frozenset[Cloud]] = {
    "refer":            frozenset({Cloud.USGOV}),
    "accept_referral":  frozenset({Cloud.USGOV}),
    "decline_referral": frozenset({Cloud.USGOV}),
}
# fmt: on


@dataclass(frozen=True)
class Denial:
    """Why a request is refused: the rule's name and a sentence naming the field."""

    rule: str
    message: str


def check(
    action: str,
    *,
    actor: Actor | None,
    cloud: Cloud,
    partner_id: str,
    partner_kind: PartnerKind,
    referred_by: str | None = None,
) -> Denial | None:
    """None if `actor` may take `action` on this relationship, else the denial."""
    if cloud in CLOUD_DENIED.get(action, ()):
        return Denial("cloud", f"{action} does not exist in the {cloud.value} cloud")
    if action in CUSTOMER_ACTIONS:
        return None  # the customer side is authenticated by its token or portal
    roles = PARTNER_ROLES.get(action)
    if roles is None:
        return Denial("action", f"unknown action {action}")
    if actor is None:
        return Denial("actor", f"actor is required for {action}")
    owner = referred_by if action == "refer" else partner_id
    if actor.partner_id != owner:
        whose = "the referring partner" if action == "refer" else "the relationship's partner"
        return Denial(
            "partner",
            f"actor.partner_id must be {whose} ({owner}); {actor.partner_id} may not {action}",
        )
    if actor.role not in roles:
        allowed = ", ".join(sorted(r.value for r in roles))
        return Denial("role", f"actor.role {actor.role.value} may not {action} (allowed: {allowed})")
    if partner_kind in KIND_DENIED.get(action, ()):
        return Denial("partner_kind", f"an {partner_kind.value} partner may not {action}")
    return None
