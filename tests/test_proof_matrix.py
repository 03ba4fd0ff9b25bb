"""The trust matrix, generated from the declarations: every action of every lifecycle, sent with
each kind of proof, against the real workflow. Only the right actor with a fresh, genuine
assertion gets through; everything else is refused, naming the rule, and changes nothing.

Actions and who may fire them are read off the rows (`by`), never listed here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from partnerflow.runtime.keys import Signer
from partnerflow.states.declaration import CustomerAdmin, Lifecycle, PartnerStaff, Row, Timer, Upstream
from partnerflow.states.lifecycles import LIFECYCLES
from partnerflow.states.models import Role
from partnerflow.testing import KIT_KEYS, START_OVERRIDES, Harness, ids_of, path_to, start_input, workflow_id_of

#: What a caller may send as proof. `right` is the only one that may take effect.
Variant = Callable[[dict[str, Any], str, str], dict[str, Any]]


def _claims(payload: dict[str, Any], action: str, wid: str) -> dict[str, Any]:
    """What a genuine assertion for this payload says (partner staff or the customer's admin)."""
    if "actor" in payload:
        a = payload["actor"]
        return {
            "sub": a["user"],
            "partner_id": a["partner_id"],
            "role": a["role"],
            "action": action,
            "workflow_id": wid,
        }
    admin = payload["customer_admin"]
    return {"sub": admin["email"], "customer_id": admin["customer_id"], "action": action, "workflow_id": wid}


def _issuer(payload: dict[str, Any]) -> Signer:
    return KIT_KEYS.partners if "actor" in payload else KIT_KEYS.customers


def _signed_by(signer: Signer, *, now: datetime | None = None) -> Variant:
    return lambda p, action, wid: {**p, "proof": signer.sign(_claims(p, action, wid), now=now)}


def _right(p: dict[str, Any], action: str, wid: str) -> dict[str, Any]:
    return {**p, "proof": _issuer(p).sign(_claims(p, action, wid))}


def _another_partner(p: dict[str, Any], action: str, wid: str) -> dict[str, Any]:
    if "actor" in p:
        changed = {**p, "actor": {**p["actor"], "partner_id": "p-other"}}
    else:
        changed = {**p, "customer_admin": {**p["customer_admin"], "customer_id": "c-other"}}
    return _right(changed, action, wid)


def _forged(p: dict[str, Any], action: str, wid: str) -> dict[str, Any]:
    genuine = _issuer(p)  # its name and key id, another key
    return _signed_by(Signer(genuine.issuer, Ed25519PrivateKey.generate(), genuine.kid))(p, action, wid)


def _expired(p: dict[str, Any], action: str, wid: str) -> dict[str, Any]:
    return _signed_by(_issuer(p), now=datetime.now(UTC) - timedelta(minutes=10))(p, action, wid)


def _wrong_audience(p: dict[str, Any], action: str, wid: str) -> dict[str, Any]:
    s = _issuer(p)
    return _signed_by(Signer(s.issuer, s.key, s.kid, audience="another-service"))(p, action, wid)


def _wrong_issuer(p: dict[str, Any], action: str, wid: str) -> dict[str, Any]:
    """A genuine assertion from an issuer that may not make this kind of claim."""
    other = KIT_KEYS.customers if "actor" in p else KIT_KEYS.partners
    return _signed_by(other)(p, action, wid)


def _none(p: dict[str, Any], action: str, wid: str) -> dict[str, Any]:
    return {k: v for k, v in p.items() if k != "proof"}


#: Each refusal and the rule it must name.
REFUSED: dict[str, tuple[Variant, str]] = {
    "another partner (or customer)": (_another_partner, "partner|proof"),
    "forged": (_forged, "proof"),
    "expired": (_expired, "proof"),
    "wrong audience": (_wrong_audience, "proof"),
    "issuer not allowed": (_wrong_issuer, "proof"),
    "none": (_none, "proof"),
}


def proven_actions() -> list[tuple[Lifecycle, str]]:
    """Every action a caller proves with an assertion: starts and partner updates, and customer
    updates made through the customer portal. (Link-token rows are proven by the token: their
    own tests; timer rows are no caller's: checked below.)"""
    found = []
    for lifecycle in LIFECYCLES.values():
        for trigger in dict.fromkeys(r.trigger for r in lifecycle.rows):
            by = lifecycle.by(trigger)
            if isinstance(by, PartnerStaff) or (isinstance(by, CustomerAdmin) and by.proof == "portal"):
                found.append((lifecycle, trigger))
    return found


def _rule(error: BaseException) -> tuple[str | None, str]:
    cause = error.cause if isinstance(error, WorkflowUpdateFailedError | WorkflowFailureError) else error
    assert isinstance(cause, ApplicationError), error
    details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
    return cause.type, str(details.get("rule"))


#: Updates whose guards need an earlier one (a group must have access before it is changed).
NEEDS_FIRST = {"update_assignment": ("assign",), "delete_assignment": ("assign",)}
#: Every start row's input: the kit's, and a request an invitation carries (no link of its own).
STARTS = {**START_OVERRIDES, "create_with_invitation": {**START_OVERRIDES["create"], "with_invitation": True}}


async def _try_start(h: Harness, body: dict[str, Any], lifecycle: Lifecycle) -> WorkflowHandle[Any, Any]:
    return await h.start(body, prove=False, lifecycle=lifecycle)


async def _start_matrix(h: Harness, lifecycle: Lifecycle, row: Row) -> None:
    overrides = STARTS[row.trigger]
    for name, (variant, rules) in REFUSED.items():
        body = start_input(**overrides)
        handle = await _try_start(h, variant(body, row.trigger, _workflow_id(lifecycle, body)), lifecycle)
        with pytest.raises(WorkflowFailureError) as refused:
            await handle.result()
        kind, rule = _rule(refused.value)
        assert kind == "PermissionDenied" and rule in rules.split("|"), (row.trigger, name, refused.value.cause)
        assert h.records.audit_trail(handle.id) == []
    body = start_input(**overrides)
    proven = _right(body, row.trigger, _workflow_id(lifecycle, body))
    handle = await _try_start(h, proven, lifecycle)
    view = await h.wait_for_state(handle, row.dest)
    assert view.state == row.dest
    await handle.terminate("a new run of the same relationship follows")
    again = await _try_start(h, proven, lifecycle)  # the very same assertion, replayed
    with pytest.raises(WorkflowFailureError) as replayed:
        await again.result()
    assert _rule(replayed.value) == ("PermissionDenied", "proof"), replayed.value.cause
    assert "already used" in str(replayed.value.cause)


def _workflow_id(lifecycle: Lifecycle, body: dict[str, Any]) -> str:
    return workflow_id_of(lifecycle, body)


async def _update_matrix(h: Harness, lifecycle: Lifecycle, trigger: str) -> None:
    row = lifecycle.rows_for(trigger)[0]
    first, _ = path_to(row.sources[0], lifecycle)
    handle = await h.bring_to(row.sources[0], lifecycle=lifecycle, **START_OVERRIDES[first.trigger])
    partner_id, customer_id = ids_of(handle.id)
    payload = h.payload(trigger, customer_id, partner_id)
    for needed in NEEDS_FIRST.get(trigger, ()):  # what the row's guards need to have happened
        await h.update(handle, needed, h.payload(needed, customer_id, partner_id))
    before = await h.view(handle)
    for name, (variant, rules) in REFUSED.items():
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await h.update(handle, trigger, variant(payload, trigger, handle.id), prove=False)
        kind, rule = _rule(refused.value)
        assert kind == "PermissionDenied" and rule in rules.split("|"), (trigger, name, refused.value.cause)
    if isinstance(row.by, PartnerStaff):
        outsider = next(r for r in Role if r not in row.by.roles)  # helpdesk_agent is in no row
        wrong_role = {**payload, "actor": {**payload["actor"], "role": outsider.value}}
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await h.update(handle, trigger, _right(wrong_role, trigger, handle.id), prove=False)
        assert _rule(refused.value) == ("PermissionDenied", "role")
    assert await h.view(handle) == before, "a refused update changes nothing"
    proven = _right(payload, trigger, handle.id)
    view = await h.update(handle, trigger, proven, prove=False)
    assert view.state == row.dest
    if row.dest in lifecycle.final:  # the workflow has completed: nothing takes an update any more
        with pytest.raises(RPCError, match="not found"):
            await h.update(handle, trigger, proven, prove=False)
        return
    with pytest.raises(WorkflowUpdateFailedError) as replayed:
        await h.update(handle, trigger, proven, prove=False)
    assert _rule(replayed.value) == ("PermissionDenied", "proof") and "already used" in str(replayed.value.cause)


@pytest.mark.parametrize(("lifecycle", "trigger"), proven_actions(), ids=lambda v: getattr(v, "name", v))
async def test_only_the_right_actor_with_a_fresh_genuine_proof_acts(
    partnerflow: Harness, lifecycle: Lifecycle, trigger: str
) -> None:
    row = lifecycle.rows_for(trigger)[0]
    if row.is_start:
        await _start_matrix(partnerflow, lifecycle, row)
    else:
        await _update_matrix(partnerflow, lifecycle, trigger)


def test_every_action_is_in_the_matrix_or_proven_otherwise() -> None:
    """A row's caller is proven by an assertion (above), by the link token (the token tests), or
    is the timer, which no caller can send: no update exists for it; or is a related lifecycle's
    change (a cascade), which is no update either and proves itself from the records."""
    for lifecycle in LIFECYCLES.values():
        for row in lifecycle.rows:
            if isinstance(row.by, Timer):
                assert row.trigger not in lifecycle.updates
            elif isinstance(row.by, Upstream):
                assert row.trigger not in lifecycle.updates
                assert row.guards and all(g.needs for g in row.guards), f"{row.trigger}: a signal proves nothing"
            elif isinstance(row.by, CustomerAdmin) and row.by.proof == "token":
                assert any(g.name == "token_is_valid" for g in row.guards), row.trigger
            else:
                assert (lifecycle, row.trigger) in proven_actions()
