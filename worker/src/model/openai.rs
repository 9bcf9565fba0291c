//! The OpenAI-compatible chat-completions client (Kimi/Moonshot, vLLM, Ollama, OpenAI): requests,
//! retries under `Retry-After`, streamed and plain answers.

use std::time::Duration;

use backon::BackoffBuilder;
use serde::Deserialize;
use serde_json::{Value, json};
use swarm_core::FailureKind;
use swarm_core::agent::{Message, Role, ToolCallRequest, Usage};
use tracing::warn;

use super::*;

/// Quirks of OpenAI-compatible servers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// OpenAI and most compatible servers.
    #[default]
    OpenAi,
    /// Kimi/Moonshot: thinking models return `reasoning_content`, which must be replayed; sampling
    /// parameters are fixed; `strict` in tool schemas is not accepted.
    Kimi,
    /// vLLM (needs `--enable-auto-tool-choice --tool-call-parser …` on the server).
    Vllm,
    /// Ollama.
    Ollama,
}

/// An endpoint as configured on a worker (`--models FILE`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// e.g. `https://api.moonshot.ai/v1` or `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// The model name sent to the server.
    pub model: String,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the API key.
    #[serde(default)]
    pub api_key_file: Option<String>,
    #[serde(default)]
    pub dialect: Dialect,
    /// Per-call deadline in seconds (default 120).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Retries on 429/5xx/timeouts (default 4).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Ask for a streamed answer (server-sent events), for servers that only stream.
    #[serde(default)]
    pub stream: bool,
    /// Sent as `max_tokens` with every request; the model gateway estimates answers by it.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// The model gateway's limits (read by the coordinator's `--models`; workers ignore them):
    /// requests per minute, tokens per minute, requests at once.
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
}

/// An OpenAI-compatible `POST {base_url}/chat/completions` client (non-streaming). Retries 429
/// and 5xx (honouring `Retry-After`), connection errors and deadline overruns with jittered
/// exponential backoff. The API key is read from the environment or a file, never from a
/// request, and never logged.
pub struct OpenAiModel {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    dialect: Dialect,
    timeout: Duration,
    max_retries: u32,
    stream: bool,
    max_tokens: Option<u32>,
}

