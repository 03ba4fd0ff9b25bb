"""The worker registers missing search attributes, so an older dev database keeps working."""

from __future__ import annotations

import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from partnerflow.runtime import search_attributes
from partnerflow.testing import BIN

pytestmark = pytest.mark.server


async def test_missing_attributes_are_added_once() -> None:
    """A server that knows none of them (an old `.dev/temporal.db`) gets them all, once."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"), namespace="relationships"
    )
    try:
        added = await search_attributes.register(env.client, "relationships")
        assert added == sorted(search_attributes.SEARCH_ATTRIBUTES)
        listed = await env.client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace="relationships")
        )
        assert set(search_attributes.SEARCH_ATTRIBUTES) <= set(listed.custom_attributes)
        assert await search_attributes.register(env.client, "relationships") == []
    finally:
        await env.shutdown()
