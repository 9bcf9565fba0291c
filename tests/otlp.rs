//! An in-test OpenTelemetry collector: OTLP/gRPC trace, metrics and logs services on 127.0.0.1:0
//! that keep what they receive.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tonic::{Request, Response, Status};

/// A span as received, flattened with its process's `service.name`.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub kind: i32,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub parent_span_id: Vec<u8>,
    pub attributes: Vec<(String, String)>,
    /// Each attribute's OTLP value type: `string`, `int`, `bool`, `double`, `array`, ….
    pub types: Vec<(String, &'static str)>,
    /// The instrumentation scope: name, version, schema URL.
    pub scope: (String, String, String),
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl ReceivedSpan {
    /// An attribute's value, as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// An attribute's OTLP value type.
    pub fn attr_type(&self, key: &str) -> Option<&'static str> {
        self.types.iter().find(|(k, _)| k == key).map(|(_, t)| *t)
    }

    /// How long the span lasted.
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.end_unix_nano.saturating_sub(self.start_unix_nano))
    }
}

/// A log record as received.
#[derive(Clone, Debug)]
pub struct ReceivedLog {
    pub service: String,
    pub event_name: String,
    pub severity_text: String,
    pub body: String,
    pub attributes: Vec<(String, String)>,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
}

impl ReceivedLog {
    /// An attribute's value, as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    logs: Vec<ReceivedLog>,
    spans: Vec<ReceivedSpan>,
    /// Debug dumps of every request, to search for what must not be there.
    raw: Vec<String>,
    metric_names: Vec<String>,
}

/// The running collector.
#[derive(Clone)]
pub struct Collector {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| text(&Some(v.clone()))).collect();
            format!("[{}]", items.join(","))
        }
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn kind(v: &Option<AnyValue>) -> &'static str {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(_)) => "string",
        Some(any_value::Value::IntValue(_)) => "int",
        Some(any_value::Value::BoolValue(_)) => "bool",
        Some(any_value::Value::DoubleValue(_)) => "double",
        Some(any_value::Value::ArrayValue(_)) => "array",
        Some(_) => "other",
        None => "none",
    }
}

fn attrs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

struct Traces(Arc<Mutex<Inner>>);
struct Logs(Arc<Mutex<Inner>>);

#[tonic::async_trait]
impl LogsService for Logs {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let req = req.into_inner();
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        inner.raw.push(format!("{req:?}"));
        for rl in &req.resource_logs {
            let resource = rl.resource.as_ref().map(|r| attrs(&r.attributes)).unwrap_or_default();
            let service =
                resource.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()).unwrap_or_default();
            for sl in &rl.scope_logs {
                for r in &sl.log_records {
                    inner.logs.push(ReceivedLog {
                        service: service.clone(),
                        event_name: r.event_name.clone(),
                        severity_text: r.severity_text.clone(),
                        body: text(&r.body),
                        attributes: attrs(&r.attributes),
                        trace_id: r.trace_id.clone(),
                        span_id: r.span_id.clone(),
                    });
                }
            }
        }
        Ok(Response::new(ExportLogsServiceResponse { partial_success: None }))
    }
}
struct Metrics(Arc<Mutex<Inner>>);

#[tonic::async_trait]
impl TraceService for Traces {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let req = req.into_inner();
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        inner.raw.push(format!("{req:?}"));
        for rs in &req.resource_spans {
            let resource = rs.resource.as_ref().map(|r| attrs(&r.attributes)).unwrap_or_default();
            let service =
                resource.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()).unwrap_or_default();
            for ss in &rs.scope_spans {
                let scope = ss.scope.as_ref().map_or_else(Default::default, |s| (s.name.clone(), s.version.clone()));
                let scope = (scope.0, scope.1, ss.schema_url.clone());
                for s in &ss.spans {
                    inner.spans.push(ReceivedSpan {
                        service: service.clone(),
                        name: s.name.clone(),
                        kind: s.kind,
                        trace_id: s.trace_id.clone(),
                        span_id: s.span_id.clone(),
                        parent_span_id: s.parent_span_id.clone(),
                        attributes: attrs(&s.attributes),
                        types: s.attributes.iter().map(|kv| (kv.key.clone(), kind(&kv.value))).collect(),
                        scope: scope.clone(),
                        start_unix_nano: s.start_time_unix_nano,
                        end_unix_nano: s.end_time_unix_nano,
                    });
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Metrics {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let req = req.into_inner();
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        inner.raw.push(format!("{req:?}"));
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    inner.metric_names.push(m.name.clone());
                }
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

impl Collector {
    /// Serves on 127.0.0.1:0 until the test's runtime ends.
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Traces(inner.clone())))
            .add_service(MetricsServiceServer::new(Metrics(inner.clone())))
            .add_service(LogsServiceServer::new(Logs(inner.clone())));
        tokio::spawn(async move {
            let _ = router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)).await;
        });
        Ok(Self { inner, addr })
    }

    /// The endpoint for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Spans received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).spans.clone()
    }

    /// Log records received so far.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).logs.clone()
    }

    /// Names of the metrics received so far.
    pub fn metric_names(&self) -> Vec<String> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).metric_names.clone()
    }

    /// Everything received, as one debug dump.
    pub fn raw(&self) -> String {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).raw.join("\n")
    }
}
