//! Models behind one trait: an OpenAI-compatible chat-completions client (Kimi/Moonshot, vLLM,
//! Ollama, OpenAI) and a scripted model for tests, demos and benchmarks.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use swarm_core::FailureKind;
use swarm_core::agent::{Message, Usage};

mod openai;
mod scripted;
#[cfg(test)]
mod tests;

pub use openai::*;
pub use scripted::*;

/// A tool as the model sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// One chat request.
#[derive(Clone, Debug)]
pub struct ChatRequest<'a> {
    /// The agent's name (scripted models choose their script by it; never sent to a real API).
    pub agent: &'a str,
    pub messages: &'a [Message],
    pub tools: &'a [ToolDef],
    /// Under the coordinator's model gateway: a 429 or 503 is returned at once (with
    /// [`ModelError::throttle`]) for the gateway to pause the endpoint and retry, rather than
    /// retried here.
    pub gated: bool,
    /// Receives output text and reasoning as a streaming answer arrives (none: not wanted).
    pub on_delta: Option<OnDelta<'a>>,
}

/// A callback for streamed output: `(text, reasoning)` deltas.
#[derive(Clone, Copy)]
pub struct OnDelta<'a>(pub &'a (dyn Fn(&str, &str) + Send + Sync));

impl std::fmt::Debug for OnDelta<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnDelta")
    }
}

/// The model's answer.
#[derive(Clone, Debug)]
pub struct ChatResponse {
    /// The assistant message (content and/or tool calls, reasoning when the model thinks).
    pub message: Message,
    pub usage: Usage,
    pub finish_reason: String,
}

/// A failed model call.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("model call failed ({kind:?}): {message}")]
pub struct ModelError {
    pub kind: FailureKind,
    pub message: String,
    /// The endpoint refused for its rate limit (429, 503) and asked to be left alone this long.
    pub throttle: Option<std::time::Duration>,
}

impl ModelError {
    fn transient(message: impl Into<String>) -> Self {
        Self { kind: FailureKind::Transient, message: message.into(), throttle: None }
    }
    fn permanent(message: impl Into<String>) -> Self {
        Self { kind: FailureKind::Permanent, message: message.into(), throttle: None }
    }
}

/// A chat model.
#[async_trait::async_trait]
pub trait ModelProvider: Send + Sync + 'static {
    async fn chat(&self, req: ChatRequest<'_>) -> Result<ChatResponse, ModelError>;
    /// `gen_ai.provider.name` for telemetry.
    fn provider(&self) -> &str {
        "swarm.scripted"
    }
    /// The model requested (`gen_ai.request.model`), when the provider knows it.
    fn model(&self) -> &str {
        ""
    }
    /// The `max_tokens` sent with each request (0: none), for the gateway's estimate.
    fn max_tokens(&self) -> u32 {
        0
    }
}

/// Models by endpoint name.
#[derive(Clone, Default)]
pub struct ModelRegistry {
    models: HashMap<String, Arc<dyn ModelProvider>>,
}

impl std::fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.models.keys()).finish()
    }
}

impl ModelRegistry {
    /// An empty registry (the worker then runs no agents).
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a model under `name`.
    pub fn register(&mut self, name: &str, model: Arc<dyn ModelProvider>) {
        self.models.insert(name.to_owned(), model);
    }
    /// The model for a spec's `model` field: the exact name, else the part before `:`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn ModelProvider>> {
        self.models.get(name).or_else(|| name.split(':').next().and_then(|n| self.models.get(n)))
    }
    /// The name a spec's `model` field is registered under (the gateway's endpoint name).
    pub fn endpoint<'a>(&'a self, name: &'a str) -> &'a str {
        if self.models.contains_key(name) { name } else { name.split(':').next().unwrap_or(name) }
    }
    /// The names models are registered under.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }
    /// True when no model is configured.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// Reads a `--models` file: endpoint name → config.
pub fn load_endpoints(text: &str) -> Result<HashMap<String, EndpointConfig>, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}
