//! A rate-limited OpenAI-compatible chat-completions server on loopback, for the gateway
//! benchmark and its tests: it plays every agent for `turns` turns (a tool call each, then an
//! answer), counts tokens as a provider would (input from the request's text at four
//! characters a token, output as configured) and answers 429 — with `retry-after` and
//! `x-ratelimit-reset-*` headers — above its requests or tokens per minute, metered per second
//! as providers do (a second's worth at most at once).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How the server behaves.
#[derive(Clone, Copy, Debug)]
pub struct ServerConfig {
    /// Requests per minute (none: unlimited).
    pub rpm: Option<u32>,
    /// Tokens per minute, input + output (none: unlimited).
    pub tpm: Option<u64>,
    /// Turns per agent: `turns - 1` tool calls, then the answer.
    pub turns: usize,
    /// Output tokens of every answer (its text is four characters a token).
    pub output_tokens: u64,
    /// How long each answer takes.
    pub latency: Duration,
}

/// What the server saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct ServerStats {
    pub served: u64,
    pub refused_429: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug)]
struct Meter {
    per_minute: f64,
    level: f64,
    at: Instant,
}

impl Meter {
    fn new(per_minute: f64) -> Self {
        Self { per_minute, level: per_minute / 60.0, at: Instant::now() }
    }
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.per_minute / 60.0).min(self.per_minute / 60.0);
        self.at = now;
    }
    fn covers(&self, cost: f64) -> bool {
        self.level >= cost.min(self.per_minute / 60.0)
    }
    fn reset_after(&self, cost: f64) -> Duration {
        let short = (cost.min(self.per_minute / 60.0) - self.level).max(0.0);
        Duration::from_secs_f64((short / (self.per_minute / 60.0)).min(60.0))
    }
}

struct Inner {
    config: ServerConfig,
    tokens: Option<Meter>,
    requests: Option<Meter>,
    stats: ServerStats,
}

/// The running server; stopped when dropped.
pub struct ModelServer {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ModelServer {
    /// Serves on 127.0.0.1, any free port.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner {
            config,
            tokens: config.tpm.map(|t| Meter::new(t as f64)),
            requests: config.rpm.map(|r| Meter::new(f64::from(r))),
            stats: ServerStats::default(),
        }));
        let app = Router::new().route("/v1/chat/completions", post(handle)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let until = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(until).await;
        });
        Ok(Self { inner, addr, stop })
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Counters so far.
    pub fn stats(&self) -> ServerStats {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).stats
    }
}

/// Input tokens as the server counts them: every message's text, four characters a token.
fn input_tokens(body: &Value) -> u64 {
    let chars: usize = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            m["content"].as_str().map_or(0, str::len)
                + m["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        c["function"]["name"].as_str().map_or(0, str::len)
                            + c["function"]["arguments"].as_str().map_or(0, str::len)
                    })
                    .sum::<usize>()
        })
        .sum();
    (chars as u64).div_ceil(4)
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, body: String) -> Response {
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let input = input_tokens(&body);
    let (config, refused) = {
        let mut s = inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let cost = (input + s.config.output_tokens) as f64;
        let mut wait = Duration::ZERO;
        let mut ok = true;
        if let Some(m) = &mut s.tokens {
            m.refill(now);
            if !m.covers(cost) {
                ok = false;
                wait = wait.max(m.reset_after(cost));
            }
        }
        if let Some(m) = &mut s.requests {
            m.refill(now);
            if !m.covers(1.0) {
                ok = false;
                wait = wait.max(m.reset_after(1.0));
            }
        }
        if ok {
            if let Some(m) = &mut s.tokens {
                m.level -= cost;
            }
            if let Some(m) = &mut s.requests {
                m.level -= 1.0;
            }
            s.stats.served += 1;
            s.stats.input_tokens += input;
            s.stats.output_tokens += s.config.output_tokens;
            (s.config, None)
        } else {
            s.stats.refused_429 += 1;
            (s.config, Some(wait))
        }
    };
    if let Some(wait) = refused {
        let mut resp = (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})
                .to_string(),
        )
            .into_response();
        let h = resp.headers_mut();
        if let Ok(v) = format!("{}ms", wait.as_millis().max(1)).parse() {
            h.insert("x-ratelimit-reset-tokens", v);
        }
        if let Ok(v) = wait.as_secs_f64().ceil().max(1.0).to_string().parse() {
            h.insert("retry-after", v);
        }
        return resp;
    }
    tokio::time::sleep(config.latency).await;
    let turn = body["messages"].as_array().into_iter().flatten().filter(|m| m["role"] == "assistant").count();
    let text = "w".repeat(config.output_tokens as usize * 4);
    let message = if turn + 1 < config.turns {
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": format!("call-{turn}"), "type": "function",
            "function": {"name": "echo", "arguments": json!({"message": text}).to_string()}}]})
    } else {
        json!({"role": "assistant", "content": text})
    };
    let completion = json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": if turn + 1 < config.turns { "tool_calls" } else { "stop" }}],
        "usage": {"prompt_tokens": input, "completion_tokens": config.output_tokens, "total_tokens": input + config.output_tokens},
    });
    (StatusCode::OK, [("content-type", "application/json")], completion.to_string()).into_response()
}
