"""The partner registry, for operators and backend services: add, show, list, import.

Every partner fact a lifecycle uses (name, kind, indirect provider, where notices go)
is read from here when a start is admitted; a start for a partner not in it is refused.
The registry lives in the records database, beside the customer list.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Final

from pydantic import ValidationError

from partnerflow.activities.records import Records
from partnerflow.states.errors import describe
from partnerflow.states.models import STRICT, Cloud, Partner

COLUMNS: Final = ("id", "name", "kind", "indirect_provider_id", "contact_email", "locale")


class PartnerInvalid(ValueError):
    """A partner the registry refuses: the message names the field and the rule."""


def partner(fields: Mapping[str, object]) -> Partner:
    """A registry entry, read as new input (ids case-folded, addresses strict); it needs a name.
    A ValidationError names each field and rule."""
    entry = Partner.model_validate(fields, context=STRICT)
    if not entry.name:
        raise PartnerInvalid("name: a registry entry needs the partner's name")
    return entry


@dataclass(frozen=True)
class Added:
    row: int
    partner_id: str
    outcome: str  # added | changed | failed
    error: str = ""


class Partners:
    """The registry of one cloud's partners."""

    def __init__(self, records: Records, cloud: Cloud = Cloud.PUBLIC) -> None:
        self.records, self.cloud = records, cloud

    def add(self, entry: Partner) -> bool:
        """Add or change a partner; True if it was new."""
        return self.records.put_partner(self.cloud.value, entry, now=datetime.now(UTC))

    def show(self, partner_id: str) -> Partner | None:
        return self.records.partner(self.cloud.value, partner_id.lower())

    def all(self) -> list[Partner]:
        return self.records.partner_list(self.cloud.value)

    def import_rows(self, rows: Iterable[dict[str, str]]) -> list[Added]:
        """Each row added or changed, or refused with its reason; a bad row changes nothing."""
        results = []
        for number, row in enumerate(rows, start=1):
            fields = {k: v for k, v in row.items() if k in COLUMNS and v not in (None, "")}
            try:
                entry = partner(fields)
            except ValidationError as error:
                results.append(Added(number, str(row.get("id") or ""), "failed", describe(error)))
                continue
            except PartnerInvalid as error:
                results.append(Added(number, str(row.get("id") or ""), "failed", str(error)))
                continue
            results.append(Added(number, entry.id, "added" if self.add(entry) else "changed"))
        return results

    def import_csv(self, stream: IO[str]) -> list[Added]:
        reader = csv.DictReader(stream)
        missing = {"id", "name"} - set(reader.fieldnames or ())
        if missing:
            raise PartnerInvalid(f"columns: {', '.join(sorted(missing))} missing (columns: {', '.join(COLUMNS)})")
        return self.import_rows(reader)
