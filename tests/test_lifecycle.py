"""The lifecycle table against CONTRACT.md: states, transitions, guards, diagram."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from temporalio.workflow import _Definition

from states.diagram import mermaid
from states.lifecycle import EXTERNAL_GUARDS, FINAL_STATES, GUARD_RULES, STARTS, TRANSITIONS, UPDATES, State
from states.machine import Lifecycle, token_hash
from workflows.relationship import RelationshipWorkflow

# CONTRACT.md's update table, restated on purpose: the table must match it.
CONTRACT: dict[str, tuple[set[str], str]] = {
    "accept_referral": ({"referred"}, "invited"),
    "decline_referral": ({"referred"}, "referral_declined"),
    "resend_invitation": ({"invited", "invitation_expired"}, "invited"),
    "cancel_invitation": ({"invited", "invitation_expired"}, "cancelled"),
    "accept_invitation": ({"invited"}, "active"),
    "decline_invitation": ({"invited"}, "declined"),
    "set_purchase_permission": ({"active"}, "active"),
    "end_relationship": ({"active"}, "ended"),
    "remove_partner": ({"active"}, "ended"),
    "reinstate": ({"ended"}, "invited"),
}
CONTRACT_TIMERS = {
    "expire_referral": ("referred", "referral_expired"),
    "expire_invitation": ("invited", "invitation_expired"),
}
CONTRACT_STATES = {
    "referred", "referral_declined", "referral_expired", "invited", "invitation_expired",
    "declined", "cancelled", "active", "ended",
}  # fmt: skip


def test_the_states_are_the_contracts() -> None:
    """The search attribute values are exactly CONTRACT.md's states."""
    assert {s.value for s in State} == CONTRACT_STATES


def test_every_update_moves_as_the_contract_says() -> None:
    """Each update's sources and destination match CONTRACT.md, and nothing more exists."""
    assert set(UPDATES) == set(CONTRACT)
    for trigger, (sources, dest) in CONTRACT.items():
        rows = [t for t in TRANSITIONS if t.trigger == trigger]
        assert {s.value for t in rows for s in t.sources} == sources, trigger
        assert {t.dest.value for t in rows} == {dest}, trigger
    timers = {t.trigger: (t.sources[0].value, t.dest.value) for t in TRANSITIONS if t.timer}
    assert timers == CONTRACT_TIMERS


def test_every_state_is_reachable_from_a_start() -> None:
    reached = {initial for initial, _, _ in STARTS.values()}
    frontier = list(reached)
    while frontier:
        state = frontier.pop()
        for t in TRANSITIONS:
            if state in t.sources and t.dest not in reached:
                reached.add(t.dest)
                frontier.append(t.dest)
    assert reached == set(State)


def test_only_final_states_have_no_way_out() -> None:
    with_exit = {s for t in TRANSITIONS for s in t.sources}
    assert set(State) - with_exit == FINAL_STATES


def test_every_guard_has_a_rule_and_an_implementation() -> None:
    named = {g for t in TRANSITIONS for g in t.guards}
    assert named == set(GUARD_RULES)
    assert named >= EXTERNAL_GUARDS
    for guard in named:
        assert callable(getattr(Lifecycle, guard))


def test_the_workflow_exposes_exactly_the_updates_of_the_table() -> None:
    defn = _Definition.must_from_class(RelationshipWorkflow)
    # `started` is read-only: update-with-start's way to await the start.
    assert set(defn.updates) == {*UPDATES, "started"}
    assert all(u.validator is not None for u in defn.updates.values()), "every update is validated"
    assert "state" in defn.queries


def _satisfying(trigger: str) -> dict[str, object]:
    """Event data under which every guard of `trigger` holds."""
    command = SimpleNamespace(
        token="t",
        accept_agreement=True,
        allowed=True,
        customer_admin=SimpleNamespace(customer_id="c"),
    )
    return {"command": command, "active_subscriptions": 0}


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("trigger", list(CONTRACT))
def test_the_machine_allows_an_update_only_from_its_contract_states(state: State, trigger: str) -> None:
    """The machine built from the table says yes exactly where CONTRACT.md does."""
    machine = Lifecycle(state, token_sha256=token_hash("t"), customer_id="c")
    assert machine.may(trigger, **_satisfying(trigger)) == (state.value in CONTRACT[trigger][0])


def test_a_failing_guard_is_explained_by_name() -> None:
    machine = Lifecycle(State.INVITED, token_sha256=token_hash("right"))
    command = SimpleNamespace(token="wrong", accept_agreement=True)
    assert not machine.may("accept_invitation", command=command)
    rule, message = machine.why_not("accept_invitation", command=command)
    assert rule == "token_is_valid" and "token" in message


def test_machines_do_not_share_state() -> None:
    """Two relationships' machines are independent (no module-level machine)."""
    a, b = Lifecycle(State.ACTIVE), Lifecycle(State.ACTIVE)
    a.fire("end_relationship", command=SimpleNamespace(), active_subscriptions=0)
    assert (a.state, b.state) == ("ended", "active")


def test_the_readme_diagram_is_generated_from_the_table() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    found = re.search(r"```mermaid\n(.*?)```", readme, re.S)
    assert found, "README.md has no mermaid diagram"
    assert found.group(1) == mermaid(), "README diagram is stale: run `python -m states.diagram`"
