use super::*;

const MS: Duration = Duration::from_millis(1);

fn gateway(limits: Limits) -> (Gateway, Instant) {
    let now = Instant::now();
    (Gateway::new(HashMap::from([("m".to_owned(), limits)]), now), now)
}

fn ask(prompt_chars: u64, max_tokens: u32) -> Ask {
    Ask { endpoint: "m".into(), prompt_chars, max_tokens, ..Ask::default() }
}

fn granted(g: &mut Gateway, now: Instant) -> Vec<u64> {
    g.grant(now).into_iter().map(|g| g.holder.1).collect()
}

fn used(input: u64, output: u64) -> Release {
    Release { used: true, input_tokens: input, output_tokens: output, throttled_for: None }
}

#[test]
fn the_models_file_gives_limits_beside_each_endpoint_and_refuses_zero() {
    let text = "a: {base_url: http://x/v1, model: m, rpm: 60, tpm: 90000}\nb: {base_url: http://y/v1, model: n}\n";
    let limits = limits_from_models_file(text).expect("parses");
    assert_eq!(limits.len(), 1, "an endpoint without limits is not governed");
    assert_eq!(limits["a"], Limits { rpm: Some(60), tpm: Some(90_000), max_concurrency: None, key: limits["a"].key });
    let err = limits_from_models_file("a: {base_url: u, model: m, tpm: 0}").expect_err("zero blocks forever");
    assert!(err.contains("a:") && err.contains("at least 1"), "{err}");
    assert!(limits_from_models_file("a: {rpm: -1}").is_err());
    assert!(limits_from_models_file("a: {rpm: 1e300}").is_err());
}

#[test]
fn entries_with_one_api_key_share_one_budget() {
    let text = "fast: {base_url: http://x/v1/, model: small, api_key_env: KEY, max_concurrency: 1}\n\
                big: {base_url: http://x/v1, model: large, api_key_env: KEY}\n\
                other: {base_url: http://x/v1, model: large, api_key_env: OTHER_KEY}\n";
    let limits = limits_from_models_file(text).expect("parses");
    assert_eq!(limits.len(), 2, "`big` shares `fast`'s key, `other` has its own and no limits: {limits:?}");
    assert_eq!(limits["big"].max_concurrency, Some(1));
    assert_eq!(limits["big"].key, limits["fast"].key);
    let now = Instant::now();
    let mut g = Gateway::new(limits, now);
    assert_eq!(g.endpoints(), ["big", "fast"], "workers ask permits for both");
    assert_eq!(g.budgets(), ["big"], "one budget, named after the first");
    assert!(g.acquire(now, (ConnId(1), 1), Ask { endpoint: "fast".into(), ..Ask::default() }));
    assert!(g.acquire(now, (ConnId(1), 2), Ask { endpoint: "big".into(), ..Ask::default() }));
    assert_eq!(granted(&mut g, now), [1], "one request at once for the key, whichever entry asks");
    g.release(now, (ConnId(1), 1), used(10, 10));
    assert_eq!(granted(&mut g, now), [2]);

    let clash = "a: {base_url: http://x/v1, model: m, api_key_env: K, rpm: 60}\n\
                 b: {base_url: http://x/v1, model: n, api_key_env: K, rpm: 120}\n";
    let err = limits_from_models_file(clash).expect_err("two limits for one key");
    assert!(err.contains("a and b") && err.contains("same API key"), "{err}");
}

#[test]
fn an_endpoint_it_does_not_govern_is_not_queued() {
    let (mut g, now) = gateway(Limits { rpm: Some(60), ..Limits::default() });
    assert!(!g.acquire(now, (ConnId(1), 1), Ask { endpoint: "other".into(), ..Ask::default() }));
    assert!(g.grant(now).is_empty());
}

#[test]
fn requests_per_minute_refill_continuously_and_say_when() {
    let (mut g, now) = gateway(Limits { rpm: Some(120), ..Limits::default() });
    for id in 1..=4 {
        assert!(g.acquire(now, (ConnId(1), id), ask(10, 10)));
    }
    // One second's worth at once: two.
    assert_eq!(granted(&mut g, now), [1, 2]);
    let wake = g.next_wake().expect("waiting");
    assert_eq!(wake.duration_since(now).as_millis(), 500, "the next request's share refills in 0.5 s");
    assert!(granted(&mut g, now + 499 * MS).is_empty());
    assert_eq!(granted(&mut g, wake), [3]);
    assert_eq!(granted(&mut g, wake + 500 * MS), [4]);
    assert_eq!(g.next_wake(), None);
}

#[test]
fn tokens_are_reserved_by_estimate_and_settled_on_use() {
    // 60,000 tpm: 1,000 tokens a second.
    let (mut g, now) = gateway(Limits { tpm: Some(60_000), ..Limits::default() });
    // 1,500 characters at 3 per token + max_tokens 300 = 800.
    g.acquire(now, (ConnId(1), 1), ask(1_500, 300));
    g.acquire(now, (ConnId(1), 2), ask(1_500, 300));
    assert_eq!(granted(&mut g, now), [1]);
    // The call used 150: 650 come back, enough for the next at once.
    g.release(now, (ConnId(1), 1), used(100, 50));
    assert_eq!(granted(&mut g, now), [2]);
    let s = g.stats()["m"];
    assert_eq!((s.granted, s.input_tokens, s.output_tokens), (2, 100, 50));
}

