"""The role matrix: every role × every partner action, other partners, kinds and clouds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from partnerflow.states.declaration import CustomerAdmin, PartnerStaff
from partnerflow.states.models import Actor, Cloud, PartnerKind, Role
from partnerflow.states.policy import check
from partnerflow.states.relationship import RELATIONSHIP

ALL_ACTIONS = {r.trigger for r in RELATIONSHIP.rows if isinstance(r.by, PartnerStaff)}
CUSTOMER_ACTIONS = {r.trigger for r in RELATIONSHIP.rows if isinstance(r.by, CustomerAdmin)}
# DOMAIN.md's role table, restated on purpose: the declaration must match it.
EXPECTED: dict[Role, set[str]] = {
    Role.GLOBAL_ADMIN: ALL_ACTIONS,
    Role.ADMIN_AGENT: ALL_ACTIONS,
    Role.SALES_AGENT: ALL_ACTIONS - {"set_purchase_permission", "suspend", "resume"},
    Role.HELPDESK_AGENT: set(),  # read only
}


def _check(action: str, actor: Actor | None, **kw: object) -> str | None:
    start = SimpleNamespace(
        cloud=kw.get("cloud", Cloud.PUBLIC),
        partner=SimpleNamespace(id="p-1", kind=kw.get("kind", PartnerKind.DIRECT)),
        referred_by="dist-1",
    )
    denial = check(RELATIONSHIP, action, actor=actor, start=start)
    return denial.rule if denial else None


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", sorted(ALL_ACTIONS))
def test_each_role_may_do_what_the_domain_says(role: Role, action: str) -> None:
    owner = "dist-1" if action == "refer" else "p-1"
    rule = _check(action, Actor(user="u@p.example", role=role, partner_id=owner))
    assert (rule is None) == (action in EXPECTED[role])
    if rule:
        assert rule == "role"


@pytest.mark.parametrize("action", sorted(ALL_ACTIONS))
def test_an_actor_of_another_partner_is_always_refused(action: str) -> None:
    rule = _check(action, Actor(user="x@evil.example", role=Role.GLOBAL_ADMIN, partner_id="evil"))
    assert rule == "partner"


def test_partner_actions_need_an_actor_and_customer_actions_take_none() -> None:
    assert _check("end_relationship", None) == "actor"
    for action in CUSTOMER_ACTIONS:
        assert _check(action, None) is None


def test_an_indirect_reseller_may_not_end() -> None:
    admin = Actor(user="a@p.example", role=Role.GLOBAL_ADMIN, partner_id="p-1")
    assert _check("end_relationship", admin, kind=PartnerKind.INDIRECT_RESELLER) == "partner_kind"
    assert _check("end_relationship", admin, kind=PartnerKind.INDIRECT_PROVIDER) is None


@pytest.mark.parametrize("action", ["refer", "accept_referral", "decline_referral"])
def test_referrals_do_not_exist_in_usgov(action: str) -> None:
    owner = "dist-1" if action == "refer" else "p-1"
    admin = Actor(user="a@p.example", role=Role.GLOBAL_ADMIN, partner_id=owner)
    assert _check(action, admin, cloud=Cloud.USGOV) == "cloud"
    assert _check(action, admin, cloud=Cloud.PUBLIC) is None


def test_the_timer_s_triggers_are_no_caller_s() -> None:
    admin = Actor(user="a@p.example", role=Role.GLOBAL_ADMIN, partner_id="p-1")
    assert _check("expire_invitation", admin) == "action" and _check("unheard_of", admin) == "action"


def test_a_referral_is_started_by_the_referring_partner() -> None:
    assert _check("refer", Actor(user="a@p.example", role=Role.SALES_AGENT, partner_id="p-1")) == "partner"
