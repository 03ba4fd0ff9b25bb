"""The custom search attributes partnerflow keeps current: ids, states and a deadline, no personal data."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

SEARCH_ATTRIBUTES: dict[str, str] = {
    "RelationshipState": "Keyword",
    "PartnerId": "Keyword",
    "CustomerId": "Keyword",
    "Cloud": "Keyword",
    "InvitationExpiresAt": "Datetime",  # the latest invitation's deadline: "about to lapse"
    "StateChangedAt": "Datetime",  # when the state last changed: "ended this month"
}


def cli_flags() -> list[str]:
    """`temporal server start-dev` flags registering them in every namespace."""
    return [f"--search-attribute={name}={kind}" for name, kind in SEARCH_ATTRIBUTES.items()]


async def register(client: Client, namespace: str) -> None:
    """Register them on a server that was not started with `cli_flags` (tests, clusters)."""
    kinds = {
        "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    }
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={name: kinds[kind] for name, kind in SEARCH_ATTRIBUTES.items()},
            )
        )
    except RPCError as error:
        # Idempotent: some servers (the test server) keep one set for all namespaces.
        if error.status is not RPCStatusCode.ALREADY_EXISTS:
            raise
