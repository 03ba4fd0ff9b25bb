"""Every declared lifecycle, by name: what the worker runs and the docs, CLI and tests derive from."""

from __future__ import annotations

from partnerflow.states.declaration import Lifecycle
from partnerflow.states.relationship import RELATIONSHIP

LIFECYCLES: dict[str, Lifecycle] = {lc.name: lc for lc in (RELATIONSHIP,)}


def by_workflow_type(workflow_type: str) -> Lifecycle:
    return next(lc for lc in LIFECYCLES.values() if lc.workflow_type == workflow_type)
