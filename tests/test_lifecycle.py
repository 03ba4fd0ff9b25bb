"""The lifecycle table against CONTRACT.md: states, transitions, guards, diagram."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from temporalio.workflow import _Definition

from partnerflow.states.declaration import Facts, Lifecycle, Row, Send, Timer
from partnerflow.states.diagram import mermaid
from partnerflow.states.lifecycles import LIFECYCLES
from partnerflow.states.machine import LifecycleMachine
from partnerflow.states.models import State
from partnerflow.states.relationship import RELATIONSHIP
from partnerflow.workflows.lifecycles import WORKFLOWS
from tests.helpers import CONTRACT

EVERY = pytest.mark.parametrize("lifecycle", list(LIFECYCLES.values()), ids=list(LIFECYCLES))

CONTRACT_TIMERS = {
    "expire_referral": ("referred", "referral_expired"),
    "expire_invitation": ("invited", "invitation_expired"),
    "end_suspended": ("suspended", "ended"),
}
CONTRACT_STATES = {
    "referred", "referral_declined", "referral_expired", "invited", "invitation_expired",
    "declined", "cancelled", "active", "suspended", "ended",
}  # fmt: skip


def test_the_states_are_the_contracts() -> None:
    """The search attribute values are exactly CONTRACT.md's states."""
    assert {s.value for s in State} == CONTRACT_STATES


def test_every_update_moves_as_the_contract_says() -> None:
    """Each update's sources and destination match CONTRACT.md, and nothing more exists."""
    assert set(RELATIONSHIP.updates) == set(CONTRACT)
    for trigger, (sources, dest) in CONTRACT.items():
        assert set(RELATIONSHIP.sources_of(trigger)) == sources, trigger
        assert {r.dest for r in RELATIONSHIP.rows_for(trigger)} == {dest}, trigger
    timers = {r.trigger: (r.sources[0], r.dest) for r in RELATIONSHIP.rows if isinstance(r.by, Timer)}
    assert timers == CONTRACT_TIMERS


@EVERY
def test_every_state_is_reachable_from_a_start(lifecycle: Lifecycle) -> None:
    reached = {r.dest for r in lifecycle.starts}
    frontier = list(reached)
    while frontier:
        state = frontier.pop()
        for row in lifecycle.rows:
            if state in row.sources and row.dest not in reached:
                reached.add(row.dest)
                frontier.append(row.dest)
    assert reached == set(lifecycle.states)


@EVERY
def test_only_final_states_have_no_way_out(lifecycle: Lifecycle) -> None:
    with_exit = {s for r in lifecycle.rows for s in r.sources}
    assert set(lifecycle.states) - with_exit == lifecycle.final


@EVERY
def test_every_guard_has_a_rule_in_words(lifecycle: Lifecycle) -> None:
    for guard in lifecycle.guards().values():
        assert len(guard.rule.split()) >= 3, guard.name


@EVERY
def test_the_workflow_exposes_exactly_the_updates_of_the_declaration(lifecycle: Lifecycle) -> None:
    defn = _Definition.must_from_class(WORKFLOWS[lifecycle.name])
    # `started` is read-only: update-with-start's way to await the start.
    assert set(defn.updates) == {*lifecycle.updates, "started"}
    assert all(u.validator is not None for u in defn.updates.values()), "every update is validated"
    assert "state" in defn.queries
    for trigger in lifecycle.updates:
        assert defn.updates[trigger].arg_types == [lifecycle.commands[trigger].payload], trigger


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"dest": "nowhere"}, "unknown state nowhere"),
        ({"effects": (Send("no_such_letter", RELATIONSHIP.rows[0].sends()[0].to),)}, "no text for letter"),
        ({"trigger": "unheard_of"}, "no command declares its payload"),
    ],
)
def test_a_declaration_that_contradicts_itself_is_refused_when_built(change: dict[str, object], problem: str) -> None:
    """A wrong row fails at import, naming what is wrong, never at run time."""
    ended = next(r for r in RELATIONSHIP.rows if r.trigger == "reinstate")
    broken = Row(**{**vars(ended), **change})  # type: ignore[arg-type]
    rows = tuple(broken if r is ended else r for r in RELATIONSHIP.rows)
    with pytest.raises(ValueError, match=problem):
        Lifecycle(**{**vars(RELATIONSHIP), "rows": rows})


def _satisfying(trigger: str) -> Facts:
    """Facts under which every guard of `trigger` holds."""
    command = SimpleNamespace(
        token="t",
        accept_agreement=True,
        allowed=True,
        customer_admin=SimpleNamespace(customer_id="c"),
    )
    fields = {**RELATIONSHIP.fields, **RELATIONSHIP.flags}
    return Facts(command=command, fields=fields, customer_id="c", token_is_live=True, fact=0)


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("trigger", list(CONTRACT))
def test_the_machine_allows_an_update_only_from_its_contract_states(state: State, trigger: str) -> None:
    """The machine built from the declaration says yes exactly where CONTRACT.md does."""
    machine = LifecycleMachine(RELATIONSHIP, state)
    assert machine.may(trigger, _satisfying(trigger)) == (state.value in CONTRACT[trigger][0])


def test_a_failing_guard_is_explained_by_name() -> None:
    machine = LifecycleMachine(RELATIONSHIP, State.INVITED)
    facts = Facts(command=SimpleNamespace(token="wrong", accept_agreement=True), fields={}, customer_id="c")
    assert not machine.may("accept_invitation", facts)
    rule, message = machine.why_not("accept_invitation", facts)
    assert rule == "token_is_valid" and "token" in message


def test_machines_do_not_share_state() -> None:
    """Two relationships' machines are independent (no module-level machine)."""
    a, b = LifecycleMachine(RELATIONSHIP, State.ACTIVE), LifecycleMachine(RELATIONSHIP, State.ACTIVE)
    a.fire("end_relationship", _satisfying("end_relationship"))
    assert (a.state, b.state) == ("ended", "active")


def test_the_readme_diagram_is_generated_from_the_table() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    found = re.search(r"```mermaid\n(.*?)```", readme, re.S)
    assert found, "README.md has no mermaid diagram"
    stale = "README diagram is stale: run `python -m partnerflow.states.diagram`"
    assert found.group(1) == mermaid(RELATIONSHIP), stale