impl OpenAiModel {
    /// A client for `config`.
    pub fn new(config: &EndpointConfig) -> Result<Self, String> {
        let api_key = match (&config.api_key_env, &config.api_key_file) {
            (Some(var), _) => Some(std::env::var(var).map_err(|_| format!("the API key variable {var} is not set"))?),
            (None, Some(file)) => {
                Some(std::fs::read_to_string(file).map_err(|e| format!("reading {file}: {e}"))?.trim().to_owned())
            }
            (None, None) => None,
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            client,
            url: format!("{}/chat/completions", config.base_url.trim_end_matches('/')),
            model: config.model.clone(),
            api_key,
            dialect: config.dialect,
            timeout: Duration::from_secs(config.timeout_secs.unwrap_or(120)),
            max_retries: config.max_retries.unwrap_or(4),
            stream: config.stream,
            max_tokens: config.max_tokens,
        })
    }

    pub(super) fn body(&self, req: &ChatRequest<'_>) -> Value {
        let messages: Vec<Value> = req
            .messages
            .iter()
            .map(|m| {
                let mut v = json!({ "role": m.role, "content": m.content });
                if !m.tool_calls.is_empty() {
                    v["tool_calls"] = m
                        .tool_calls
                        .iter()
                        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                        .collect();
                }
                if let Some(id) = &m.tool_call_id {
                    v["tool_call_id"] = json!(id);
                }
                if self.dialect == Dialect::Kimi
                    && let Some(r) = &m.reasoning_content
                {
                    v["reasoning_content"] = json!(r);
                }
                v
            })
            .collect();
        let mut body = json!({ "model": self.model, "messages": messages, "stream": self.stream });
        if let Some(m) = self.max_tokens {
            body["max_tokens"] = json!(m);
        }
        if self.stream {
            body["stream_options"] = json!({ "include_usage": true });
        }
        if !req.tools.is_empty() {
            body["tools"] = req
                .tools
                .iter()
                .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
                .collect();
            body["tool_choice"] = json!("auto");
        }
        body
    }

    async fn once(
        &self,
        body: &Value,
        on_delta: Option<OnDelta<'_>>,
    ) -> Result<ChatResponse, (ModelError, Option<Duration>)> {
        let mut request = self
            .client
            .post(&self.url)
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        // W3C trace context of the current `chat` span: the model server's spans join the run's trace.
        for (k, v) in swarm_telemetry::inject(&tracing::Span::current()) {
            request = request.header(k, v);
        }
        let resp = request.send().await.map_err(|e| {
            let kind = if e.is_timeout() { FailureKind::Timeout } else { FailureKind::Transient };
            (ModelError { kind, message: format!("request failed: {}", e.without_url()), throttle: None }, None)
        })?;
        let status = resp.status();
        if status.as_u16() == 429 || status.is_server_error() {
            let pause = throttle_pause(resp.headers());
            let throttled = matches!(status.as_u16(), 429 | 503);
            let body = read_bounded(resp, 64 * 1024).await.unwrap_or_default();
            // OpenAI answers 429 for an exhausted quota too: no wait fixes that.
            if body.contains("insufficient_quota") {
                return Err((ModelError::permanent(format!("HTTP {status}: insufficient_quota")), None));
            }
            let mut e = ModelError::transient(format!("HTTP {status}"));
            if throttled {
                e.throttle = Some(pause.unwrap_or(DEFAULT_THROTTLE));
            }
            return Err((e, pause));
        }
        let text = match on_delta {
            Some(cb) if self.stream && status.is_success() => read_streaming(resp, MAX_ANSWER_BYTES, cb).await,
            _ => read_bounded(resp, MAX_ANSWER_BYTES).await,
        }
        .map_err(|e| (e, None))?;
        if !status.is_success() {
            let snippet: String = text.chars().take(300).collect();
            return Err((ModelError::permanent(format!("HTTP {status}: {snippet}")), None));
        }
        if self.stream { parse_stream(&text) } else { parse_completion(&text) }.map_err(|e| (e, None))
    }
}

/// The pause after a 429 or 503 that names none.
const DEFAULT_THROTTLE: Duration = Duration::from_secs(1);

/// How long a rate-limited endpoint asks to be left alone: `retry-after-ms`, else the later
/// of `x-ratelimit-reset-requests` and `x-ratelimit-reset-tokens` (`1s`, `6m0s`, `250ms`), else
/// `retry-after` in seconds. At most a minute; NaN, negative and unreadable values are none.
pub fn throttle_pause(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let secs = |s: f64| Duration::try_from_secs_f64(s.clamp(0.0, 60.0)).ok();
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite()) {
        return secs(ms / 1000.0);
    }
    let reset = ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .into_iter()
        .filter_map(|h| text(h).and_then(go_duration))
        .reduce(f64::max);
    if let Some(r) = reset {
        return secs(r);
    }
    text("retry-after").and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite()).and_then(secs)
}

/// Seconds in a Go-style duration (`1h2m3.5s`, `250ms`, `0.5s`); a bare number is seconds.
fn go_duration(text: &str) -> Option<f64> {
    if let Ok(v) = text.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..split].parse().ok()?;
        rest = &rest[split..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    total.is_finite().then_some(total)
}

/// The largest answer read from a model server; a larger one fails the call (permanent).
pub const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// The most tool calls one answer may carry.
pub const MAX_TOOL_CALLS_PER_TURN: usize = 256;

