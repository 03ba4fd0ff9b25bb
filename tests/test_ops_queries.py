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

    async def visible() -> bool:
        return len(await _ids(partnerflow_live, saved_queries(now, partner)["one-partner"])) == 3

    await poll(visible, attempts=100)
    queries = saved_queries(now, partner)
    mine = f" AND PartnerId = '{partner}'"
    assert await _ids(partnerflow_live, queries["expiring-in-3-days"] + mine) == {soon.id}
    assert await _ids(partnerflow_live, queries["ended-this-month"] + mine) == {ended.id}
    assert await _ids(partnerflow_live, queries["pending-over-a-week"] + mine) == set()
    a_week_later = saved_queries(now + timedelta(days=8), partner)["pending-over-a-week"] + mine
    assert await _ids(partnerflow_live, a_week_later) == {pending.id, soon.id}


def test_the_readme_lists_every_saved_search() -> None:
    for name in saved_queries(datetime.now(UTC)):
        assert f"`{name}`" in README, f"README ops guide misses the saved search {name}"
