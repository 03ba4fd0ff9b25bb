"""The public test kit: any state in one line, the latest token from the mail."""

from __future__ import annotations

import pytest

from partnerflow.states.delegated_admin import DELEGATED_ADMIN
from partnerflow.states.models import State
from partnerflow.testing import Harness, path_to

pytestmark = pytest.mark.server


@pytest.mark.parametrize("state", list(State))
async def test_bring_to_reaches_every_state(partnerflow: Harness, state: State) -> None:
    """`bring_to` follows the lifecycle table's shortest path, timers included."""
    handle = await partnerflow.bring_to(state)
    view = await partnerflow.view(handle)
    assert view.state == state
    assert len(view.audit) == len(path_to(state)[1]) + 1


async def test_latest_token_is_the_one_that_works(partnerflow: Harness) -> None:
    handle = await partnerflow.bring_to("invited")
    await partnerflow.update(handle, "resend_invitation", partnerflow.payload("resend_invitation", ""))
    assert len(partnerflow.tokens()) == 2
    view = await partnerflow.update(handle, "accept_invitation", partnerflow.payload("accept_invitation", ""))
    assert view.state == "active"


@pytest.mark.parametrize("state", DELEGATED_ADMIN.states)
async def test_bring_to_reaches_every_delegated_admin_state(partnerflow: Harness, state: str) -> None:
    """The same kit drives the second lifecycle: its own start, link, timers and customer proofs."""
    handle = await partnerflow.bring_to(state, lifecycle=DELEGATED_ADMIN)
    view = await partnerflow.view(handle)
    assert view.state == state
    assert len(view.audit) == len(path_to(state, DELEGATED_ADMIN)[1]) + 1