/// The response body as text, refusing more than `limit` bytes.
async fn read_bounded(mut resp: reqwest::Response, limit: usize) -> Result<String, ModelError> {
    let mut body = Vec::new();
    while let Some(chunk) =
        resp.chunk().await.map_err(|e| ModelError::transient(format!("reading the answer: {}", e.without_url())))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ModelError::permanent(format!("the answer exceeds {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| ModelError::transient("the answer is not UTF-8"))
}

/// [`read_bounded`] for a stream of server-sent events, handing each chunk's content and
/// reasoning deltas to `on_delta` as its line arrives.
/// Shown in an agent's live output when a streamed answer broke off and is asked for again.
pub const RETRY_NOTE: &str = "\n[the answer broke off; asking the model again]\n";

async fn read_streaming(
    mut resp: reqwest::Response,
    limit: usize,
    on_delta: OnDelta<'_>,
) -> Result<String, ModelError> {
    let mut body = Vec::new();
    let mut line_start = 0;
    while let Some(chunk) =
        resp.chunk().await.map_err(|e| ModelError::transient(format!("reading the answer: {}", e.without_url())))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ModelError::permanent(format!("the answer exceeds {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
        while let Some(nl) = body[line_start..].iter().position(|&b| b == b'\n') {
            let line = &body[line_start..line_start + nl];
            line_start += nl + 1;
            let Some(data) = std::str::from_utf8(line).ok().and_then(|l| l.strip_prefix("data:")).map(str::trim) else {
                continue;
            };
            if let Ok(v) = serde_json::from_str::<Value>(data) {
                let delta = &v["choices"][0]["delta"];
                (on_delta.0)(
                    delta["content"].as_str().unwrap_or(""),
                    delta["reasoning_content"].as_str().unwrap_or(""),
                );
            }
        }
    }
    String::from_utf8(body).map_err(|_| ModelError::transient("the answer is not UTF-8"))
}

/// Parses a streamed chat completion (server-sent `chat.completion.chunk` events up to
/// `data: [DONE]`): content, reasoning and tool-call fragments are joined by index.
pub fn parse_stream(text: &str) -> Result<ChatResponse, ModelError> {
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut calls: Vec<ToolCallRequest> = Vec::new();
    let mut usage = Usage::default();
    let mut finish = String::new();
    let mut chunks = 0;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|e| ModelError::transient(format!("malformed stream chunk: {e}")))?;
        chunks += 1;
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            usage = Usage {
                input_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
                output_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
            };
        }
        let Some(choice) = chunk["choices"].get(0) else { continue };
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.to_owned();
        }
        let delta = &choice["delta"];
        content.push_str(delta["content"].as_str().unwrap_or(""));
        reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or(""));
        for part in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = part["index"].as_u64().unwrap_or(calls.len() as u64);
            // A hostile or broken server's index must not make the worker allocate without end.
            let index = usize::try_from(index)
                .ok()
                .filter(|&i| i < MAX_TOOL_CALLS_PER_TURN)
                .ok_or_else(|| ModelError::transient(format!("tool call index {index} out of range")))?;
            while calls.len() <= index {
                calls.push(ToolCallRequest { id: String::new(), name: String::new(), arguments: String::new() });
            }
            let call = &mut calls[index];
            if let Some(id) = part["id"].as_str() {
                call.id = id.to_owned();
            }
            call.name.push_str(part["function"]["name"].as_str().unwrap_or(""));
            call.arguments.push_str(part["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    if chunks == 0 {
        return Err(ModelError::transient("the stream held no chunks"));
    }
    Ok(ChatResponse {
        message: Message {
            role: Role::Assistant,
            content: (!content.is_empty()).then_some(content),
            reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
            tool_calls: calls,
            tool_call_id: None,
        },
        usage,
        finish_reason: finish,
    })
}

