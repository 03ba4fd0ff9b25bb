"""Traces: one trace from a client call or a page's answer through the workflow, its activities,
the SMTP conversation and the records' SQL (OpenTelemetry).

The SDK's `TracingInterceptor` carries the trace across Temporal (client → workflow →
activity, in headers); the records' engine is instrumented by OpenTelemetry's SQLAlchemy
instrumentation; SMTP and the page open spans of their own. Nothing personal is put on a
span: ids, names of steps, statuses (no address, no token, no query string).

Export is off unless configured: `tracing.otlp_endpoint` (or OpenTelemetry's own
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`), over OTLP/HTTP.
Without an exporter every span is a no-op and costs next to nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from temporalio.contrib.opentelemetry import TracingInterceptor

from partnerflow.states.names import TRACER

OTEL_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def configure(endpoint: str | None, service: str, env: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """Export this process's spans over OTLP/HTTP when an endpoint is configured; else nothing."""
    provider = exporting_provider(endpoint, service, env)
    if provider is not None:
        trace.set_tracer_provider(provider)
    return provider


def exporting_provider(endpoint: str | None, service: str, env: Mapping[str, str]) -> TracerProvider | None:
    if not endpoint and not any(env.get(name) for name in OTEL_ENDPOINTS):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def interceptor() -> TracingInterceptor:
    """The trace crosses Temporal: client → workflow → activity, in headers."""
    return TracingInterceptor(trace.get_tracer(TRACER))


def enabled() -> bool:
    """Whether this process records spans (an SDK tracer provider is set)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def interceptors() -> list[TracingInterceptor]:
    """For every client (and so every worker) partnerflow makes, once this process records
    spans; none otherwise: carrying an empty trace in every header costs CPU per lifecycle."""
    return [interceptor()] if enabled() else []


def instrument_engine(engine: Any) -> None:
    """Spans for the SQL an engine runs (statements without their parameters). The instrumentation
    is once per process: it then also covers every engine made after it."""
    instrumentor = SQLAlchemyInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        # Its declared range ends below SQLAlchemy 2.1, which it serves all the same (tests/test_tracing.py).
        instrumentor.instrument(engine=engine, enable_commenter=False, skip_dep_check=True)


@contextmanager
def span(name: str, **attributes: str | int | bool) -> Iterator[trace.Span]:
    """A span of partnerflow's own (SMTP, the page), under whatever span is current."""
    with trace.get_tracer(TRACER).start_as_current_span(name, attributes=attributes) as current:
        yield current
