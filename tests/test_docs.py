"""The contract in docs/ is generated where a declaration can say it, and is current."""

from __future__ import annotations

from partnerflow import docs
from partnerflow.states.relationship import RELATIONSHIP


def test_the_contract_s_generated_tables_are_current() -> None:
    """Run `python -m partnerflow.docs` after changing a declaration or a public name."""
    text = docs.CONTRACT.read_text(encoding="utf-8")
    assert docs.render(text) == text, "docs/CONTRACT.md is stale: run `python -m partnerflow.docs`"


def test_every_row_and_guard_of_the_relationship_is_in_the_contract() -> None:
    text = docs.CONTRACT.read_text(encoding="utf-8")
    for row in RELATIONSHIP.rows:
        assert f"| `{row.trigger}` |" in text
    for guard in RELATIONSHIP.guards().values():
        assert guard.rule in text