/// Parses a chat-completions answer.
pub fn parse_completion(text: &str) -> Result<ChatResponse, ModelError> {
    #[derive(Deserialize)]
    struct Completion {
        choices: Vec<Choice>,
        #[serde(default)]
        usage: Option<WireUsage>,
    }
    #[derive(Deserialize)]
    struct Choice {
        message: WireMessage,
        #[serde(default)]
        finish_reason: Option<String>,
    }
    #[derive(Deserialize)]
    struct WireMessage {
        #[serde(default)]
        content: Option<String>,
        #[serde(default)]
        reasoning_content: Option<String>,
        #[serde(default)]
        tool_calls: Option<Vec<WireCall>>,
    }
    #[derive(Deserialize)]
    struct WireCall {
        id: String,
        function: WireFunction,
    }
    #[derive(Deserialize)]
    struct WireFunction {
        name: String,
        #[serde(default)]
        arguments: Value,
    }
    #[derive(Deserialize)]
    struct WireUsage {
        #[serde(default)]
        prompt_tokens: u64,
        #[serde(default)]
        completion_tokens: u64,
    }
    let c: Completion =
        serde_json::from_str(text).map_err(|e| ModelError::transient(format!("malformed chat completion: {e}")))?;
    let choice = c.choices.into_iter().next().ok_or_else(|| ModelError::transient("the answer has no choices"))?;
    if choice.message.tool_calls.as_ref().is_some_and(|t| t.len() > MAX_TOOL_CALLS_PER_TURN) {
        return Err(ModelError::transient(format!("more than {MAX_TOOL_CALLS_PER_TURN} tool calls in one answer")));
    }
    let tool_calls = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|t| ToolCallRequest {
            id: t.id,
            name: t.function.name,
            // Arguments are a JSON string per the API; some servers send an object.
            arguments: match t.function.arguments {
                Value::String(s) => s,
                other => other.to_string(),
            },
        })
        .collect();
    Ok(ChatResponse {
        message: Message {
            role: Role::Assistant,
            content: choice.message.content,
            reasoning_content: choice.message.reasoning_content,
            tool_calls,
            tool_call_id: None,
        },
        usage: c
            .usage
            .map_or(Usage::default(), |u| Usage { input_tokens: u.prompt_tokens, output_tokens: u.completion_tokens }),
        finish_reason: choice.finish_reason.unwrap_or_default(),
    })
}

#[async_trait::async_trait]
impl ModelProvider for OpenAiModel {
    fn provider(&self) -> &str {
        match self.dialect {
            Dialect::OpenAi => "openai",
            Dialect::Kimi => "moonshot",
            Dialect::Vllm => "vllm",
            Dialect::Ollama => "ollama",
        }
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn max_tokens(&self) -> u32 {
        self.max_tokens.unwrap_or(0)
    }

    async fn chat(&self, req: ChatRequest<'_>) -> Result<ChatResponse, ModelError> {
        let body = self.body(&req);
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(20))
            .with_jitter()
            .with_max_times(self.max_retries as usize)
            .build();
        // What a broken stream already showed stays shown: a retry says it starts over, so a
        // watcher does not read two answers run together.
        let emitted = std::sync::atomic::AtomicBool::new(false);
        let relay = |text: &str, reasoning: &str| {
            if !(text.is_empty() && reasoning.is_empty()) {
                emitted.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(d) = req.on_delta {
                (d.0)(text, reasoning);
            }
        };
        let on_delta = req.on_delta.map(|_| OnDelta(&relay));
        loop {
            if emitted.swap(false, std::sync::atomic::Ordering::Relaxed)
                && let Some(d) = req.on_delta
            {
                (d.0)(RETRY_NOTE, "");
            }
            match self.once(&body, on_delta).await {
                Ok(r) => return Ok(r),
                // Under the gateway, a rate limit is the gateway's to wait out, cluster-wide.
                Err((e, _)) if req.gated && e.throttle.is_some() => return Err(e),
                Err((e, retry_after)) if e.kind != FailureKind::Permanent => {
                    let Some(backoff) = delays.next() else { return Err(e) };
                    let wait = retry_after.unwrap_or(backoff);
                    warn!(url = %self.url, error = %e.message, wait_ms = wait.as_millis() as u64, "model call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}
