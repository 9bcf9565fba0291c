//! A local OpenAI-compatible chat-completions server for tests: it answers from a queue of
//! canned responses (JSON, errors with `Retry-After`, hangs) and records every request.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One canned answer.
#[derive(Clone, Debug)]
pub enum Canned {
    /// 200 with this chat completion.
    Ok(Value),
    /// This status, with `Retry-After` seconds when set.
    Status(u16, Option<u32>),
    /// Never answers (until the client gives up).
    Hang,
    /// 200 with these chunks as server-sent events, then `data: [DONE]`.
    Stream(Vec<Value>),
    /// 200 with these chunks as server-sent events, then the connection is cut.
    StreamBroken(Vec<Value>),
}

/// A recorded request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: tokio::time::Instant,
    pub authorization: Option<String>,
    /// The W3C `traceparent` header, if any.
    pub traceparent: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Canned>,
    seen: Vec<Seen>,
}

/// The running fixture.
#[derive(Clone)]
pub struct ModelFixture {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
}

impl ModelFixture {
    /// Serves on 127.0.0.1:0 until the test's runtime ends.
    pub async fn start(answers: Vec<Canned>) -> anyhow::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner { queue: answers.into(), seen: Vec::new() }));
        let app = Router::new().route("/v1/chat/completions", post(handle)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { inner, addr })
    }

    /// The base URL (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).seen.clone()
    }
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: String) -> Response {
    let answer = {
        let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.seen.push(Seen {
            at: tokio::time::Instant::now(),
            authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned),
            traceparent: headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned),
            body: serde_json::from_str(&body).unwrap_or(Value::Null),
        });
        inner.queue.pop_front()
    };
    match answer {
        Some(Canned::Ok(v)) => (StatusCode::OK, [("content-type", "application/json")], v.to_string()).into_response(),
        Some(Canned::Status(code, retry_after)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = (status, json!({"error": {"message": "canned failure"}}).to_string()).into_response();
            if let Some(s) = retry_after
                && let Ok(v) = s.to_string().parse()
            {
                resp.headers_mut().insert("retry-after", v);
            }
            resp
        }
        Some(Canned::Stream(chunks)) => {
            let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
            body.push_str("data: [DONE]\n\n");
            (StatusCode::OK, [("content-type", "text/event-stream")], body).into_response()
        }
        Some(Canned::StreamBroken(chunks)) => {
            let mut parts: Vec<Result<String, std::io::Error>> =
                chunks.iter().map(|c| Ok(format!("data: {c}\n\n"))).collect();
            parts.push(Err(std::io::Error::other("the fixture cuts the stream")));
            // The cut comes a moment after the chunks, so they reach the client first.
            let parts = futures_util::StreamExt::then(futures_util::stream::iter(parts), |p| async move {
                if p.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                p
            });
            let body = axum::body::Body::from_stream(parts);
            (StatusCode::OK, [("content-type", "text/event-stream")], body).into_response()
        }
        Some(Canned::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        None => (StatusCode::OK, completion(Some("out of script"), vec![]).to_string()).into_response(),
    }
}

/// A chat completion with `content` and tool calls `(id, name, arguments text)`.
pub fn completion(content: Option<&str>, calls: Vec<(&str, &str, &str)>) -> Value {
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
        .collect();
    let finish = if tool_calls.is_empty() { "stop" } else { "tool_calls" };
    let mut message = json!({"role": "assistant", "content": content});
    if !tool_calls.is_empty() {
        message["tool_calls"] = json!(tool_calls);
    }
    json!({
        "id": "chatcmpl-test", "object": "chat.completion", "model": "fixture",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    })
}

/// A streamed answer: the content in two pieces, then a tool call split across chunks.
pub fn streamed(content: &str, call: Option<(&str, &str, &str)>) -> Vec<Value> {
    let (a, b) = content.split_at(content.len() / 2);
    let mut chunks = vec![
        json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": a}}]}),
        json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": b}}]}),
    ];
    if let Some((id, name, args)) = call {
        let (x, y) = args.split_at(args.len() / 2);
        chunks.push(json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": x}}]}}]}));
        chunks.push(json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": y}}]}}]}));
    }
    let finish = if call.is_some() { "tool_calls" } else { "stop" };
    chunks.push(
        json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}),
    );
    chunks.push(json!({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 4}}));
    chunks
}
