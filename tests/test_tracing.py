"""Traces across partnerflow, on the real dev server, collected in memory: a start is one trace
from the client call through the workflow, its activities, the SMTP conversation and the SQL; a
customer's answer on the page is a trace of its own (the POST, the client's update) that the
workflow's handling of it links to, as the SDK's interceptor keeps one trace per workflow."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from partnerflow.activities.capabilities import Capabilities
from partnerflow.activities.email import Mailer, SmtpSettings
from partnerflow.activities.records import Records
from partnerflow.client import Relationships
from partnerflow.mailsink import MailSink, text_of
from partnerflow.portal.app import create_app
from partnerflow.runtime import tracing
from partnerflow.runtime.converter import data_converter
from partnerflow.states.models import Cloud, StartRelationship
from partnerflow.states.names import NAMESPACES, TASK_QUEUE
from partnerflow.testing import (
    KIT_KEYS,
    KIT_TOKEN_KEY,
    LINK_BASE,
    letters_sent,
    poll,
    register_partners,
    start_input,
)
from partnerflow.worker import new_worker

pytestmark = pytest.mark.server


class Switched(SpanProcessor):
    """The in-memory exporter while this module runs; silent after (a process has one provider)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner, self.on = inner, True

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.on:
            self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.inner.on_end(span)


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """A process-wide tracer provider while this module runs, then none again (as OpenTelemetry's
    own tests reset it): later tests' clients carry no trace, their engines run no hooks."""
    exporter = InMemorySpanExporter()
    switch = Switched(SimpleSpanProcessor(exporter))
    provider = TracerProvider()
    provider.add_span_processor(switch)
    trace.set_tracer_provider(provider)
    yield exporter
    switch.on = False
    SQLAlchemyInstrumentor().uninstrument()
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    assert not tracing.enabled()


async def test_one_trace_from_the_page_through_workflow_activities_smtp_and_sql(
    spans: InMemorySpanExporter, partnerflow_dev_env: WorkflowEnvironment, partnerflow_mail: MailSink, tmp_path: Path
) -> None:
    records = Records(f"sqlite:///{tmp_path / 'records.db'}")
    tracing.instrument_engine(records.engine)
    records.create_schema()
    client = Client(
        partnerflow_dev_env.client.service_client,
        namespace=NAMESPACES[Cloud.PUBLIC],
        data_converter=data_converter,
        interceptors=[tracing.interceptor()],  # as runtime.connection makes every client
    )
    activities = Capabilities(
        records,
        Mailer(SmtpSettings(port=partnerflow_mail.port)),
        LINK_BASE,
        "public",
        token_key=KIT_TOKEN_KEY,
        verifier=KIT_KEYS.verifier(),
    )
    body = start_input()
    register_partners(records, body)

    async def letters_traced() -> None:
        """The relay's letters sent, and their spans ended (a moment after the row goes)."""
        await letters_sent(records)

        async def ended() -> bool:
            return {"letter.send", "smtp.send"} <= {s.name for s in spans.get_finished_spans()}

        await poll(ended)

    relationships = Relationships({Cloud.PUBLIC: client}, signer=KIT_KEYS.partners)
    async with new_worker(client, activities, TASK_QUEUE):
        view = await relationships.start(StartRelationship.model_validate(body))
        await letters_traced()  # the relay sends the invitation just after the change
        [mail] = partnerflow_mail.messages()
        link = re.search(r"http\S+token=\S+", text_of(mail))
        assert link and view.state == "invited"
        started = spans.get_finished_spans()
        page = create_app(relationships)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=page), base_url=LINK_BASE) as browser:
            shown = await browser.get(link.group(0))
            form = dict(re.findall(r'name="(csrf|relationship|token)" value="([^"]*)"', shown.text))
            spans.clear()  # the answer's spans only
            answered = await browser.post("/invitation/accept", data={**form, "agreement": "yes"})
        await letters_traced()  # the partner's notice of it
        assert answered.status_code == 200
    answer = spans.get_finished_spans()

    # The start: one trace, from the client's call to the invitation's SMTP conversation and SQL.
    [root] = [s for s in started if s.name == "StartUpdateWithStartWorkflow:Relationship"]
    start_trace = trace_of(started, root)
    for expected in ("RunWorkflow:Relationship", "RunActivity:admit_start", "RunActivity:record_change_with_link"):
        assert expected in start_trace, (expected, sorted(start_trace))
    # The invitation goes with the change; the worker's relay sends it in the same trace.
    assert {"letter.send", "smtp.send"} <= set(start_trace)
    assert any(s.attributes and s.attributes.get("db.system") == "sqlite" for s in start_trace.values())

    # The answer: the page's POST and the client's update in one trace; the workflow's handling
    # of it links to that update, and its letter and records are in the handling's trace.
    [post] = [s for s in answer if s.name == "page POST /invitation/accept"]
    assert post.parent is None and post.attributes and post.attributes["http.response.status_code"] == 200
    posted = trace_of(answer, post)
    assert "StartWorkflowUpdate:accept_invitation" in posted
    [handled] = [s for s in answer if s.name == "HandleUpdate:accept_invitation"]
    client_span = posted["StartWorkflowUpdate:accept_invitation"].get_span_context()
    assert client_span is not None and [ln.context.span_id for ln in handled.links] == [client_span.span_id]
    handling = trace_of(answer, handled)
    # The notice is queued with the change and sent by the worker's relay, in the same trace.
    assert {"RunActivity:record_change", "letter.send", "smtp.send"} <= set(handling)
    assert any(s.attributes and s.attributes.get("db.system") == "sqlite" for s in handling.values())

    # Nothing personal or secret on any span: no address, no token, no query string.
    text = repr([(s.name, dict(s.attributes or {})) for s in (*started, *answer)])
    assert "@" not in text and form["token"] not in text and "token=" not in text
    records.dispose()


def trace_of(spans: tuple[ReadableSpan, ...], member: ReadableSpan) -> dict[str, ReadableSpan]:
    """The spans of `member`'s trace, by name."""
    assert member.context is not None
    return {s.name: s for s in spans if s.context is not None and s.context.trace_id == member.context.trace_id}


def test_spans_go_out_over_otlp_http_to_the_configured_receiver() -> None:
    """A real HTTP receiver: the exporter posts protobuf-encoded spans to the endpoint configured."""
    received: list[tuple[str, str, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert tracing.exporting_provider(None, "partnerflow-test", {}) is None  # off unless configured
        endpoint = f"http://127.0.0.1:{server.server_port}/v1/traces"
        provider = tracing.exporting_provider(endpoint, "partnerflow-test", {})
        assert provider is not None
        with provider.get_tracer("partnerflow").start_as_current_span("smtp.send"):
            pass
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        server.shutdown()
    [(path, kind, body)] = received
    assert path == "/v1/traces" and kind == "application/x-protobuf"
    assert b"smtp.send" in body and b"partnerflow-test" in body
