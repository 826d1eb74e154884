//! OpenTelemetry trace export (docs/operations.md, "Tracing"): OFF unless the standard
//! `OTEL_*` environment variables ask for it, and then OTLP over HTTP/protobuf.
//!
//! The spans are ordinary `tracing` spans (`saga.step` in the coordinator,
//! `task` in the worker); the `tracing-opentelemetry` layer installed by
//! [`layer`] exports them. [`set_parent`] and [`traceparent_of`] connect them to
//! the W3C `traceparent` that travels with a saga (`crate::traceparent`). While no
//! layer is installed both return at once: with export off, tracing costs a
//! relaxed atomic load per span, and the traceparent strings the messages carry.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};

use crate::traceparent::TraceParent;

/// Set once a layer is built; read before any per-span work.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OpenTelemetry layer was installed).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Why export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// What the environment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    Off,
    Otlp,
    /// `OTEL_TRACES_EXPORTER` names an exporter this build lacks (`zipkin`, `console`…).
    Unsupported(String),
}

/// Reads `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` and the OTLP endpoint variables
/// through `var`. Off by default: unlike the specification's default (`otlp`), an
/// unset `OTEL_TRACES_EXPORTER` exports only when an OTLP endpoint is configured, so
/// an unconfigured process never sends anything anywhere.
pub fn export_from(var: impl Fn(&str) -> Option<String>) -> Export {
    let set = |k: &str| {
        var(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Export::Off;
    }
    match set("OTEL_TRACES_EXPORTER") {
        Some(v) => {
            let names: Vec<String> = v.split(',').map(|s| s.trim().to_lowercase()).collect();
            if names.iter().any(|n| n == "otlp") {
                Export::Otlp
            } else if names.iter().all(|n| n == "none") {
                Export::Off
            } else {
                Export::Unsupported(v)
            }
        }
        None if set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() =>
        {
            Export::Otlp
        }
        None => Export::Off,
    }
}

/// The tracer provider the process environment asks for, if any: OTLP over
/// HTTP/protobuf with a batch processor, configured by the exporter's own `OTEL_*`
/// variables (endpoint, headers, timeout) and the resource ones (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`; the service is `sagaflow` when neither names it).
pub fn provider_from_env() -> Result<Option<SdkTracerProvider>, TelemetryError> {
    match export_from(|k| std::env::var(k).ok()) {
        Export::Off => return Ok(None),
        Export::Unsupported(v) => {
            eprintln!("warning: OTEL_TRACES_EXPORTER={v} is not supported (only `otlp`); spans are not exported");
            return Ok(None);
        }
        Export::Otlp => {}
    }
    if let Ok(p) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL") {
        if p != "http/protobuf" {
            eprintln!("warning: OTEL_EXPORTER_OTLP_PROTOCOL={p} is not supported; exporting with http/protobuf");
        }
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(TelemetryError::Exporter)?;
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name"));
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !named {
        resource = resource.with_service_name("sagaflow");
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// The `tracing` layer that exports spans through `provider`; turns [`enabled`] on.
pub fn layer<S>(provider: &SdkTracerProvider) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    ENABLED.store(true, Ordering::Relaxed);
    // No `busy_ns`/`idle_ns` attributes: an attempt's span says what it did, not how
    // often tokio polled it.
    tracing_opentelemetry::layer()
        .with_tracked_inactivity(false)
        .with_tracer(provider.tracer("sagaflow"))
}

/// Makes `span` (not entered yet) a child of the remote span `traceparent` names.
/// A missing or malformed value leaves the span where it is (a root of its own).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    let Some(tp) = traceparent.and_then(|t| TraceParent::parse(t).ok()) else {
        return;
    };
    let remote = SpanContext::new(
        TraceId::from(tp.trace_id),
        SpanId::from(tp.parent_id),
        TraceFlags::new(tp.flags),
        true,
        TraceState::default(),
    );
    let cx = opentelemetry::Context::new().with_remote_span_context(remote);
    if let Err(e) = span.set_parent(cx) {
        tracing::debug!(error = %e, "span parent not set");
    }
}

/// The `traceparent` naming `span` itself, to hand to what it causes; `None` while
/// export is off or the span is disabled.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    let tp = TraceParent {
        trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
        parent_id: u64::from_be_bytes(sc.span_id().to_bytes()),
        flags: sc.trace_flags().to_u8(),
    };
    Some(tp.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn export_is_off_unless_asked_for() {
        assert_eq!(export_from(env(&[])), Export::Off);
        assert_eq!(export_from(env(&[("OTEL_SERVICE_NAME", "x")])), Export::Off);
        assert_eq!(
            export_from(env(&[("OTEL_TRACES_EXPORTER", "none")])),
            Export::Off
        );
        assert_eq!(
            export_from(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])),
            Export::Off
        );
    }

    #[test]
    fn an_endpoint_or_the_otlp_exporter_turns_it_on() {
        let on = [
            vec![("OTEL_TRACES_EXPORTER", "otlp")],
            vec![("OTEL_TRACES_EXPORTER", " OTLP ")],
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")],
            vec![(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces",
            )],
        ];
        for e in on {
            assert_eq!(export_from(env(&e)), Export::Otlp, "{e:?}");
        }
    }

    #[test]
    fn disabled_sdk_and_explicit_none_win_over_an_endpoint() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(
            export_from(env(&[ep, ("OTEL_SDK_DISABLED", "true")])),
            Export::Off
        );
        assert_eq!(
            export_from(env(&[ep, ("OTEL_TRACES_EXPORTER", "none")])),
            Export::Off
        );
        assert_eq!(
            export_from(env(&[ep, ("OTEL_TRACES_EXPORTER", "zipkin")])),
            Export::Unsupported("zipkin".into())
        );
    }

    #[test]
    fn without_a_layer_nothing_is_done() {
        // No test in this binary installs a layer.
        let span = tracing::info_span!("x");
        set_parent(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(traceparent_of(&span), None);
    }
}
