//! The streamable-HTTP client of MCP servers: reqwest (under the egress policy), with two
//! changes that make a restarted server reachable again within a second or two.
//!
//! - **A stale session is recognised as servers send it.** The spec answers a request for an
//!   unknown `Mcp-Session-Id` with 404, which rmcp turns into a transparent re-initialisation
//!   and one retry of the refused request. Servers built on the reference SDK's examples (the
//!   reference `server-everything` among them) answer 400 with a JSON-RPC error
//!   (`-32000 "Bad Request: No valid session ID provided"`); an answer to a request that
//!   carried a session, with a JSON-RPC error of code -32000, -32001 or -32600 whose message
//!   names the session, is taken as the same 404. The server refused such a request before
//!   running it, so retrying it once runs nothing twice.
//! - **A broken response stream gives up quickly.** rmcp resumes a broken SSE stream forever
//!   by default (1 s, doubling); a server that restarted lost the stream's events, so a call in
//!   flight then waits for its whole timeout. Here it tries [`RESUME_TRIES`] times within about
//!   two seconds, and the call fails transient (the attempt's retry policy decides what next:
//!   the server may have run it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::common::client_side_sse::{ExponentialBackoff, SseRetryPolicy};
use rmcp::transport::streamable_http_client::SseError;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use sse_stream::Sse;

/// Times a broken response stream is resumed before the call fails.
pub const RESUME_TRIES: usize = 3;

/// How a broken response stream is resumed: 250 ms, 500 ms, 1 s, then the call fails.
pub fn resume_policy() -> Arc<dyn SseRetryPolicy> {
    let mut policy = ExponentialBackoff::default();
    policy.max_times = Some(RESUME_TRIES);
    policy.base_duration = Duration::from_millis(250);
    policy.max_delay = Some(Duration::from_secs(1));
    Arc::new(policy)
}

/// The MCP session id a server gave (`Mcp-Session-Id`), as the client last sent it: for the
/// `mcp.session.id` attribute of MCP spans.
pub type SessionId = Arc<std::sync::Mutex<Option<Arc<str>>>>;

/// reqwest, with a stale session recognised as servers send it (see the module docs), and the
/// session id it uses kept in `.1`.
#[derive(Clone)]
pub struct SessionAware(pub reqwest::Client, pub SessionId);

/// Whether an answer to a request that carried a session says the session is unknown.
fn stale(answer: &StreamableHttpPostResponse) -> bool {
    let StreamableHttpPostResponse::Json(ServerJsonRpcMessage::Error(e), _) = answer else { return false };
    matches!(e.error.code.0, -32000 | -32001 | -32600) && e.error.message.to_ascii_lowercase().contains("session")
}

type PostResult = Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>>;
type StreamResult = Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<reqwest::Error>>;

impl StreamableHttpClient for SessionAware {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> PostResult {
        let limits = StreamableHttpResponseLimits::default();
        self.post_message_with_response_limits(uri, message, session_id, auth_header, custom_headers, limits).await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> PostResult {
        let mut limits = StreamableHttpResponseLimits::default();
        limits.max_sse_event_size = max_sse_event_size;
        self.post_message_with_response_limits(uri, message, session_id, auth_header, custom_headers, limits).await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> PostResult {
        let attached = session_id.is_some();
        if let Some(id) = &session_id {
            *self.1.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.clone());
        }
        let answer = self
            .0
            .post_message_with_response_limits(uri, message, session_id, auth_header, custom_headers, limits)
            .await;
        match answer {
            Ok(a) if attached && stale(&a) => Err(StreamableHttpError::SessionExpired),
            other => other,
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<reqwest::Error>> {
        self.0.delete_session(uri, session_id, auth_header, custom_headers).await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> StreamResult {
        self.0.get_stream(uri, session_id, last_event_id, auth_header, custom_headers).await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> StreamResult {
        self.0
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }
}
