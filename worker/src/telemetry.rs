//! The worker's spans (OpenTelemetry GenAI semantic conventions) and metrics: `invoke_agent
//! {name}` per agent attempt, `chat {model}` per model call, `execute_tool {tool}` per tool call.
//! Content (messages, arguments, results) is recorded only when
//! `swarm_telemetry::capture_content()` allows it.

use std::time::Duration;

use swarm_core::FailureKind;
use swarm_telemetry::metrics;
use tracing::field::Empty;

use crate::model::{ChatResponse, ModelError};

/// `execute_tool {tool}`: one tool call (a DAG subtask's attempt, or a call an agent made).
pub fn tool_span(
    tool: &str,
    call_id: &str,
    run_id: &str,
    subtask_id: &str,
    attempt: u32,
    speculative: bool,
) -> tracing::Span {
    tracing::info_span!(
        target: "swarm_worker::tool",
        "execute_tool",
        otel.name = format!("execute_tool {tool}"),
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = tool,
        gen_ai.tool.call.id = call_id,
        gen_ai.tool.type = "function",
        gen_ai.tool.call.arguments = Empty,
        gen_ai.tool.call.result = Empty,
        swarm.run.id = run_id,
        swarm.subtask.id = subtask_id,
        swarm.attempt = i64::from(attempt),
        swarm.speculative = speculative,
        error.type = Empty,
    )
}

/// `invoke_agent {name}`: one attempt of an agent or orchestrator subtask.
pub fn agent_span(name: &str, run_id: &str, subtask_id: &str, attempt: u32, orchestrator: bool) -> tracing::Span {
    tracing::info_span!(
        target: "swarm_worker::agent",
        "invoke_agent",
        otel.name = format!("invoke_agent {name}"),
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.name = name,
        gen_ai.agent.id = subtask_id,
        swarm.run.id = run_id,
        swarm.subtask.id = subtask_id,
        swarm.attempt = i64::from(attempt),
        swarm.orchestrator = orchestrator,
        error.type = Empty,
    )
}

/// `chat {model}`: one model call (a client span).
pub fn chat_span(provider: &str, model: &str) -> tracing::Span {
    tracing::info_span!(
        target: "swarm_worker::model",
        "chat",
        otel.name = format!("chat {model}"),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = provider,
        gen_ai.request.model = model,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.input.messages = Empty,
        gen_ai.output.messages = Empty,
        error.type = Empty,
    )
}

/// Records a model call's outcome on its span and in the metrics.
pub fn chat_done(
    span: &tracing::Span,
    provider: &str,
    model: &str,
    took: Duration,
    result: &Result<ChatResponse, ModelError>,
) {
    let attrs =
        [("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", provider), ("gen_ai.request.model", model)];
    let m = metrics();
    match result {
        Ok(r) => {
            swarm_telemetry::set_strings(span, "gen_ai.response.finish_reasons", vec![r.finish_reason.to_string()]);
            // Integers as integers (tracing hands the exporter a u64 as text).
            span.record("gen_ai.usage.input_tokens", i64::try_from(r.usage.input_tokens).unwrap_or(i64::MAX));
            span.record("gen_ai.usage.output_tokens", i64::try_from(r.usage.output_tokens).unwrap_or(i64::MAX));
            if swarm_telemetry::capture_content() {
                span.record("gen_ai.output.messages", serde_json::to_string(&r.message).unwrap_or_default());
            }
            m.operation_duration.record(took.as_secs_f64(), &attrs);
            for (kind, n) in [("input", r.usage.input_tokens), ("output", r.usage.output_tokens)] {
                let mut with_type = attrs.to_vec();
                with_type.push(("gen_ai.token.type", kind));
                m.token_usage.record(n as f64, &with_type);
            }
        }
        Err(e) => {
            span.record("otel.status_code", "error");
            span.record("error.type", e.kind.as_str());
            let mut with_error = attrs.to_vec();
            with_error.push(("error.type", e.kind.as_str()));
            m.operation_duration.record(took.as_secs_f64(), &with_error);
        }
    }
}

/// Records a tool call's outcome on its span and in the metrics.
pub fn tool_done(span: &tracing::Span, tool: &str, took: Duration, failure: Option<FailureKind>) {
    let outcome = failure.map_or("ok", FailureKind::as_str);
    if let Some(kind) = failure {
        span.record("otel.status_code", "error");
        span.record("error.type", kind.as_str());
    }
    metrics().tool_call_duration.record(took.as_secs_f64(), &[("gen_ai.tool.name", tool), ("outcome", outcome)]);
}
