//! Tests of the models: the script, and the OpenAI-compatible client's parsing.

use serde_json::json;
use swarm_core::agent::{Message, Role, ToolCallRequest};

use super::*;

#[tokio::test]
async fn scripted_model_replies_by_agent_and_turn() {
    let m = ScriptedModel::from_yaml(
        "agents:\n  a:\n    - tool_calls: [{name: echo, arguments: {text: hi}}]\n      repeat: 2\n    - content: bye\n",
    )
    .expect("script");
    let mut history = vec![Message::text(Role::User, "go")];
    for _ in 0..2 {
        let r = m
            .chat(ChatRequest { agent: "a", messages: &history, tools: &[], gated: false, on_delta: None })
            .await
            .expect("reply");
        assert_eq!(r.message.tool_calls[0].arguments, r#"{"text":"hi"}"#);
        history.push(r.message);
    }
    let r = m
        .chat(ChatRequest { agent: "a", messages: &history, tools: &[], gated: false, on_delta: None })
        .await
        .expect("reply");
    assert_eq!(r.message.content.as_deref(), Some("bye"));
    assert!(
        m.chat(ChatRequest { agent: "nobody", messages: &history, tools: &[], gated: false, on_delta: None })
            .await
            .is_err()
    );
}

#[test]
fn kimi_replays_reasoning_and_others_do_not() {
    let config = |dialect| EndpointConfig {
        base_url: "http://127.0.0.1:9/v1".into(),
        model: "kimi-k2".into(),
        dialect,
        ..EndpointConfig::default()
    };
    let thought = Message {
        role: Role::Assistant,
        content: None,
        reasoning_content: Some("let me think".into()),
        tool_calls: vec![ToolCallRequest { id: "c1".into(), name: "echo".into(), arguments: "{}".into() }],
        tool_call_id: None,
    };
    let messages = vec![Message::text(Role::User, "hi"), thought, Message::tool_result("c1", "{}")];
    let tools = [ToolDef { name: "echo".into(), description: "d".into(), parameters: json!({"type": "object"}) }];
    let req = ChatRequest { agent: "a", messages: &messages, tools: &tools, gated: false, on_delta: None };
    let kimi = OpenAiModel::new(&config(Dialect::Kimi)).expect("client").body(&req);
    assert_eq!(kimi["messages"][1]["reasoning_content"], "let me think");
    assert_eq!(kimi["messages"][1]["tool_calls"][0]["function"]["name"], "echo");
    assert_eq!(kimi["messages"][2]["tool_call_id"], "c1");
    assert_eq!(kimi["tool_choice"], "auto");
    assert!(kimi["tools"][0]["function"].get("strict").is_none(), "no `strict` in tool schemas");
    let plain = OpenAiModel::new(&config(Dialect::OpenAi)).expect("client").body(&req);
    assert!(plain["messages"][1].get("reasoning_content").is_none());
}

#[test]
fn completions_parse_tool_calls_and_reasoning() {
    let text = r#"{"choices":[{"message":{"role":"assistant","content":null,"reasoning_content":"think",
        "tool_calls":[{"id":"c1","type":"function","function":{"name":"echo","arguments":"{\"text\":\"x\"}"}}]},
        "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":10,"completion_tokens":5}}"#;
    let r = parse_completion(text).expect("parses");
    assert_eq!(r.message.tool_calls[0].name, "echo");
    assert_eq!(r.message.reasoning_content.as_deref(), Some("think"));
    assert_eq!(r.usage, Usage { input_tokens: 10, output_tokens: 5 });
    assert_eq!(r.finish_reason, "tool_calls");
}

#[test]
fn a_stream_with_a_huge_tool_call_index_is_an_error_not_an_endless_allocation() {
    let text = "data: {\"choices\": [{\"delta\": {\"tool_calls\": [{\"index\": 18446744073709551615, \
                \"function\": {\"name\": \"t\", \"arguments\": \"{}\"}}]}}]}\n\ndata: [DONE]\n";
    let err = parse_stream(text).expect_err("refused");
    assert!(err.message.contains("out of range"), "{err}");
    let text =
        "data: {\"choices\": [{\"delta\": {\"tool_calls\": [{\"index\": 3, \"function\": {\"name\": \"t\"}}]}}]}\n";
    assert_eq!(parse_stream(text).expect("parsed").message.tool_calls.len(), 4);
}

#[test]
fn a_rate_limited_answer_names_its_pause_in_any_of_the_usual_headers() {
    use reqwest::header::{HeaderMap, HeaderValue};
    let pause = |pairs: &[(&'static str, &str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        throttle_pause(&h).map(|d| d.as_millis())
    };
    assert_eq!(pause(&[]), None);
    assert_eq!(pause(&[("retry-after", "2")]), Some(2_000));
    assert_eq!(pause(&[("retry-after-ms", "250"), ("retry-after", "9")]), Some(250));
    assert_eq!(pause(&[("x-ratelimit-reset-requests", "1s"), ("x-ratelimit-reset-tokens", "1m2.5s")]), Some(60_000));
    assert_eq!(pause(&[("x-ratelimit-reset-tokens", "350ms"), ("retry-after", "1")]), Some(350));
    assert_eq!(pause(&[("x-ratelimit-reset-tokens", "1h")]), Some(60_000), "at most a minute");
    // Hostile or broken values are no pause from that header, never a panic.
    for bad in ["NaN", "inf", "-5", "1e300", "12 parsecs", "s", "1..2s", ""] {
        let p = pause(&[("retry-after", bad)]);
        assert!(p.is_none_or(|ms| ms <= 60_000), "{bad}: {p:?}");
        let p = pause(&[("x-ratelimit-reset-tokens", bad)]);
        assert!(p.is_none_or(|ms| ms <= 60_000), "{bad}: {p:?}");
    }
}
