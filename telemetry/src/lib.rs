//! Telemetry for every Swarm process: `tracing` logs to stderr, OpenTelemetry traces and metrics
//! over OTLP/gRPC, W3C trace-context propagation, and the Prometheus registry behind `/metrics`.
//!
//! OTLP export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `…_METRICS_ENDPOINT`) is set and `OTEL_SDK_DISABLED`
//! is not `true`; the SDK reads the other standard variables itself (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_EXPORTER_OTLP_TIMEOUT`). Export runs in the background:
//! a collector that is down costs dropped batches, never a blocked caller, and
//! [`Telemetry::shutdown`] waits at most a few seconds.
//!
//! Message and argument content (prompts, completions, tool arguments and results) is recorded
//! only when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`: it may hold personal data.

pub mod events;
pub mod metrics;

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use metrics::{Metrics, metrics};

/// The OpenTelemetry GenAI (and MCP) semantic conventions the spans and metrics follow: those
/// of `open-telemetry/semantic-conventions-genai`, where they moved after core 1.41.
pub const GENAI_SEMCONV_VERSION: &str = "0.1.0";

/// The core semantic conventions version the rest follows (`error.type`, `server.*`,
/// `network.*`, `rpc.*`).
pub const SEMCONV_VERSION: &str = "1.44.0";

/// The schema URL of that core version (set on the instrumentation scope).
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.44.0";

/// The instrumentation scope of Swarm's spans and metrics: `swarm`, at this build's version,
/// with the schema URL.
pub fn scope() -> opentelemetry::InstrumentationScope {
    opentelemetry::InstrumentationScope::builder("swarm")
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_schema_url(SCHEMA_URL)
        .build()
}

/// Whether spans also carry the tracing layer's bookkeeping (`code.*`, `thread.*`, `target`,
/// `busy_ns`, `idle_ns`): `SWARM_TRACE_DETAILS=true`, for debugging Swarm itself.
fn trace_details() -> bool {
    std::env::var("SWARM_TRACE_DETAILS").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Sets a string-array attribute on `span` (a `tracing` field can only hold one value).
pub fn set_strings(span: &tracing::Span, key: &'static str, values: Vec<String>) {
    let values = values.into_iter().map(opentelemetry::StringValue::from).collect();
    span.set_attribute(key, opentelemetry::Value::Array(opentelemetry::Array::String(values)));
}

/// Targets of spans (not log events): `swarm_coordinator::run`, `…::grpc`, `swarm_worker::tool`,
/// `…::agent`, `…::model`.
const SPAN_TARGETS: [&str; 5] = [
    "swarm_coordinator::run",
    "swarm_coordinator::grpc",
    "swarm_worker::tool",
    "swarm_worker::agent",
    "swarm_worker::model",
];

/// Handles to flush and stop exporters at exit.
#[must_use = "call shutdown() before the process exits, or the last spans are lost"]
pub struct Telemetry {
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    meter: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
    logs: Option<opentelemetry_sdk::logs::SdkLoggerProvider>,
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Whether OTLP export is configured.
pub fn otlp_enabled() -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            || env_set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            || env_set("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"))
}

