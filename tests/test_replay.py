"""Safe deploys: today's workflow code replays every history captured from earlier versions."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from partnerflow.runtime.converter import data_converter
from partnerflow.states.messages import RECORD_AND_FIND, RECORD_CHANGE, RELATED, SEND_NOTICE, read_fact, send_link
from partnerflow.states.relationship import RELATIONSHIP
from partnerflow.workflows import interpreter
from partnerflow.workflows.interpreter import ADMISSION_PATCH, ENGINE_PATCH
from partnerflow.workflows.lifecycles import WORKFLOWS

EXPIRY_PATCH = next(s.since for r in RELATIONSHIP.rows for s in r.sends() if s.since)
HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    raw = json.loads(path.read_text())
    attributes = raw["events"][0]["workflowExecutionStartedEventAttributes"]
    workflow_id = attributes.get("workflowId") or path.stem
    return WorkflowHistory.from_json(workflow_id, raw)


def _markers(path: Path, name: str, detail: str, key: str) -> list[str]:
    """`key` of each marker `name` a history holds (its JSON detail `detail`), in order."""
    found = []
    for event in json.loads(path.read_text())["events"]:
        marker = event.get("markerRecordedEventAttributes", {})
        if marker.get("markerName") == name:
            data = marker["details"][detail]["payloads"][0]["data"]
            found.append(json.loads(base64.b64decode(data))[key])
    return found


def patches_of(path: Path) -> list[str]:
    """The patch markers a history holds, in order."""
    return _markers(path, "core_patch", "patch-data", "id")


def upserts_of(path: Path) -> list[set[str]]:
    """The search attributes each upsert of a history sets, in order."""
    return [
        set(event["upsertWorkflowSearchAttributesEventAttributes"]["searchAttributes"]["indexedFields"])
        for event in json.loads(path.read_text())["events"]
        if "upsertWorkflowSearchAttributesEventAttributes" in event
    ]


def local_activities_of(path: Path) -> list[str]:
    """The local activities a history recorded, in order."""
    return _markers(path, "core_local_activity", "data", "activity_type")


def replayer() -> Replayer:
    # The namespace matters: the workflow refuses to run a cloud outside its own.
    return Replayer(workflows=list(WORKFLOWS.values()), data_converter=data_converter, namespace="relationships")


def test_histories_of_every_version_are_committed() -> None:
    versions = {p.name.split("-")[0] for p in HISTORIES}
    assert {"v1", "v2", "v3", "v4"} <= versions


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "v4"])
def test_every_version_calls_the_activities_by_the_same_names(version: str) -> None:
    """The engine (v3) derives its activities' names (`send_notice`, `send_<page>`, `count_<fact>`)
    so they are the names v1 and v2 wrote: no patch is needed for them (v2 and v3 carry only
    the expiry notice's)."""
    expected = {
        SEND_NOTICE.name,
        RECORD_CHANGE.name,
        send_link("invitation").name,
        read_fact("active_subscriptions").name,
    }
    scheduled: set[str] = set()
    patches: set[str] = set()
    for path in (p for p in HISTORIES if p.name.startswith(f"{version}-")):
        for event in json.loads(path.read_text())["events"]:
            attributes = event.get("activityTaskScheduledEventAttributes")
            if attributes:
                scheduled.add(attributes["activityType"]["name"])
        patches |= set(patches_of(path))
    assert scheduled and scheduled <= expected
    # v2 on: the expiry notice's; v4 on: the start's admission (registry and proof). No other.
    expected_patches = {"v1": set(), "v2": {EXPIRY_PATCH}, "v3": {EXPIRY_PATCH}}.get(
        version, {EXPIRY_PATCH, ADMISSION_PATCH}
    )
    assert patches == expected_patches


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_todays_code_replays_the_history(path: Path) -> None:
    """A non-deterministic change would fail here, before it reaches running relationships."""
    result = await replayer().replay_workflow(load(path), raise_on_replay_failure=True)
    assert result.replay_failure is None


def test_a_run_begun_under_the_engine_patch_records_that_patch_alone() -> None:
    """v8 on: one marker where a v7 whole life wrote four (admission, link and letters with the
    change, the delegated admin's end), each with its `TemporalChangeVersion` upsert; and its own
    attributes once per change, only those that changed (v7 also published them at the start)."""
    v7, v8 = (next(p for p in HISTORIES if p.name == f"{v}-whole-life.json") for v in ("v7", "v8"))
    assert len(patches_of(v7)) == 4
    assert set(patches_of(v7)) <= interpreter.IN_ENGINE_PATCH
    for path in (p for p in HISTORIES if p.name.startswith("v8-")):
        assert patches_of(path) == [ENGINE_PATCH], path.name
    upserts = {v: upserts_of(path) for v, path in (("v7", v7), ("v8", v8))}
    assert len(upserts["v7"]) == 11
    assert len(upserts["v8"]) == 7  # 3 patches' and the start's first one fewer
    assert upserts["v8"][0] == {"TemporalChangeVersion"}
    assert {"PartnerId", "CustomerId", "Cloud", "RelationshipState"} <= upserts["v8"][1]
    assert all("PartnerId" not in attributes for attributes in upserts["v8"][2:])  # sent once, kept
    assert all("StateChangedAt" in attributes for attributes in upserts["v8"][1:])  # each change's
    # The end's lookup of the delegated admin relationships it reaches goes with its change.
    assert local_activities_of(v7).count(RELATED.name) == 1
    assert RELATED.name not in local_activities_of(v8)
    assert local_activities_of(v8).count(RECORD_AND_FIND.name) == 1


def test_the_engine_patch_stands_for_the_patches_before_it_only() -> None:
    """A patch added after `engine-2026-11` must be asked by name: a run begun under the engine
    patch took the old path for it, and taking it as given would not replay that run."""
    before_it = {
        "admitted-start",
        "letters-with-change",
        "link-with-change",
        "carried-admin-request",
        "end-delegated-admin",
        "notify-partner-on-invitation-expiry",
        "two-tier",
    }
    assert before_it == interpreter.IN_ENGINE_PATCH


async def test_the_engine_patch_is_what_keeps_v8_replaying(monkeypatch: pytest.MonkeyPatch) -> None:
    """Were the engine's patch to stand for nothing, a v8 run would ask each patch by name, find
    no marker for it and take the old path: its history would no longer replay."""
    monkeypatch.setattr(interpreter, "IN_ENGINE_PATCH", frozenset())
    history = load(next(p for p in HISTORIES if p.name == "v8-whole-life.json"))
    result = await replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None


async def test_the_patch_is_what_keeps_v1_replaying(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `workflow.patched`, the v1 expiry history no longer replays: the guard matters."""
    real = workflow.patched
    # Only the expiry notice's patch forced on: any other patch keeps its own answer.
    monkeypatch.setattr(workflow, "patched", lambda patch_id: True if patch_id == EXPIRY_PATCH else real(patch_id))
    history = load(next(p for p in HISTORIES if p.name == "v1-invitation-expires.json"))
    result = await replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
    assert (
        "nondetermin" in str(result.replay_failure).lower() or "Nondeterminism" in type(result.replay_failure).__name__
    )


async def test_a_history_begun_under_older_input_rules_still_replays() -> None:
    """An id in upper case and an address today's rules refuse, accepted by v2: the engine reads
    them as v2 did (today's rules apply to new input only), so the history replays unchanged."""

    def rewrite(node: Any) -> Any:
        """`p-100` as `P-100` everywhere, inside the (base64 JSON) payloads too; a non-ASCII admin."""
        if isinstance(node, dict):
            if set(node) >= {"metadata", "data"}:
                text = base64.b64decode(node["data"]).decode()
                text = text.replace("p-100", "P-100").replace("admin@contoso.example", "jürgen@contoso.example")
                return {**node, "data": base64.b64encode(text.encode()).decode()}
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node.replace("p-100", "P-100") if isinstance(node, str) else node

    raw = json.loads(next(p for p in HISTORIES if p.name == "v2-whole-life.json").read_text())
    edited = rewrite(raw)
    started = edited["events"][0]["workflowExecutionStartedEventAttributes"]
    body = json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))
    assert body["partner"]["id"] == "P-100" and body["customer"]["admin_email"] == "jürgen@contoso.example"
    history = WorkflowHistory.from_json(f"relationship/P-100/{body['customer']['id']}", edited)
    result = await replayer().replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
