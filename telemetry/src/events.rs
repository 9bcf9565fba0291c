//! OpenTelemetry log records for events an operator keeps (the audit log's lines), exported
//! over OTLP with the traces and metrics when export is on ([`crate::init`]); nothing otherwise.
//! Each record carries the trace context of the span current where it is emitted, so a backend
//! links it to the call that made it.

use std::sync::OnceLock;

use opentelemetry::logs::{AnyValue, LogRecord, Logger, Severity};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub(crate) static LOGGER: OnceLock<opentelemetry_sdk::logs::SdkLogger> = OnceLock::new();

/// Whether records are exported (OTLP export is on).
pub fn enabled() -> bool {
    LOGGER.get().is_some()
}

/// Emits one record: event `name`, severity INFO, `body` as its body, and `attributes`.
pub fn emit(name: &'static str, body: String, attributes: Vec<(String, String)>) {
    let Some(logger) = LOGGER.get() else { return };
    let mut record = logger.create_log_record();
    record.set_event_name(name);
    record.set_severity_number(Severity::Info);
    record.set_severity_text("INFO");
    record.set_timestamp(std::time::SystemTime::now());
    record.set_body(AnyValue::from(body));
    record.add_attributes(attributes);
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    if sc.is_valid() {
        record.set_trace_context(sc.trace_id(), sc.span_id(), Some(sc.trace_flags()));
    }
    logger.emit(record);
}