/// Whether message and argument content may be recorded on spans.
pub fn capture_content() -> bool {
    std::env::var("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Sets up logging (`SWARM_LOG`, default `default_filter`) and, when configured, OTLP traces and
/// metrics for a process named `service` (unless `OTEL_SERVICE_NAME` names it). Call it inside
/// a tokio runtime.
pub fn init(service: &str, default_filter: &str) -> Telemetry {
    // Span-only targets stay out of the log (they cost a span per call and print nothing); the
    // exporter layer below has its own filter. SWARM_LOG overrides all of this.
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWARM_LOG").unwrap_or_else(|_| {
        let spans = SPAN_TARGETS.iter().map(|t| format!(",{t}=off")).collect::<String>();
        format!("{default_filter}{spans}").into()
    });
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if !otlp_enabled() {
        tracing_subscriber::registry().with(filter).with(stderr_layer()).init();
        return Telemetry { tracer: None, meter: None, logs: None };
    }
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !env_set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name(service.to_owned());
    }
    let resource = resource.build();
    let tracer = opentelemetry_otlp::SpanExporter::builder().with_tonic().build().ok().map(|exporter| {
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(exporter)
            .build()
    });
    let meter = opentelemetry_otlp::MetricExporter::builder().with_tonic().build().ok().map(|exporter| {
        opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_periodic_exporter(exporter)
            .build()
    });
    let logs = opentelemetry_otlp::LogExporter::builder().with_tonic().build().ok().map(|exporter| {
        opentelemetry_sdk::logs::SdkLoggerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(exporter)
            .build()
    });
    if let Some(provider) = &logs {
        use opentelemetry::logs::LoggerProvider;
        let _ = events::LOGGER.set(provider.logger_with_scope(scope()));
    }
    if let Some(m) = &meter {
        opentelemetry::global::set_meter_provider(m.clone());
        metrics::set_otlp_enabled();
    }
    // Spans only from our crates and the gRPC server layer reach the exporter; logs keep the
    // `SWARM_LOG` filter.
    let otel = tracer.as_ref().map(|t| {
        let spans = SPAN_TARGETS
            .iter()
            .fold(tracing_subscriber::filter::Targets::new(), |t, target| t.with_target(*target, tracing::Level::INFO));
        let details = trace_details();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(t.tracer_with_scope(scope()))
            .with_error_records_to_exceptions(false)
            .with_location(details)
            .with_threads(details)
            .with_tracked_inactivity(details)
            .with_target(details);
        tracing_subscriber::Layer::with_filter(layer, spans)
    });
    tracing_subscriber::registry()
        .with(otel)
        .with(tracing_subscriber::Layer::with_filter(stderr_layer(), filter))
        .init();
    Telemetry { tracer, meter, logs }
}

impl Telemetry {
    /// Flushes and stops the exporters, waiting at most `limit` (off the async threads).
    pub fn shutdown(self, limit: Duration) {
        if self.tracer.is_none() && self.meter.is_none() && self.logs.is_none() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if let Some(t) = self.tracer {
                let _ = t.shutdown_with_timeout(limit);
            }
            if let Some(m) = self.meter {
                let _ = m.shutdown_with_timeout(limit);
            }
            if let Some(l) = self.logs {
                let _ = l.shutdown_with_timeout(limit);
            }
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(limit + Duration::from_millis(500));
    }
}

struct MapCarrier<'a>(&'a mut HashMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapExtractor<'a>(&'a HashMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Log lines to standard error, coloured only when it is a terminal (a file or a pipe gets
/// plain text; `NO_COLOR` turns colour off anyway).
fn stderr_layer<S>() -> tracing_subscriber::fmt::Layer<
    S,
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    fn() -> std::io::Stderr,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt::layer().with_writer(std::io::stderr as fn() -> std::io::Stderr).with_ansi(colour)
}

/// The W3C trace context (`traceparent`, `tracestate`) of `span`, to send along.
pub fn inject(span: &tracing::Span) -> HashMap<String, String> {
    let mut map = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut MapCarrier(&mut map));
    map
}

/// Makes `span` a child of the remote span in `carrier` (if it names one).
pub fn set_parent(span: &tracing::Span, carrier: &HashMap<String, String>) {
    if carrier.is_empty() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&MapExtractor(carrier));
    let _ = span.set_parent(cx);
}

/// Makes `span` a child of the remote span named in HTTP/gRPC `headers`.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    let carrier: HashMap<String, String> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|k| headers.get(k).and_then(|v| v.to_str().ok()).map(|v| (k.to_owned(), v.to_owned())))
        .collect();
    set_parent(span, &carrier);
}

/// A router serving the process's metrics at `/metrics` (Prometheus text format).
pub fn metrics_router() -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                metrics().encode(),
            )
        }),
    )
}

/// Serves `router` (with `/metrics` merged in) on `listener` until `shutdown` fires.
pub async fn serve_http<L: axum::serve::Listener<Addr: std::fmt::Debug>>(
    listener: L,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router.merge(metrics_router())).with_graceful_shutdown(shutdown).await
}

/// Serves only `/metrics` on `listener` until `shutdown` fires (worker processes).
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_http(listener, axum::Router::new(), shutdown).await
}
