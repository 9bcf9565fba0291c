//! The coordinator's spans and metrics (see `swarm_telemetry`): one `invoke_workflow` span per
//! run, gRPC server spans, and the scheduling metrics.

use std::sync::OnceLock;
use swarm_core::engine::{RunState, Update};
use swarm_core::summary::RunSummary;
use tonic::codegen::http;

use swarm_telemetry::metrics;
use swarm_telemetry::metrics::BoundCounter;

/// The `invoke_workflow {name}` span of a run (GenAI semantic conventions), a child of `parent`
/// when given (the SubmitRun server span) or the root of a new trace.
pub fn workflow_span(parent: Option<&tracing::Span>, name: &str, run_id: &str) -> tracing::Span {
    let parent = parent.and_then(|p| p.id());
    tracing::info_span!(
        target: "swarm_coordinator::run",
        parent: parent,
        "invoke_workflow",
        otel.name = format!("invoke_workflow {name}"),
        otel.kind = "internal",
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = "invoke_workflow",
        gen_ai.workflow.name = name,
        swarm.run.id = run_id,
        swarm.run.state = tracing::field::Empty,
        swarm.critical_steps = tracing::field::Empty,
        swarm.tool_calls = tracing::field::Empty,
        swarm.duplicate = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Makes the coordinator's series with known label values exist from the start (scraped as 0
/// before they first happen).
pub fn touch_series() {
    let m = metrics();
    for state in [RunState::Succeeded, RunState::Failed, RunState::Cancelled, RunState::BudgetExceeded] {
        m.runs_finished.touch(&[("state", state.as_str())]);
    }
    for kind in ["first", "retry", "speculative"] {
        m.attempts.touch(&[("kind", kind)]);
    }
    for kind in swarm_core::FailureKind::ALL {
        m.retries.touch(&[("error.type", kind.as_str())]);
    }
    for state in ["used", "free"] {
        m.slots.touch(&[("state", state)]);
    }
}

/// Records the end of a run on its span and in the metrics.
pub fn run_finished(span: &tracing::Span, state: RunState, summary: &RunSummary) {
    span.record("swarm.run.state", state.as_str());
    // Integers as integers (tracing hands the exporter a u64 as text).
    span.record("swarm.critical_steps", i64::try_from(summary.critical_steps).unwrap_or(i64::MAX));
    span.record("swarm.tool_calls", i64::from(summary.tool_calls_completed));
    if state != RunState::Succeeded {
        span.record("otel.status_code", "error");
        span.record("error.type", state.as_str());
    }
    let m = metrics();
    m.runs_finished.add(1, &[("state", state.as_str())]);
    m.critical_steps.record(summary.critical_steps as f64, &[]);
    if summary.parallelism.is_finite() && summary.parallelism > 0.0 {
        m.parallelism.record(summary.parallelism, &[]);
    }
    if summary.speculative_wins > 0 {
        m.speculation_wins.add(u64::from(summary.speculative_wins), &[]);
    }
}

/// The attempt counters by kind, resolved once (they count every dispatch).
struct Attempts {
    first: BoundCounter,
    retry: BoundCounter,
    speculative: BoundCounter,
    speculations: BoundCounter,
}

fn attempts() -> &'static Attempts {
    static ATTEMPTS: OnceLock<Attempts> = OnceLock::new();
    ATTEMPTS.get_or_init(|| {
        let m = metrics();
        Attempts {
            first: m.attempts.bind(&[("kind", "first")]),
            retry: m.attempts.bind(&[("kind", "retry")]),
            speculative: m.attempts.bind(&[("kind", "speculative")]),
            speculations: m.speculations.bind(&[]),
        }
    })
}

/// Counts attempts, retries and backups as the engine publishes them.
pub fn count_update(update: &Update) {
    let m = metrics();
    match update {
        Update::Started { attempt, waited_us, .. } => {
            if attempt.0 <= 1 { &attempts().first } else { &attempts().retry }.add(1);
            if let Some(us) = waited_us {
                m.dispatch_latency.record(*us as f64 / 1e6, &[]);
            }
        }
        Update::Speculated { .. } => {
            attempts().speculative.add(1);
            attempts().speculations.add(1);
        }
        Update::Failed { kind, retry_in_us: Some(_), .. } => m.retries.add(1, &[("error.type", kind.as_str())]),
        _ => {}
    }
}

/// A gRPC server span per call (RPC semantic conventions), continuing the caller's trace, with
/// the call's `rpc.grpc.status_code`. Worker streams (they live for hours), health checks and
/// reflection get none.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcSpanLayer;

impl<S> tower_layer::Layer<S> for GrpcSpanLayer {
    type Service = GrpcSpan<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcSpan { inner }
    }
}

/// See [`GrpcSpanLayer`].
#[derive(Clone, Debug)]
pub struct GrpcSpan<S> {
    inner: S,
}

fn grpc_span<B>(req: &http::Request<B>) -> tracing::Span {
    let path = req.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    if method == "Connect" || service.starts_with("grpc.") {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: "swarm_coordinator::grpc",
        "grpc",
        otel.name = path,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    swarm_telemetry::set_parent_from_headers(&span, req.headers());
    span
}

/// Records a gRPC status on the call's span; server errors per the conventions (UNKNOWN,
/// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS) mark it an error.
fn record_status(span: &tracing::Span, headers: &http::HeaderMap) -> bool {
    let Some(code) = headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i64>().ok())
    else {
        return false;
    };
    span.record("rpc.grpc.status_code", code);
    if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
        span.record("otel.status_code", "error");
    }
    true
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for GrpcSpan<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<SpanBody<ResBody>>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let span = grpc_span(&req);
        let call = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        let body_span = span.clone();
        Box::pin(tracing::Instrument::instrument(
            async move {
                let resp = call.await?;
                // Errors come "trailers-only": the status is in the headers, and the span ends
                // with the response. Otherwise the status comes in the trailers, after the body
                // (a whole stream, for WatchRun): the body holds the span until then.
                let done = record_status(&tracing::Span::current(), resp.headers());
                let span = if done { None } else { Some(Closing(body_span)) };
                Ok(resp.map(|inner| SpanBody { inner, span }))
            },
            span,
        ))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its call's span open until the body ends (a server stream's
    /// span covers the stream), recording the status from the trailers.
    pub struct SpanBody<B> {
        #[pin]
        inner: B,
        span: Option<Closing>,
    }
}

/// A call's span that ends when this is dropped: the exporter takes a span's end from its
/// last exit, so it is entered once more then.
pub struct Closing(tracing::Span);

impl Drop for Closing {
    fn drop(&mut self) {
        let _entered = self.0.enter();
    }
}

impl<B: http_body::Body> http_body::Body for SpanBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let (Some(trailers), Some(span)) = (frame.trailers_ref(), this.span.as_ref()) {
                    record_status(&span.0, trailers);
                    *this.span = None;
                }
            }
            std::task::Poll::Ready(None | Some(Err(_))) => *this.span = None,
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
