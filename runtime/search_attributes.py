"""The custom search attributes partnerflow keeps current: ids, states and a deadline, no personal data."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from partnerflow.states.names import SEARCH_ATTRIBUTES


def cli_flags() -> list[str]:
    """`temporal server start-dev` flags registering them in every namespace."""
    return [f"--search-attribute={name}={kind}" for name, kind in SEARCH_ATTRIBUTES.items()]


async def register(client: Client, namespace: str) -> list[str]:
    """Register the ones `namespace` lacks; returns their names. Idempotent.

    The worker calls it at start: a server started before an attribute was added
    (an old `.dev/temporal.db`) would otherwise fail every workflow task that sets it.
    """
    kinds = {
        "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    }
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        known = set(existing.custom_attributes) | set(existing.system_attributes)
    except RPCError as error:
        if error.status is not RPCStatusCode.UNIMPLEMENTED:  # the time-skipping test server
            raise
        known = set()
    missing = {name: kinds[kind] for name, kind in SEARCH_ATTRIBUTES.items() if name not in known}
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    except RPCError as error:
        # Some servers (the test server) keep one set for all namespaces.
        if error.status is not RPCStatusCode.ALREADY_EXISTS:
            raise
    return sorted(missing)
