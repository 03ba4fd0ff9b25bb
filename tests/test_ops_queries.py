"""The README's saved searches, run against a real server's visibility store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from partnerflow.ops import saved_queries
from partnerflow.testing import Harness, poll

pytestmark = pytest.mark.server
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


async def _ids(harness: Harness, query: str) -> set[str]:
    return {w.id async for w in harness.client.list_workflows(query)}


async def test_each_saved_search_finds_what_it_says(partnerflow_live: Harness) -> None:
    partner = f"ops-{datetime.now(UTC).timestamp():.0f}"
    pending = await partnerflow_live.bring_to("invited", partner={"id": partner}, actor={"partner_id": partner})
    ended = await partnerflow_live.bring_to("ended", partner={"id": partner}, actor={"partner_id": partner})
    soon = await partnerflow_live.bring_to(
        "invited",
        partner={"id": partner},
        actor={"partner_id": partner},
        timers={"invitation_ttl": "P2D", "reminders_before": []},
    )
    now = datetime.now(UTC)
    queries = saved_queries(now, partner)
    mine = f" AND PartnerId = '{partner}'"
    a_week_later = saved_queries(now + timedelta(days=8), partner)["pending-over-a-week"] + mine
    expected = {
        queries["one-partner"]: {pending.id, ended.id, soon.id},
        queries["expiring-in-3-days"] + mine: {soon.id},
        queries["ended-this-month"] + mine: {ended.id},
        a_week_later: {pending.id, soon.id},
    }
    # Visibility is eventually consistent: a workflow's later search attributes (the deadline
    # set once its start is recorded) can trail its first ones. Await every answer.
    for query, ids in expected.items():

        async def answers(query: str = query, ids: set[str] = ids) -> bool:
            return await _ids(partnerflow_live, query) == ids

        await poll(answers, attempts=100)
    assert await _ids(partnerflow_live, queries["pending-over-a-week"] + mine) == set()


def test_the_readme_lists_every_saved_search() -> None:
    for name in saved_queries(datetime.now(UTC)):
        assert f"`{name}`" in README, f"README ops guide misses the saved search {name}"