#[test]
fn a_call_larger_than_a_seconds_worth_goes_when_the_bucket_is_full_and_leaves_a_debt() {
    let (mut g, now) = gateway(Limits { tpm: Some(6_000), ..Limits::default() });
    g.acquire(now, (ConnId(1), 1), ask(0, 1_000));
    g.acquire(now, (ConnId(1), 2), ask(0, 50));
    assert_eq!(granted(&mut g, now), [1], "100 a second; the large call goes on a full bucket");
    // The debt is 900: the small call waits for 900 + 50 tokens' worth, 9.5 s.
    let wake = g.next_wake().expect("waiting");
    assert_eq!(wake.duration_since(now).as_millis(), 9_500);
    assert_eq!(granted(&mut g, wake), [2]);
}

#[test]
fn the_queue_is_ordered_by_priority_orchestrators_and_critical_path_and_the_head_is_not_overtaken() {
    let (mut g, now) = gateway(Limits { max_concurrency: Some(1), ..Limits::default() });
    g.acquire(now, (ConnId(1), 99), ask(0, 1));
    assert_eq!(granted(&mut g, now), [99]);
    let mut order = |id, priority, orchestrator, critical_path| {
        g.acquire(now, (ConnId(1), id), Ask { priority, orchestrator, critical_path, ..ask(0, 1) });
    };
    order(1, 0, false, 5);
    order(2, 0, false, 9);
    order(3, 0, true, 1);
    order(4, 5, false, 1);
    order(5, 0, false, 9);
    let mut seen = Vec::new();
    let mut last = 99;
    for _ in 0..5 {
        g.release(now, (ConnId(1), last), used(1, 1));
        let next = granted(&mut g, now);
        assert_eq!(next.len(), 1, "one at a time");
        last = next[0];
        seen.push(last);
    }
    assert_eq!(seen, [4, 3, 2, 5, 1]);
}

#[test]
fn a_throttled_call_pauses_the_endpoint_and_lowers_its_rate() {
    let (mut g, now) = gateway(Limits { rpm: Some(600), ..Limits::default() });
    g.acquire(now, (ConnId(1), 1), ask(0, 1));
    assert_eq!(granted(&mut g, now), [1]);
    let throttled = Release { throttled_for: Some(Duration::from_secs(2)), ..used(0, 0) };
    g.release(now, (ConnId(1), 1), throttled);
    for id in 2..=3 {
        g.acquire(now, (ConnId(1), id), ask(0, 1));
    }
    assert!(granted(&mut g, now + 1_999 * MS).is_empty(), "paused for the whole endpoint");
    let wake = g.next_wake().expect("waiting");
    assert!(wake >= now + 2_000 * MS);
    // Emptied and at 80 %: 8 a second, so 125 ms for the first one after the pause.
    let first = granted(&mut g, now + 2_125 * MS);
    assert_eq!(first, [2]);
    assert!(granted(&mut g, now + 2_126 * MS).is_empty());
    assert_eq!(g.stats()["m"].throttled, 1);
    // A pause of 1e300 seconds (a hostile header the worker clamped, or not) is at most a minute.
    g.release(now, (ConnId(1), 2), Release { throttled_for: Some(Duration::MAX), ..used(0, 0) });
    assert!(g.next_wake().expect("waiting") <= now + 2_126 * MS + MAX_PAUSE);
}

#[test]
fn a_lost_connection_drops_its_waits_and_frees_its_permits() {
    let (mut g, now) = gateway(Limits { max_concurrency: Some(1), ..Limits::default() });
    g.acquire(now, (ConnId(1), 1), ask(0, 1));
    assert_eq!(granted(&mut g, now), [1]);
    g.acquire(now, (ConnId(1), 2), ask(0, 1));
    g.acquire(now, (ConnId(2), 1), ask(0, 1));
    g.forget(ConnId(1));
    assert_eq!(g.grant(now).iter().map(|x| x.holder).collect::<Vec<_>>(), [(ConnId(2), 1)]);
    // Releases nobody holds (forged, repeated, from the lost connection) change nothing.
    g.release(now, (ConnId(1), 1), used(1_000_000, 1_000_000));
    g.release(now, (ConnId(7), 7), used(1, 1));
    g.acquire(now, (ConnId(2), 2), ask(0, 1));
    assert!(g.grant(now).is_empty(), "the one permit is still held");
}

#[test]
fn a_wait_given_up_leaves_the_queue_and_a_permit_never_released_is_taken_back() {
    let (mut g, now) = gateway(Limits { max_concurrency: Some(1), ..Limits::default() });
    g.acquire(now, (ConnId(1), 1), ask(0, 1));
    assert_eq!(granted(&mut g, now), [1]);
    g.acquire(now, (ConnId(1), 2), ask(0, 1));
    g.release(now, (ConnId(1), 2), Release::default());
    g.acquire(now, (ConnId(1), 3), ask(0, 1));
    assert!(granted(&mut g, now + MAX_HOLD - MS).is_empty());
    assert_eq!(granted(&mut g, now + MAX_HOLD), [3], "2 gave up; 1 was held too long");
}

#[test]
fn estimates_learn_the_endpoints_tokens_per_character_and_answer_length() {
    let (mut g, now) = gateway(Limits { tpm: Some(60_000_000), ..Limits::default() });
    for id in 0..50 {
        g.acquire(now, (ConnId(1), id), ask(4_000, 0));
        assert_eq!(granted(&mut g, now), [id]);
        g.release(now, (ConnId(1), id), used(1_000, 100));
    }
    let e = &g.endpoints["m"];
    let estimate = e.estimate(&ask(4_000, 0));
    // 4 characters a token seen, estimated at 3.6: 1,111 in; answers of 100, twice that out.
    assert!((1_250..=1_400).contains(&estimate), "{estimate}");
    assert!(e.estimate(&ask(u64::MAX, u32::MAX)) > 0, "absurd sizes saturate, never panic");
}
