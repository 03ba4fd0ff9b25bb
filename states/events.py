"""An event as its consumers read it: a CloudEvents 1.0 JSON object made from a row of the
event log, and which events a webhook wants. No I/O: the records and the delivery use it."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

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
