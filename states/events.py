"""An event as its consumers read it: a CloudEvents 1.0 JSON object made from a row of the
event log, and which events a webhook wants. No I/O: the records and the delivery use it."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SPEC_VERSION = "1.0"
#: The extension attribute carrying the event's place in the log: the cursor to resume after.
SEQ_ATTRIBUTE = "partnerflowseq"


def cloud_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """The CloudEvents 1.0 structured form: `id` is stable (a consumer dedupes on it), `subject`
    the lifecycle's workflow id, `data` the change (schemas/event.json)."""
    time = row["time"]
    return {
        "specversion": SPEC_VERSION,
        "id": row["event_id"],
        "source": f"/partnerflow/{row['cloud']}/{row['lifecycle']}",
        "type": row["type"],
        "subject": row["subject"],
        "time": time.isoformat() if isinstance(time, datetime) else str(time),
        "datacontenttype": "application/json",
        SEQ_ATTRIBUTE: int(row["seq"]),
        "data": row["data"],
    }


def wanted(patterns: Iterable[str], event_type: str) -> bool:
    """A webhook's filter: shell-style patterns (`reseller-relationship-*`); none means all."""
    patterns = list(patterns)
    return not patterns or any(fnmatch.fnmatchcase(event_type, p) for p in patterns)


class EventActor(BaseModel):
    """Who made the change (a partner user, the customer's admin, or `system` for a timer)."""

    user: str
    role: str


class EventData(BaseModel):
    """An event's `data`, schema version 1: the change, and the record it left."""

    model_config = ConfigDict(extra="allow")  # later versions add; a consumer ignores what it does not know

    schema_version: Literal[1]
    lifecycle: str
    operation: str = Field(description="the audit operation, in the program's names")
    before_state: str | None = Field(description="none for the change that started the lifecycle")
    after_state: str
    actor: EventActor
    reason: str = ""
    sequence: int = Field(description="the lifecycle's audit sequence number: 1 for its first change")
    record: dict[str, Any] = Field(description="the lifecycle's current record after the change")


class CloudEvent(BaseModel):
    """One event as delivered and replayed: CloudEvents 1.0, structured JSON mode."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: str = Field(description="stable: redeliveries repeat it; a consumer dedupes on it")
    source: str
    type: str
    subject: str = Field(description="the lifecycle's workflow id")
    time: datetime
    datacontenttype: Literal["application/json"]
    partnerflowseq: int = Field(description="the event's place in the log: ask `since` it to resume")
    data: EventData
