"""Every declared lifecycle, by name: what the worker runs and the docs, CLI and tests derive from."""

from __future__ import annotations

from partnerflow.states.declaration import Lifecycle
from partnerflow.states.delegated_admin import DELEGATED_ADMIN
from partnerflow.states.relationship import RELATIONSHIP

LIFECYCLES: dict[str, Lifecycle] = {lc.name: lc for lc in (RELATIONSHIP, DELEGATED_ADMIN)}


def by_workflow_type(workflow_type: str) -> Lifecycle:
    return next(lc for lc in LIFECYCLES.values() if lc.workflow_type == workflow_type)


def by_workflow_id(workflow_id: str) -> Lifecycle | None:
    """The lifecycle a workflow id belongs to, by the fixed prefix of its id format."""
    return next((lc for lc in LIFECYCLES.values() if workflow_id.startswith(lc.workflow_id.split("{")[0])), None)


def by_start_model(model: type) -> Lifecycle:
    for lc in LIFECYCLES.values():
        if lc.start_model is model:
            return lc
    raise ValueError(f"{model.__name__} is no declared lifecycle's start input")
