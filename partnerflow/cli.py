"""`partnerflow`: the command line for ops and scripts.

Every command is one call of the typed client (`partnerflow.client.Relationships`),
of Temporal visibility, or of the records database. Exit codes are stable, so
scripts can branch on them:

    0 ok                     4 TransitionNotAllowed or GuardFailed
    1 anything else          5 NotFound
    2 invalid input, usage   6 Unavailable (Temporal cannot be reached)
    3 PermissionDenied       7 import finished with failed rows

Errors go to stderr as one line, `partnerflow: <type>: <message>`; with `--json`
stdout also gets `{"error": {"type": ..., "message": ..., "rule": ...}}`.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import csv
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any, Final, NoReturn

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import WorkflowExecution, WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

from partnerflow import erasure, importer, partners
from partnerflow.activities.records import Records
from partnerflow.client import (
    GuardFailed,
    InvalidInput,
    InvalidStart,
    NotFound,
    PermissionDenied,
    RelationshipError,
    Relationships,
    TransitionNotAllowed,
    Unavailable,
    translate,
)
from partnerflow.events import Events, EventsError
from partnerflow.runtime.config import ConfigError, Settings, load
from partnerflow.runtime.connection import connect
from partnerflow.runtime.keys import Signer
from partnerflow.runtime.process import exit_without_teardown
from partnerflow.states.declaration import CustomerAdmin, PartnerStaff
from partnerflow.states.delegated_admin import DELEGATED_ADMIN
from partnerflow.states.delegated_admin_models import DelegatedAdminView, StartDelegatedAdmin
from partnerflow.states.errors import problems
from partnerflow.states.inert import csv_cell, terminal
from partnerflow.states.models import (
    STRICT,
    Actor,
    AdminRole,
    Cloud,
    Email,
    Identifier,
    Origin,
    Partner,
    PartnerCommand,
    PartnerKind,
    RelationshipView,
    Role,
    StartRelationship,
    State,
    SubscriptionKind,
    workflow_id,
)
from partnerflow.states.names import CUSTOMER_ID, PARTNER_ID
from partnerflow.states.relationship import RELATIONSHIP

PROG: Final = "partnerflow"


class Exit(IntEnum):
    """The stable exit codes (the module's docstring lists them for users)."""

    OK, ERROR, USAGE, DENIED, REFUSED, NOT_FOUND, UNAVAILABLE, IMPORT_FAILED = range(8)


EXIT_CODES: Final[Mapping[type[RelationshipError], int]] = {
    InvalidInput: Exit.USAGE,
    InvalidStart: Exit.USAGE,
    PermissionDenied: Exit.DENIED,
    TransitionNotAllowed: Exit.REFUSED,
    GuardFailed: Exit.REFUSED,
    NotFound: Exit.NOT_FOUND,
    Unavailable: Exit.UNAVAILABLE,
}

GDAP_OPTIONS: Final[Mapping[str, str]] = {
    "request_id": "REQUEST_ID",
    "display_name": "--display-name",
    "duration": "--duration",
    "roles": "--admin-role",
    "auto_extend": "--auto-extend",
}

ACTOR_ENV: Final[Mapping[str, str]] = {
    "user": "PARTNERFLOW_ACTOR_USER",
    "role": "PARTNERFLOW_ACTOR_ROLE",
    "partner_id": "PARTNERFLOW_ACTOR_PARTNER_ID",
}

#: The option (or argument) each model field comes from, to name it in errors.
OPTION_FOR: Final[Mapping[str, str]] = {
    "partner.id": "PARTNER_ID",
    "partner_id": "PARTNER_ID",
    "name": "--name",
    "kind": "--kind",
    "indirect_provider_id": "--provider-id",
    "contact_email": "--contact-email",
    "customer.id": "CUSTOMER_ID",
    "customer_id": "CUSTOMER_ID",
    "customer.company": "--company",
    "customer.admin_email": "--admin-email",
    "admin_email": "--admin-email",
    "customer.country": "--country",
    "customer.locale": "--locale",
    "locale": "--locale",
    "referred_by": "--referred-by",
    "actor.user": f"--user or {ACTOR_ENV['user']}",
    "actor.role": f"--role or {ACTOR_ENV['role']}",
    "actor.partner_id": f"--partner-id or {ACTOR_ENV['partner_id']}",
    "reason": "--reason",
    **GDAP_OPTIONS,
}

#: The partner-side updates, from the lifecycle's declaration: CLI command name → trigger.
UPDATES: Final[Mapping[str, str]] = {
    RELATIONSHIP.commands[trigger].cli: trigger
    for trigger in RELATIONSHIP.updates
    if isinstance(RELATIONSHIP.by(trigger), PartnerStaff)
}

#: The delegated admin updates partner staff send: `partnerflow gdap <name>` → trigger.
GDAP_UPDATES: Final[Mapping[str, str]] = {
    DELEGATED_ADMIN.commands[trigger].cli: trigger
    for trigger in DELEGATED_ADMIN.updates
    if isinstance(DELEGATED_ADMIN.by(trigger), PartnerStaff)
}

STATE_KEY: Final = importer.STATE_KEY
PARTNER_KEY: Final = SearchAttributeKey.for_keyword(PARTNER_ID)
CUSTOMER_KEY: Final = SearchAttributeKey.for_keyword(CUSTOMER_ID)

EXPORT_COLUMNS: Final = (
    "cloud",
    "partner_id",
    "indirect_provider_id",
    "customer_id",
    "workflow_id",
    "company",
    "state",
    "admin_email",
    "purchase_permission",
    "suspension_reason",
    "reinstated_count",
    "created_at",
    "updated_at",
)


class UsageError(Exception):
    """The command line is wrong: exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


class _PartnerId(BaseModel):
    partner_id: Identifier


class _Ids(_PartnerId):
    customer_id: Identifier


class _CustomerAdmin(BaseModel):
    email: Email


# --- output ----------------------------------------------------------------------


def _out(text: str = "") -> None:
    print(terminal(text), file=sys.stdout)


def _err(text: str) -> None:
    print(terminal(text), file=sys.stderr)


def _print_json(value: Any) -> None:
    _out(json.dumps(value, indent=2, default=str))


def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header], *([("" if c is None else str(c)) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _print_view(args: argparse.Namespace, view: RelationshipView) -> None:
    if args.json:
        _print_json(view.model_dump(mode="json"))
        return
    last = view.audit[-1] if view.audit else None
    detail = f" ({last.operation} by {last.actor_user})" if last else ""
    _out(f"{workflow_id(view.partner_id, view.customer_id)}: {view.state.value}{detail}")


def _show_view(view: RelationshipView) -> None:
    facts = [
        ("relationship", workflow_id(view.partner_id, view.customer_id)),
        ("cloud", view.cloud.value),
        ("partner", f"{view.partner_id} ({view.partner_name})"),
        ("customer", f"{view.customer_id} ({view.company})"),
        ("admin", view.admin_email or "- (the referred partner gives it when it accepts)"),
        ("state", view.state.value),
        ("origin", view.origin.value),
        ("purchase", "allowed" if view.purchase_permission else "not allowed"),
        ("reinstated", str(view.reinstated_count)),
    ]
    if view.invitation_expires_at:
        facts.append(("expires", _when(view.invitation_expires_at)))
    width = max(len(name) for name, _ in facts)
    for name, value in facts:
        _out(f"{name.ljust(width)}  {value}")
    _out()
    _out("audit (latest changes):")
    rows = [
        (
            a.seq,
            _when(a.at),
            a.operation,
            a.from_state.value if a.from_state else "-",
            a.to_state.value,
            f"{a.actor_user} ({a.actor_role})",
            a.reason,
        )
        for a in view.audit
    ]
    _out(_table(rows, ("SEQ", "AT", "OPERATION", "FROM", "TO", "ACTOR", "REASON")))


# --- errors ----------------------------------------------------------------------


def _fields(error: ValidationError) -> list[dict[str, str]]:
    """The formatter's problems, each with the option a user of the CLI sets it with."""
    return [{"field": p["field"], "option": OPTION_FOR.get(p["field"], ""), "rule": p["rule"]} for p in problems(error)]


def _fail(
    as_json: bool,
    kind: str,
    message: str,
    code: int,
    rule: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> int:
    _err(f"{PROG}: {kind}: {message}")
    if as_json:
        _print_json({"error": {"type": kind, "message": message, "rule": rule, **(extra or {})}})
    return code


def _fail_validation(as_json: bool, error: ValidationError) -> int:
    fields = _fields(error)
    message = "; ".join(
        f"{f['field']}" + (f" ({f['option']})" if f["option"] else "") + f": {f['rule']}" for f in fields
    )
    return _fail(as_json, "InvalidInput", message, Exit.USAGE, extra={"fields": fields})


def _from_rpc(error: RPCError) -> RelationshipError:
    """The client's translation (one list of what counts as unavailable), and a bad query is input."""
    if error.status is RPCStatusCode.INVALID_ARGUMENT:
        return InvalidInput(f"Temporal refused the request: {error.message}")
    return translate(error)


# --- settings, actor, clients ----------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    return load(Path(args.config)) if args.config else load()


def _actor(args: argparse.Namespace, default_partner_id: str) -> dict[str, str]:
    """The actor as given by options, else by environment; its partner defaults as documented."""
    found: dict[str, str] = {}
    for name, env in ACTOR_ENV.items():
        value = getattr(args, name, None) or os.environ.get(env)
        if value:
            found[name] = value
    found.setdefault("partner_id", default_partner_id)
    return found


def _strict_id(partner_id: str | None) -> str | None:
    """A partner id given on the command line, as new input is read (case-folded), or None."""
    if partner_id is None:
        return None
    return _PartnerId.model_validate({"partner_id": partner_id}, context=STRICT).partner_id


def _ids(args: argparse.Namespace) -> tuple[str, str]:
    ids = _Ids.model_validate({"partner_id": args.partner, "customer_id": args.customer}, context=STRICT)
    return ids.partner_id, ids.customer_id


async def _connect(
    args: argparse.Namespace, settings: Settings, *, sign: bool = False, clouds: Iterable[Cloud] = ()
) -> Relationships:
    """A client for the chosen cloud (and `clouds`), connected as the configuration says (namespace,
    TLS, API key); `sign`: it signs for the actor it is given, with the configured signer (SECURITY.md)."""
    signer = settings.signer_for_cli() if sign else None
    if args.address:
        settings = settings.model_copy(
            update={"temporal": settings.temporal.model_copy(update={"address": args.address})}
        )
    wanted = dict.fromkeys((Cloud(args.cloud), *clouds))
    try:
        connected = {cloud: await connect(settings, cloud) for cloud in wanted}
    except RuntimeError as error:
        raise Unavailable(f"Temporal is unavailable at {settings.temporal.address}: {error}") from error
    return Relationships(connected, default_timers=settings.timers, signer=signer)


@contextmanager
def _records(settings: Settings) -> Iterator[Records]:
    records = Records(settings.records_url)
    try:
        yield records
    except SQLAlchemyError as error:
        url = sa.engine.make_url(settings.records_url).render_as_string(hide_password=True)
        cause = getattr(error, "orig", None) or error
        raise RecordsError(f"records database {url}: {cause}") from error
    finally:
        records.dispose()


class RecordsError(Exception):
    """The records database cannot be read or written."""


# --- commands --------------------------------------------------------------------


async def cmd_start(args: argparse.Namespace) -> int:
    """invite / refer."""
    referral = args.command == "refer"
    customer = {"id": args.customer, "company": args.company, "country": args.country}
    if args.locale:
        customer["locale"] = args.locale
    if not referral:
        customer["admin_email"] = args.admin_email
    body: dict[str, Any] = {
        "cloud": args.cloud,
        "partner": {"id": args.partner},  # every other fact: the partner registry's
        "customer": customer,
        "origin": Origin.REFERRAL if referral else Origin.INVITATION,
        "actor": _actor(args, args.referred_by if referral else args.partner),
    }
    if referral:
        body["referred_by"] = args.referred_by
    start = StartRelationship.model_validate(body, context=STRICT)
    settings = _settings(args)
    client = await _connect(args, settings, sign=True)
    _print_view(args, await client.start(start))
    return Exit.OK


async def cmd_update(args: argparse.Namespace) -> int:
    """accept-referral, decline-referral, resend, cancel, end, reinstate, permission."""
    partner_id, customer_id = _ids(args)
    name = UPDATES[args.command]
    model = RELATIONSHIP.commands[name].payload
    payload: dict[str, Any] = {"actor": _actor(args, partner_id)}
    payload |= {field: getattr(args, field) for field in model.model_fields if field != "actor"}
    command = model.model_validate(payload, context=STRICT)
    settings = _settings(args)
    client = await _connect(args, settings, sign=True)
    view = await client.update(Cloud(args.cloud), workflow_id(partner_id, customer_id), name, command)
    _print_view(args, view)
    return Exit.OK


# --- delegated admin relationships (GDAP) -------------------------------------------


def _gdap_id(args: argparse.Namespace) -> str:
    partner_id, customer_id = _ids(args)
    return DELEGATED_ADMIN.workflow_id.format(partner_id=partner_id, customer_id=customer_id, request_id=args.request)


def _print_gdap(args: argparse.Namespace, view: DelegatedAdminView) -> None:
    if args.json:
        _print_json(view.model_dump(mode="json"))
        return
    last = view.audit[-1] if view.audit else None
    detail = f" ({last.operation} by {last.actor_user})" if last else ""
    wid = DELEGATED_ADMIN.workflow_id.format(**view.model_dump(include={"partner_id", "customer_id", "request_id"}))
    _out(f"{terminal(wid)}: {view.state}{detail}")


async def cmd_gdap_create(args: argparse.Namespace) -> int:
    customer = {"id": args.customer, "company": args.company, "country": args.country, "admin_email": args.admin_email}
    if args.locale:
        customer["locale"] = args.locale
    body: dict[str, Any] = {
        "cloud": args.cloud,
        "partner": {"id": args.partner},
        "customer": customer,
        "actor": _actor(args, args.partner),
        "request_id": args.request,
        "display_name": args.display_name,
        "duration": args.duration,
        "roles": args.roles or [],
        "auto_extend": args.auto_extend,
    }
    start = StartDelegatedAdmin.model_validate(body, context=STRICT)
    client = await _connect(args, _settings(args), sign=True)
    view: DelegatedAdminView = await client.begin(start)
    if args.lock:
        view = await client.update(Cloud(args.cloud), _gdap_id(args), "lock_for_approval", _partner_command(args))
    _print_gdap(args, view)
    return Exit.OK


def _partner_command(args: argparse.Namespace) -> BaseModel:
    model = DELEGATED_ADMIN.commands["lock_for_approval"].payload
    return model.model_validate({"actor": _actor(args, _ids(args)[0])}, context=STRICT)


async def cmd_gdap_update(args: argparse.Namespace) -> int:
    """roles, lock, terminate: from the declaration's partner-side commands."""
    partner_id, _ = _ids(args)
    name = GDAP_UPDATES[args.action]
    model = DELEGATED_ADMIN.commands[name].payload
    payload: dict[str, Any] = {"actor": _actor(args, partner_id)}
    payload |= {field: getattr(args, field) for field in model.model_fields if field not in ("actor", "proof")}
    command = model.model_validate(payload, context=STRICT)
    client = await _connect(args, _settings(args), sign=True)
    _print_gdap(args, await client.update(Cloud(args.cloud), _gdap_id(args), name, command))
    return Exit.OK


async def cmd_gdap_reissue(args: argparse.Namespace) -> int:
    partner_id, _ = _ids(args)
    actor = Actor.model_validate(_actor(args, partner_id), context=STRICT)
    client = await _connect(args, _settings(args), sign=True)
    _print_gdap(args, await client.reissue(Cloud(args.cloud), _gdap_id(args), args.as_request, actor))
    return Exit.OK


async def cmd_gdap_show(args: argparse.Namespace) -> int:
    client = await _connect(args, _settings(args))
    view: DelegatedAdminView = await client.view(Cloud(args.cloud), _gdap_id(args))
    if args.json:
        _print_json(view.model_dump(mode="json"))
        return Exit.OK
    facts = [
        ("relationship", _gdap_id(args)),
        ("display name", view.display_name),
        ("partner", f"{view.partner_id} ({view.partner_name})"),
        ("customer", f"{view.customer_id} ({view.company})"),
        ("state", view.state),
        ("roles", ", ".join(view.roles)),
        ("duration", f"{view.duration.days} days"),
        ("auto-extend", f"{view.auto_extend.days} days" if view.auto_extend else "off"),
        ("ends", _when(view.ends_at) if view.ends_at else "-"),
        ("approval by", _when(view.approval_expires_at) if view.approval_expires_at else "-"),
    ]
    width = max(len(name) for name, _ in facts)
    for name, value in facts:
        _out(f"{name.ljust(width)}  {terminal(value)}")
    _out()
    rows = [
        (a.seq, _when(a.at), a.operation, a.from_state or "-", a.to_state, f"{a.actor_user} ({a.actor_role})", a.reason)
        for a in view.audit
    ]
    _out(_table(rows, ("SEQ", "AT", "OPERATION", "FROM", "TO", "ACTOR", "REASON")))
    return Exit.OK


def gdap_query(state: str | None = None, partner: str | None = None, ends_within_days: int | None = None) -> str:
    """The visibility query for `gdap list`: by state, partner, and "ends within N days"."""
    clauses = [f"WorkflowType = {_quote('type', DELEGATED_ADMIN.workflow_type)}"]
    if state is not None:
        clauses.append(f"{DELEGATED_ADMIN.state_attribute} = {_quote('state', state)}")
    if partner is not None:
        clauses.append(f"{PARTNER_ID} = {_quote('partner', partner)}")
    if ends_within_days is not None:
        [(attribute, _)] = DELEGATED_ADMIN.moment_attributes.items()
        until = (datetime.now(UTC) + timedelta(days=ends_within_days)).strftime("%Y-%m-%dT%H:%M:%SZ")
        clauses.append(f"{attribute} < '{until}'")
        clauses.append(f"{DELEGATED_ADMIN.state_attribute} IN ('active', 'expiring')")
    return " AND ".join(clauses)


async def cmd_gdap_list(args: argparse.Namespace) -> int:
    query = gdap_query(args.state, args.partner.lower() if args.partner else None, args.ends_within)
    ends_key = SearchAttributeKey.for_datetime(next(iter(DELEGATED_ADMIN.moment_attributes)))
    state_key = SearchAttributeKey.for_keyword(DELEGATED_ADMIN.state_attribute)

    def found(execution: WorkflowExecution) -> dict[str, Any]:
        ends = execution.typed_search_attributes.get(ends_key)
        return {
            "workflow_id": execution.id,
            "state": execution.typed_search_attributes.get(state_key),
            "status": _status(execution.status),
            "ends_at": ends.isoformat() if ends else None,
        }

    listed = await _listed(args, query, found)
    if args.json:
        _print_json(listed)
    else:
        rows = [(terminal(f["workflow_id"]), f["state"] or "-", f["status"], f["ends_at"] or "-") for f in listed]
        _out(_table(rows, ("WORKFLOW ID", "STATE", "STATUS", "ENDS")))
    return Exit.OK


async def _listed(
    args: argparse.Namespace, query: str, row: Callable[[WorkflowExecution], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The workflows a visibility query finds (at most `--limit`), each as `row` reads it."""
    client = await _connect(args, _settings(args))
    try:
        return [row(e) async for e in client.clients[Cloud(args.cloud)].list_workflows(query, limit=args.limit)]
    except RPCError as error:
        raise _from_rpc(error) from error
    except RuntimeError as error:
        raise Unavailable(f"Temporal is unavailable: {error}") from error


def _partner_line(p: Partner) -> tuple[str, ...]:
    return (p.id, p.name or "", p.kind.value, p.indirect_provider_id or "-", p.contact_email or "-")


PARTNER_HEADER: Final = ("PARTNER ID", "NAME", "KIND", "PROVIDER", "CONTACT")


def cmd_partner_add(args: argparse.Namespace) -> int:
    fields = {"id": args.partner, "name": args.name, "kind": args.kind}
    fields |= {
        k: v
        for k, v in (
            ("indirect_provider_id", args.provider_id),
            ("contact_email", args.contact_email),
            ("locale", args.locale),
        )
        if v
    }
    entry = partners.partner(fields)
    with _records(_settings(args)) as records:
        new = partners.Partners(records, Cloud(args.cloud)).add(entry)
    if args.json:
        _print_json({"partner": entry.model_dump(mode="json"), "added": new})
    else:
        _out(f"{entry.id} ({args.cloud}): {'added' if new else 'changed'}")
    return Exit.OK


def cmd_partner_show(args: argparse.Namespace) -> int:
    with _records(_settings(args)) as records:
        found = partners.Partners(records, Cloud(args.cloud)).show(args.partner)
    if found is None:
        raise NotFound(f"partner {args.partner} is not in the {args.cloud} partner registry")
    if args.json:
        _print_json(found.model_dump(mode="json"))
    else:
        _out(_table([_partner_line(found)], PARTNER_HEADER))
    return Exit.OK


def cmd_partner_list(args: argparse.Namespace) -> int:
    with _records(_settings(args)) as records:
        found = partners.Partners(records, Cloud(args.cloud)).all()
    if args.json:
        _print_json([p.model_dump(mode="json") for p in found])
    else:
        _out(_table([_partner_line(p) for p in found], PARTNER_HEADER))
    return Exit.OK


def cmd_partner_import(args: argparse.Namespace) -> int:
    with Path(args.file).open(newline="", encoding="utf-8") as stream, _records(_settings(args)) as records:
        results = partners.Partners(records, Cloud(args.cloud)).import_csv(stream)
    failed = [r for r in results if r.outcome == "failed"]
    if args.json:
        _print_json([vars(r) for r in results])
    else:
        for r in results:
            _out(f"row {r.row}: {r.partner_id or '-'} {r.outcome}" + (f": {r.error}" if r.error else ""))
    return Exit.IMPORT_FAILED if failed else Exit.OK


def cmd_sign(args: argparse.Namespace) -> int:
    """One assertion for one request, for a script that drives partnerflow with another tool
    (the `temporal` CLI, another SDK): its `proof` field. Made with the configured signer."""
    partner_id, customer_id = _ids(args)
    lifecycle = DELEGATED_ADMIN if args.request else RELATIONSHIP
    wid = _gdap_id(args) if args.request else workflow_id(partner_id, customer_id)
    kind = CustomerAdmin if args.customer_admin else PartnerStaff
    lifecycle_actions = {row.trigger for row in lifecycle.rows if isinstance(row.by, kind)}
    if args.action not in lifecycle_actions:
        raise UsageError(f"ACTION must be one of {', '.join(sorted(lifecycle_actions))}")
    if args.customer_admin:
        settings = _settings(args)
        key = settings.resolve(args.portal_key)
        portal = Signer.from_file(args.portal_issuer, key, audience=settings.proof.audience)
        admin = _CustomerAdmin.model_validate({"email": args.customer_admin}, context=STRICT).email
        proof = portal.for_customer(args.action, wid, customer_id, admin)
        _print_json({"proof": proof}) if args.json else _out(proof)
        return Exit.OK
    default_partner = args.referred_by if args.action == "refer" and args.referred_by else partner_id
    actor = Actor.model_validate(_actor(args, default_partner), context=STRICT)
    signer = _settings(args).signer_for_cli()
    if signer is None:
        raise ConfigError("signer: set signer.issuer and signer.key_file (PARTNERFLOW_SIGNER__*)")
    proof = signer.for_actor(args.action, wid, actor)
    _print_json({"proof": proof}) if args.json else _out(proof)
    return Exit.OK


async def cmd_show(args: argparse.Namespace) -> int:
    partner_id, customer_id = _ids(args)
    client = await _connect(args, _settings(args))
    view = await client.state(Cloud(args.cloud), partner_id, customer_id)
    if args.json:
        _print_json(view.model_dump(mode="json"))
    else:
        _show_view(view)
    return Exit.OK


def _quote(name: str, value: str) -> str:
    """A visibility-query string literal; values that could break out of one are refused."""
    if any(c in value for c in "'\"`\\") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UsageError(f"--{name} must not contain quotes, backslashes or control characters: {value!r}")
    return f"'{value}'"


def list_query(state: str | None = None, partner: str | None = None, customer: str | None = None) -> str:
    """The visibility query for `list`: relationships, narrowed by state, partner and customer."""
    clauses = [f"WorkflowType = {_quote('type', RELATIONSHIP.workflow_type)}"]
    for name, attribute, value in (
        ("state", RELATIONSHIP.state_attribute, state),
        ("partner", PARTNER_ID, partner),
        ("customer", CUSTOMER_ID, customer),
    ):
        if value is not None:
            clauses.append(f"{attribute} = {_quote(name, value)}")
    return " AND ".join(clauses)


def _status(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status is not None else "unknown"


async def cmd_list(args: argparse.Namespace) -> int:
    # Case-folded as ids are; each is checked as a query literal by `list_query`.
    partner = args.partner.lower() if args.partner else None
    customer = args.customer.lower() if args.customer else None

    def found(execution: WorkflowExecution) -> dict[str, Any]:
        attributes = execution.typed_search_attributes
        return {
            "workflow_id": execution.id,
            "run_id": execution.run_id,
            "state": attributes.get(STATE_KEY),
            "status": _status(execution.status),
            "partner_id": attributes.get(PARTNER_KEY),
            "customer_id": attributes.get(CUSTOMER_KEY),
            "start_time": _when(execution.start_time),
        }

    listed = await _listed(args, list_query(args.state, partner, customer), found)
    if args.json:
        _print_json(listed)
    else:
        rows = [(f["workflow_id"], f["state"] or "-", f["status"]) for f in listed]
        _out(_table(rows, ("WORKFLOW ID", "STATE", "STATUS")))
    return Exit.OK


def cmd_subscriptions_set(args: argparse.Namespace) -> int:
    partner_id, customer_id = _ids(args)
    settings = _settings(args)
    with _records(settings) as records:
        detail = dict(args.of) if args.of else None
        named_twice = sorted({what for what, _ in args.of or () if [w for w, _ in args.of].count(what) > 1})
        if named_twice:
            raise InvalidInput(f"detail: {', '.join(map(repr, named_twice))} named twice (give each once)", "detail")
        try:
            records.set_active_subscriptions(
                Cloud(args.cloud).value, partner_id, customer_id, args.count, now=datetime.now(UTC), detail=detail
            )
        except ValueError as error:
            raise InvalidInput(str(error), "detail") from None
    if args.json:
        _print_json({"cloud": args.cloud, "partner_id": partner_id, "customer_id": customer_id, "active": args.count})
    else:
        _out(f"{workflow_id(partner_id, customer_id)} ({args.cloud}): {args.count} active subscriptions")
    return Exit.OK


def customer_rows(records: Records, cloud: Cloud, partner_id: str | None = None) -> list[dict[str, Any]]:
    """The customer list of every partner in `cloud` (or of one), as export writes it."""
    rows = records.customer_export(cloud.value, EXPORT_COLUMNS, partner_id)
    for row in rows:
        for name in ("created_at", "updated_at"):
            row[name] = _when(row[name])
        row["purchase_permission"] = bool(row["purchase_permission"])
    return rows


def cmd_export(args: argparse.Namespace) -> int:
    partner = _strict_id(args.partner)
    with _records(_settings(args)) as records:
        rows = customer_rows(records, Cloud(args.cloud), partner)
    if args.json or args.format == "json":
        _print_json(rows)
        return Exit.OK
    writer = csv.DictWriter(sys.stdout, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        cells = {**row, "purchase_permission": str(row["purchase_permission"]).lower()}
        writer.writerow({name: csv_cell(value) for name, value in cells.items()})
    return Exit.OK


async def cmd_erase(args: argparse.Namespace) -> int:
    partner_id, customer_id = _ids(args)
    if not args.yes:
        raise UsageError("erase cannot be undone: add --yes once the request is verified")
    settings = _settings(args)
    client = await _connect(args, settings)
    with _records(settings) as records:
        try:
            done = await erasure.erase(
                client.clients[Cloud(args.cloud)],
                records,
                Cloud(args.cloud).value,
                partner_id,
                customer_id,
                settings.resolve(settings.mail_sink.maildir),
            )
        except erasure.StillOpen as error:
            raise TransitionNotAllowed(str(error), "state") from None
        except erasure.Unknown as error:
            raise NotFound(str(error)) from None
        except RPCError as error:
            raise _from_rpc(error) from error
    if args.json:
        _print_json(vars(done))
    else:
        _out(
            f"{done.workflow_id} ({args.cloud}): erased; {done.runs_deleted} workflow histories deleted,"
            f" records changed {done.records}, {done.emails_deleted} emails of the local sink deleted"
        )
    return Exit.OK


# --- events out ------------------------------------------------------------------------


@contextmanager
def _events(args: argparse.Namespace, clients: Mapping[Cloud, Any] | None = None) -> Iterator[Events]:
    with _records(_settings(args)) as records:
        yield Events(records, clients)


async def _events_connected(args: argparse.Namespace) -> Mapping[Cloud, Any]:
    return (await _connect(args, _settings(args))).clients


def cmd_events_list(args: argparse.Namespace) -> int:
    """The partner's events after the cursor, as CloudEvents, one JSON object per line."""
    with _events(args) as events:
        found, cursor = events.since(Cloud(args.cloud), args.partner, args.since, args.limit, args.type or ())
    for event in found:
        print(json.dumps(event, sort_keys=True))  # JSON escapes every control character
    _err(f"next: --since {cursor}")
    return Exit.OK


async def cmd_events_subscribe(args: argparse.Namespace) -> int:
    clients = await _events_connected(args)
    settings = _settings(args)
    with _events(args, clients) as events:
        hook = await events.subscribe(
            Cloud(args.cloud),
            args.partner,
            args.url,
            args.type or (),
            from_start=args.from_start,
            retry_window=settings.events.retry_window,
            max_interval=settings.events.max_interval,
        )
    if args.json:
        _print_json(vars(hook))
    else:
        _out(f"{hook.webhook_id}: subscribed; events after #{hook.after} go to the receiver")
        _out(f"secret (shown once; the receiver verifies each delivery with it): {hook.secret}")
    return Exit.OK


def cmd_events_webhooks(args: argparse.Namespace) -> int:
    with _events(args) as events:
        found = events.webhooks(Cloud(args.cloud), args.partner)
    if args.json:
        _print_json(found)
    else:
        rows = [(h["webhook_id"], h["partner_id"], h["url"], ",".join(h["types"]) or "*", h["rotating"]) for h in found]
        _out(_table(rows, ("WEBHOOK", "PARTNER", "URL", "TYPES", "ROTATING")))
    return Exit.OK


def cmd_events_rotate(args: argparse.Namespace) -> int:
    with _events(args) as events:
        if args.finish:
            events.finish_rotation(args.webhook)
            _out(f"{args.webhook}: signed with the new secret only")
            return Exit.OK
        secret = events.rotate(args.webhook)
    _out(f"{args.webhook}: new secret (both are signed with until --finish): {secret}")
    return Exit.OK


def cmd_events_unsubscribe(args: argparse.Namespace) -> int:
    with _events(args) as events:
        events.unsubscribe(args.webhook)
    _out(f"{args.webhook}: removed (its deliveries stay on record)")
    return Exit.OK


def cmd_events_dead(args: argparse.Namespace) -> int:
    with _events(args) as events:
        found = events.dead_letters(args.webhook)
    if args.json:
        _print_json(found)
    else:
        rows = [(d["seq"], d["event_id"], d["attempts"], d["last_error"], _when(d["at"])) for d in found]
        _out(_table(rows, ("SEQ", "EVENT", "ATTEMPTS", "LAST ERROR", "GIVEN UP")))
    return Exit.OK


async def cmd_events_redeliver(args: argparse.Namespace) -> int:
    clients = await _events_connected(args)
    with _events(args, clients) as events:
        queued = await events.redeliver(args.webhook, args.event or ())
    _out(f"{args.webhook}: {queued} events queued for delivery")
    return Exit.OK


def cmd_events_stats(args: argparse.Namespace) -> int:
    with _events(args) as events:
        _print_json(events.stats(args.webhook))
    return Exit.OK


async def cmd_import(args: argparse.Namespace) -> int:
    rows = importer.read_file(Path(args.file))
    actor = _actor(args, "any-partner")
    PartnerCommand.model_validate(
        {"actor": actor}, context=STRICT
    )  # one actor for every row: refuse it once, not per row
    settings = _settings(args)
    # The clouds the file names that this deployment serves; a row for another fails alone, naming it.
    named = importer.clouds_named(rows, Cloud(args.cloud)) & set(settings.temporal.clouds)
    client = await _connect(args, settings, sign=True, clouds=sorted(named))
    terminal = sys.stderr.isatty()
    result = await importer.import_rows(
        client,
        rows,
        cloud=Cloud(args.cloud),
        user=actor.get("user"),
        role=actor.get("role"),
        actor_partner_id=getattr(args, "partner_id", None) or os.environ.get(ACTOR_ENV["partner_id"]),
        concurrency=args.concurrency,
        timeout=args.row_timeout,
        progress=lambda total: importer.Progress(total, sys.stderr if terminal else None),
    )
    summary = result.summary()
    if args.report:
        importer.write_report_file(Path(args.report), result.results)
    if args.json:
        body: dict[str, Any] = {"summary": summary, "report": args.report}
        if args.report:
            body["failures"] = [r.as_dict() for r in result.results if r.status == importer.FAILED]
        else:
            body["rows"] = [r.as_dict() for r in result.results]
        _print_json(body)
    elif not args.report:
        importer.write_report(sys.stdout, result.results)
    rate = f" ({summary['rows_per_second']} rows/s)" if summary["rows_per_second"] else ""
    _err(
        f"imported {summary['rows']} rows in {summary['seconds']:.1f} s{rate}: "
        f"invited={summary['invited']} already={summary['already']} failed={summary['failed']}"
        + (f" (report: {args.report})" if args.report else "")
    )
    return Exit.IMPORT_FAILED if result.failed else Exit.OK


# --- the parser ------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _subscriptions_of(text: str) -> tuple[str, int]:
    what, equals, many = text.rpartition("=")
    try:
        return SubscriptionKind.model_validate({"what": what, "count": many}, context=STRICT).pair()
    except ValidationError as error:
        rule = "; ".join(f"{p['field']}: {p['rule']}" for p in problems(error)) if equals else "must be WHAT=N"
        raise argparse.ArgumentTypeError(rule) from None


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Drive partner–customer relationships (one Temporal workflow each).",
        epilog="exit codes: 0 ok, 1 error, 2 invalid input or usage, 3 permission denied, "
        "4 transition not allowed or guard failed, 5 not found, 6 Temporal unavailable, "
        "7 import finished with failed rows",
    )
    parser.add_argument("--config", metavar="PATH", help="configuration file (default: temporal-dev.yml)")
    parser.add_argument("--cloud", choices=[c.value for c in Cloud], default=Cloud.PUBLIC.value)
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument("--address", help="Temporal address (default: temporal.address of the config)")

    actor = _Parser(add_help=False)
    group = actor.add_argument_group("actor (the partner user acting)")
    group.add_argument("--user", help=f"the user's email (default: ${ACTOR_ENV['user']})")
    group.add_argument(
        "--role", choices=[r.value for r in Role], help=f"the user's role (default: ${ACTOR_ENV['role']})"
    )
    group.add_argument(
        "--partner-id",
        dest="partner_id",
        help=f"the user's partner (default: ${ACTOR_ENV['partner_id']}, else the relationship's partner)",
    )

    def relationship(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("partner", metavar="PARTNER_ID")
        sub.add_argument("customer", metavar="CUSTOMER_ID")

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, about in (
        ("invite", "invite a customer: the invitation email goes out at once"),
        ("refer", "record a referral for another partner (the actor is the referring partner's)"),
    ):
        sub = commands.add_parser(name, parents=[actor], help=about, description=about)
        relationship(sub)
        sub.add_argument("--company", required=True, help="the customer's company name")
        if name == "invite":  # a referral's: the referred partner gives it when it accepts
            sub.add_argument("--admin-email", required=True, help="the customer's global admin")
        sub.add_argument("--country", default="US", help="ISO country code (default: US)")
        sub.add_argument("--locale", help="the admin's language, e.g. de or fr-CA (default: the country's)")
        if name == "refer":
            sub.add_argument("--referred-by", required=True, metavar="PARTNER_ID", help="the referring partner")
        sub.set_defaults(run=cmd_start)

    for name, trigger in UPDATES.items():
        command = RELATIONSHIP.commands[trigger]
        sub = commands.add_parser(name, parents=[actor], help=command.about, description=command.about)
        relationship(sub)
        for field, info in command.payload.model_fields.items():
            if field in command.flags:  # a yes/no field: two flags, one required
                on, off = command.flags[field]
                choice = sub.add_mutually_exclusive_group(required=True)
                choice.add_argument(on, dest=field, action="store_true")
                choice.add_argument(off, dest=field, action="store_false")
            elif field != "actor":
                kind = info.annotation
                choices = [m.value for m in kind] if isinstance(kind, type) and issubclass(kind, Enum) else None
                required = info.is_required()
                sub.add_argument(
                    f"--{field.replace('_', '-')}",
                    dest=field,
                    choices=choices,
                    required=required,
                    default=None if required else info.default,
                )
        sub.set_defaults(run=cmd_update)

    _gdap_parsers(commands, actor, relationship)

    sub = commands.add_parser("partner", help="the partner registry: every partner fact comes from it")
    actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
    adder = actions.add_parser("add", help="add a partner, or change one")
    adder.add_argument("partner", metavar="PARTNER_ID")
    adder.add_argument("--name", required=True)
    adder.add_argument("--kind", choices=[k.value for k in PartnerKind], default=PartnerKind.DIRECT.value)
    adder.add_argument("--provider-id", help="its indirect provider (required for indirect_reseller)")
    adder.add_argument("--contact-email", help="where partner notices go (default: the user who sent the link)")
    adder.add_argument("--locale", help="the language of its notices, e.g. de (default: English)")
    adder.set_defaults(run=cmd_partner_add)
    shower = actions.add_parser("show", help="one partner")
    shower.add_argument("partner", metavar="PARTNER_ID")
    shower.set_defaults(run=cmd_partner_show)
    actions.add_parser("list", help="every partner of the cloud").set_defaults(run=cmd_partner_list)
    importer_ = actions.add_parser(
        "import", help="add or change partners from a CSV file: " + ",".join(partners.COLUMNS)
    )
    importer_.add_argument("file", metavar="FILE.csv")
    importer_.set_defaults(run=cmd_partner_import)

    sub = commands.add_parser(
        "sign",
        parents=[actor],
        help="an assertion (`proof`) for one request sent by another tool",
        description="Prints a signed assertion that the actor may fire ACTION on the relationship, valid"
        " for one request within a minute: the `proof` field of a start or update sent with the `temporal`"
        " CLI or another SDK (SECURITY.md).",
    )
    sub.add_argument("action", metavar="ACTION", help="a start (invite, refer, create) or a partner update")
    relationship(sub)
    sub.add_argument("--referred-by", metavar="PARTNER_ID", help="refer: the referring partner (the actor's)")
    sub.add_argument("--request", metavar="REQUEST_ID", help="a delegated admin relationship's (gdap) request id")
    sub.add_argument(
        "--customer-admin",
        metavar="EMAIL",
        help="a customer portal's assertion for this admin of the customer (e.g. terminate_by_customer),"
        " signed with --portal-key (development: make run's customer-portal key)",
    )
    sub.add_argument("--portal-key", default=".dev/keys/customer-portal.pem", metavar="PEM", help="(%(default)s)")
    sub.add_argument("--portal-issuer", default="customer-portal", metavar="NAME", help="(%(default)s)")
    sub.set_defaults(run=cmd_sign)

    sub = commands.add_parser("show", help="the state and the latest changes of one relationship")
    relationship(sub)
    sub.set_defaults(run=cmd_show)

    sub = commands.add_parser("list", help="relationships by state, partner or customer (Temporal visibility)")
    sub.add_argument("--state", choices=[s.value for s in State])
    sub.add_argument("--partner", metavar="PARTNER_ID")
    sub.add_argument("--customer", metavar="CUSTOMER_ID")
    sub.add_argument("--limit", type=_positive, default=1000, help="at most this many (default: 1000)")
    sub.set_defaults(run=cmd_list)

    sub = commands.add_parser("subscriptions", help="the billing feed's active subscription counts")
    actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
    setter = actions.add_parser("set", help="set a customer's count of active subscriptions")
    relationship(setter)
    setter.add_argument("count", metavar="COUNT", type=_count)
    setter.add_argument(
        "--of",
        metavar="WHAT=N",
        action="append",
        type=_subscriptions_of,
        help="how many of what, repeated (adding up to COUNT): a refused end names them",
    )
    setter.set_defaults(run=cmd_subscriptions_set)

    sub = commands.add_parser(
        "erase",
        help="erase a customer's personal data (a data-protection request); only once the relationship is over",
        description=(erasure.__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    relationship(sub)
    sub.add_argument("--yes", action="store_true", help="it cannot be undone: say so")
    sub.set_defaults(run=cmd_erase)

    events_parser = commands.add_parser("events", help="events out: the event log and webhooks")
    hooks = events_parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub = hooks.add_parser("list", help="a partner's events after a cursor, as CloudEvents (one JSON per line)")
    sub.add_argument("--partner", required=True, metavar="PARTNER_ID")
    sub.add_argument("--since", type=int, default=0, metavar="SEQ", help="the last event seen (default: 0, all)")
    sub.add_argument("--limit", type=int, default=100)
    sub.add_argument("--type", action="append", metavar="PATTERN", help="only these types, e.g. 'referral-*'")
    sub.set_defaults(run=cmd_events_list)
    sub = hooks.add_parser("subscribe", help="a webhook for a partner's events; prints its secret once")
    sub.add_argument("partner", metavar="PARTNER_ID")
    sub.add_argument("url", metavar="URL", help="https (http only to 127.0.0.1 / localhost)")
    sub.add_argument("--type", action="append", metavar="PATTERN", help="only these types (default: all)")
    sub.add_argument("--from-start", action="store_true", help="the whole log first (default: from now on)")
    sub.set_defaults(run=cmd_events_subscribe)
    sub = hooks.add_parser("webhooks", help="the active webhooks (never their secrets)")
    sub.add_argument("--partner", metavar="PARTNER_ID")
    sub.set_defaults(run=cmd_events_webhooks)
    for name, about, run in (
        ("rotate", "a new secret, both signed with until --finish", cmd_events_rotate),
        ("unsubscribe", "remove a webhook", cmd_events_unsubscribe),
        ("dead", "the dead letters: events given up on after the retry window", cmd_events_dead),
        ("redeliver", "send events again (default: every dead letter)", cmd_events_redeliver),
        ("stats", "delivered, dead, lag", cmd_events_stats),
    ):
        sub = hooks.add_parser(name, help=about)
        sub.add_argument("webhook", metavar="WEBHOOK_ID")
        if name == "rotate":
            sub.add_argument("--finish", action="store_true", help="end the rotation: the new secret only")
        if name == "redeliver":
            sub.add_argument("event", nargs="*", metavar="EVENT_ID")
        sub.set_defaults(run=run)

    sub = commands.add_parser("export", help="the customer list from the records database")
    sub.add_argument("--format", choices=("csv", "json"), default="csv")
    sub.add_argument("--partner", metavar="PARTNER_ID", help="only this partner's customers")
    sub.set_defaults(run=cmd_export)

    sub = commands.add_parser(
        "import",
        parents=[actor],
        help="invite every customer of a CSV file (idempotent: run it again safely)",
        description="Each row goes to its `cloud` column's namespace (else --cloud's) and to its"
        " `partner_id` (else the acting user's, --partner-id). A column this command does not know"
        " refuses the file. Columns: "
        + ",".join(importer.REQUIRED_COLUMNS)
        + " (optional: "
        + ",".join(importer.OPTIONAL_COLUMNS)
        + "). The report has one line per data row "
        "(row 1 is the line after the header): " + ",".join(importer.REPORT_COLUMNS) + ".",
    )
    sub.add_argument("file", metavar="FILE.csv")
    sub.add_argument(
        "--concurrency",
        type=_positive,
        default=importer.CONCURRENCY,
        help=f"starts in flight (default: {importer.CONCURRENCY}, where `make bench` measures 30-37 rows/s on"
        " a 2-core machine; at 8, a 2,020-row file ran at 10.6 rows/s; more only queue in the worker)",
    )
    sub.add_argument(
        "--row-timeout",
        type=_positive,
        default=120,
        metavar="SECONDS",
        help="a row waiting longer fails (its start may still complete: run again) (default: 120)",
    )
    sub.add_argument("--report", metavar="PATH", help="where to write the report CSV (default: stdout)")
    sub.set_defaults(run=cmd_import)
    return parser


# --- main ------------------------------------------------------------------------


def _gdap_parsers(commands: Any, actor: argparse.ArgumentParser, relationship: Callable[[Any], None]) -> None:
    """`partnerflow gdap …`: delegated admin relationships (the declaration's partner commands)."""
    gdap = commands.add_parser("gdap", help="delegated admin relationships (GDAP): admin roles in a customer's tenant")
    actions = gdap.add_subparsers(dest="action", metavar="ACTION", required=True)

    def one(sub: argparse.ArgumentParser) -> None:
        relationship(sub)
        sub.add_argument("request", metavar="REQUEST_ID", help="the request's id (lowercase, digits, dashes)")

    roles = {"choices": [r.value for r in AdminRole], "action": "append", "dest": "roles", "metavar": "ROLE"}
    sub = actions.add_parser("create", parents=[actor], help="ask a customer for admin roles (state: created)")
    one(sub)
    sub.add_argument("--company", required=True, help="the customer's company name")
    sub.add_argument("--admin-email", required=True, help="the customer's global admin (the approval link)")
    sub.add_argument("--display-name", required=True, help="up to 50 characters, shown to the customer")
    sub.add_argument("--duration", default="P730D", help="ISO 8601, P1D to P2Y (default: P730D)")
    sub.add_argument("--admin-role", required=True, help="an Entra role asked for (repeat for several)", **roles)
    sub.add_argument("--auto-extend", default="PT0S", choices=["PT0S", "P180D"], help="(default: PT0S, off)")
    sub.add_argument("--country", default="US", help="ISO country code (default: US)")
    sub.add_argument("--locale", help="the admin's language (default: the country's)")
    sub.add_argument("--lock", action="store_true", help="and lock it for approval at once (mails the link)")
    sub.set_defaults(run=cmd_gdap_create)
    for name, trigger in GDAP_UPDATES.items():
        command = DELEGATED_ADMIN.commands[trigger]
        sub = actions.add_parser(name, parents=[actor], help=command.about, description=command.about)
        one(sub)
        for field in command.payload.model_fields:
            if field == "roles":
                sub.add_argument("--admin-role", required=True, help="the roles (repeat for several)", **roles)
            elif field == "reason":
                sub.add_argument("--reason", default="")
            elif field not in ("actor", "proof"):
                sub.add_argument(f"--{field.replace('_', '-')}", dest=field, required=True)
        sub.set_defaults(run=cmd_gdap_update)
    sub = actions.add_parser(
        "reissue", parents=[actor], help="ask again from the same roles (an expired one cannot be restored)"
    )
    one(sub)
    sub.add_argument("--as", dest="as_request", required=True, metavar="NEW_REQUEST_ID", help="the new request's id")
    sub.set_defaults(run=cmd_gdap_reissue)
    sub = actions.add_parser("show", help="one delegated admin relationship: roles, term, audit")
    one(sub)
    sub.set_defaults(run=cmd_gdap_show)
    sub = actions.add_parser("list", help="delegated admin relationships (Temporal visibility)")
    sub.add_argument("--state", choices=list(DELEGATED_ADMIN.states))
    sub.add_argument("--partner", metavar="PARTNER_ID")
    sub.add_argument("--ends-within", type=_positive, metavar="DAYS", help="active ones ending within DAYS days")
    sub.add_argument("--limit", type=_positive, default=1000, help="at most this many (default: 1000)")
    sub.set_defaults(run=cmd_gdap_list)


def _wants_json(argv: Sequence[str]) -> bool:
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (see the module's docstring).

    Without `argv` (the console script, `python -m partnerflow.cli`) the process also
    ends with that code as soon as it exits, skipping the interpreter's teardown:
    Temporal's native client threads can crash it (SIGSEGV or SIGABRT instead of the
    code, temporalio/sdk-python#300), and scripts rely on the code.
    """
    code = _main(list(sys.argv[1:] if argv is None else argv))
    if argv is None:
        _exit_codes.append(code)
        if len(_exit_codes) == 1:
            atexit.register(_exit_without_teardown)
    return code


_exit_codes: list[int] = []


def _exit_without_teardown() -> None:
    """At exit, before the teardown that can crash: flush, then end with main's code."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (`partnerflow list | head`)
            stream.flush()
    logging.shutdown()
    os._exit(_exit_codes[-1])


def _main(argv: list[str]) -> int:
    as_json = _wants_json(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        return _fail(as_json, "UsageError", str(error), Exit.USAGE)
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else Exit.OK
    command: Callable[[argparse.Namespace], int | Coroutine[Any, Any, int]] = args.run
    try:
        outcome = command(args)
        return outcome if isinstance(outcome, int) else asyncio.run(outcome)
    except ValidationError as error:
        return _fail_validation(as_json, error)
    except UsageError as error:
        return _fail(as_json, "UsageError", str(error), Exit.USAGE)
    except (ConfigError, importer.ImportFileError, partners.PartnerInvalid, EventsError) as error:
        return _fail(as_json, type(error).__name__, str(error), Exit.USAGE)
    except RelationshipError as error:
        code = EXIT_CODES.get(type(error), Exit.ERROR)
        return _fail(as_json, error.type, error.message, code, error.rule)
    except KeyboardInterrupt:
        return _fail(as_json, "Interrupted", "stopped by the user", 130)
    except Exception as error:  # the promise: one line, exit 1, whatever went wrong
        return _fail(as_json, type(error).__name__, str(error) or repr(error), Exit.ERROR)


def console_main() -> NoReturn:
    """The installed `partnerflow` command: `main`, then an exit that cannot turn into a crash."""
    exit_without_teardown(main())


if __name__ == "__main__":
    console_main()
