//! The process's metrics, recorded once and exported twice: to the Prometheus registry behind
//! `/metrics` and to OpenTelemetry instruments (OTLP, when configured). Names follow the
//! OpenTelemetry conventions (dotted, UCUM units); Prometheus sees them with underscores and a
//! unit suffix (`swarm.tool_call.duration` in `s` → `swarm_tool_call_duration_seconds`).

use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter as OtelCounter, Gauge as OtelGauge, Histogram as OtelHistogram};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Label keys are `'static` (the conventions' names); values are whatever was measured.
type Labels = Vec<(Cow<'static, str>, String)>;

/// Set once OTLP metric export is installed: until then the OTel side is skipped (its
/// instruments would be no-ops anyway, and building their attributes costs allocations).
static OTLP: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_otlp_enabled() {
    OTLP.store(true, Ordering::Relaxed);
}

fn otlp() -> bool {
    OTLP.load(Ordering::Relaxed)
}

/// Prometheus label names cannot hold dots: `gen_ai.tool.name` → `gen_ai_tool_name`.
fn labels(kv: &[(&'static str, &str)]) -> Labels {
    kv.iter()
        .map(|&(k, v)| {
            let key = if k.contains('.') { Cow::Owned(k.replace('.', "_")) } else { Cow::Borrowed(k) };
            (key, v.to_owned())
        })
        .collect()
}

fn otel_attrs(kv: &[(&'static str, &str)]) -> Vec<KeyValue> {
    kv.iter().map(|&(k, v)| KeyValue::new(k, v.to_owned())).collect()
}

/// A counter in both registries.
pub struct CounterMetric {
    prom: Family<Labels, Counter>,
    otel: OtelCounter<u64>,
}

impl CounterMetric {
    /// Adds `n` to the series with these labels.
    pub fn add(&self, n: u64, kv: &[(&'static str, &str)]) {
        self.prom.get_or_create(&labels(kv)).inc_by(n);
        if otlp() {
            self.otel.add(n, &otel_attrs(kv));
        }
    }

    /// Makes the series with these labels exist (at zero) without counting: a known label
    /// value is scraped as 0 before it first happens, not missing.
    pub fn touch(&self, kv: &[(&'static str, &str)]) {
        drop(self.prom.get_or_create(&labels(kv)));
    }

    /// The series with these labels, resolved once for a hot path.
    pub fn bind(&self, kv: &[(&'static str, &str)]) -> BoundCounter {
        BoundCounter {
            prom: self.prom.get_or_create(&labels(kv)).clone(),
            otel: self.otel.clone(),
            attrs: otel_attrs(kv),
        }
    }
}

/// One series of a counter (see [`CounterMetric::bind`]).
pub struct BoundCounter {
    prom: Counter,
    otel: OtelCounter<u64>,
    attrs: Vec<KeyValue>,
}

impl BoundCounter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.prom.inc_by(n);
        if otlp() {
            self.otel.add(n, &self.attrs);
        }
    }
}

/// A gauge in both registries.
pub struct GaugeMetric {
    prom: Family<Labels, Gauge>,
    otel: OtelGauge<i64>,
}

impl GaugeMetric {
    /// Makes the series with these labels exist (at zero).
    pub fn touch(&self, kv: &[(&'static str, &str)]) {
        drop(self.prom.get_or_create(&labels(kv)));
    }

    /// Sets the series with these labels.
    pub fn set(&self, v: i64, kv: &[(&'static str, &str)]) {
        self.prom.get_or_create(&labels(kv)).set(v);
        if otlp() {
            self.otel.record(v, &otel_attrs(kv));
        }
    }
}

/// A histogram in both registries.
pub struct HistogramMetric {
    prom: Family<Labels, Histogram, fn() -> Histogram>,
    otel: OtelHistogram<f64>,
}

impl HistogramMetric {
    /// Makes the series with these labels exist (empty) without recording.
    pub fn touch(&self, kv: &[(&'static str, &str)]) {
        drop(self.prom.get_or_create(&labels(kv)));
    }

    /// Records one value.
    pub fn record(&self, v: f64, kv: &[(&'static str, &str)]) {
        self.prom.get_or_create(&labels(kv)).observe(v);
        if otlp() {
            self.otel.record(v, &otel_attrs(kv));
        }
    }
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

fn counts() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

fn ratios() -> Histogram {
    Histogram::new([1.0, 1.5, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
}

/// Every metric Swarm records.
pub struct Metrics {
    registry: Registry,
    /// The Prometheus family names, in registration order.
    names: Vec<String>,
    /// `swarm.runs.started` — runs accepted.
    pub runs_started: CounterMetric,
    /// `swarm.runs.refused` — submits refused at an admission cap.
    pub runs_refused: CounterMetric,
    /// `swarm.runs.finished` by `state`.
    pub runs_finished: CounterMetric,
    /// `swarm.runs.active` — runs not yet finished, on this coordinator.
    pub runs_active: GaugeMetric,
    /// `swarm.queue.depth` — ready subtasks waiting for a slot.
    pub queue_depth: GaugeMetric,
    /// `swarm.dispatch.latency` (s) — from a subtask becoming ready to its attempt's dispatch
    /// (queueing for a free slot included).
    pub dispatch_latency: HistogramMetric,
    /// `swarm.attempts` by `kind` (first, retry, speculative).
    pub attempts: CounterMetric,
    /// `swarm.retries` by `error.type`.
    pub retries: CounterMetric,
    /// `swarm.speculations` — backup attempts started.
    pub speculations: CounterMetric,
    /// `swarm.speculation.wins` — backups that finished first.
    pub speculation_wins: CounterMetric,
    /// `swarm.workers` — connected workers.
    pub workers: GaugeMetric,
    /// `swarm.slots` by `state` (used, free).
    pub slots: GaugeMetric,
    /// `swarm.run.critical_steps` ({step}) per finished run.
    pub critical_steps: HistogramMetric,
    /// `swarm.run.parallelism` per finished run (total work / critical path).
    pub parallelism: HistogramMetric,
    /// `swarm.store.batch.size` ({op}) per group commit.
    pub store_batch_size: HistogramMetric,
    /// `swarm.store.commit.duration` (s) per group commit.
    pub store_commit_duration: HistogramMetric,
    /// `swarm.tool_call.duration` (s) by `gen_ai.tool.name` and `outcome`, on the worker.
    pub tool_call_duration: HistogramMetric,
    /// `gen_ai.client.token.usage` ({token}) by `gen_ai.token.type` (input, output).
    pub token_usage: HistogramMetric,
    /// `gen_ai.client.operation.duration` (s) of model calls.
    pub operation_duration: HistogramMetric,
    /// `mcp.client.operation.duration` (s) of MCP requests, by `mcp.method.name`,
    /// `gen_ai.tool.name`, `network.transport` and (failed ones) `error.type`, on the worker.
    pub mcp_duration: HistogramMetric,
    /// `swarm.gateway.queue.depth` by `endpoint` — model calls waiting for a permit.
    pub gateway_queue_depth: GaugeMetric,
    /// `swarm.gateway.wait` (s) by `endpoint` — from a permit's request to its grant.
    pub gateway_wait: HistogramMetric,
    /// `swarm.gateway.tokens` by `endpoint` and `gen_ai.token.type` — tokens settled.
    pub gateway_tokens: CounterMetric,
    /// `swarm.gateway.throttled` by `endpoint` — calls the endpoint refused for its rate limit.
    pub gateway_throttled: CounterMetric,
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let meter = opentelemetry::global::meter_with_scope(crate::scope());
        let mut registry = Registry::default();
        let mut names = Vec::new();
        let mut counter = |name: &'static str, help: &'static str, unit: &'static str| {
            let prom = Family::<Labels, Counter>::default();
            names.push(name.replace('.', "_"));
            registry.register(name.replace('.', "_"), help, prom.clone());
            CounterMetric { prom, otel: meter.u64_counter(name).with_description(help).with_unit(unit).build() }
        };
        let runs_started = counter("swarm.runs.started", "Runs accepted", "{run}");
        let runs_refused = counter("swarm.runs.refused", "Submits refused at an admission cap", "{run}");
        let runs_finished = counter("swarm.runs.finished", "Runs finished, by state", "{run}");
        let attempts = counter("swarm.attempts", "Attempts started, by kind", "{attempt}");
        let retries = counter("swarm.retries", "Retries scheduled, by error type", "{attempt}");
        let speculations = counter("swarm.speculations", "Backup attempts started for stragglers", "{attempt}");
        let speculation_wins = counter("swarm.speculation.wins", "Backup attempts that finished first", "{attempt}");
        let gateway_tokens = counter("swarm.gateway.tokens", "Tokens used through the model gateway", "{token}");
        let gateway_throttled =
            counter("swarm.gateway.throttled", "Model calls refused by the endpoint's rate limit (429/503)", "{call}");
        let mut gauge = |name: &'static str, help: &'static str, unit: &'static str| {
            let prom = Family::<Labels, Gauge>::default();
            names.push(name.replace('.', "_"));
            registry.register(name.replace('.', "_"), help, prom.clone());
            GaugeMetric { prom, otel: meter.i64_gauge(name).with_description(help).with_unit(unit).build() }
        };
        let runs_active = gauge("swarm.runs.active", "Runs not yet finished", "{run}");
        let queue_depth = gauge("swarm.queue.depth", "Ready subtasks waiting for a worker slot", "{subtask}");
        let workers = gauge("swarm.workers", "Connected workers", "{worker}");
        let slots = gauge("swarm.slots", "Worker slots, by state (used, free)", "{slot}");
        let gateway_queue_depth =
            gauge("swarm.gateway.queue.depth", "Model calls waiting for a gateway permit", "{call}");
        let mut histogram = |name: &'static str, help: &'static str, unit: &'static str, buckets: fn() -> Histogram| {
            let prom = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(buckets);
            let prom_name = name.replace('.', "_");
            names.push(if unit == "s" { format!("{prom_name}_seconds") } else { prom_name.clone() });
            match unit {
                "s" => registry.register_with_unit(prom_name, help, Unit::Seconds, prom.clone()),
                _ => registry.register(prom_name, help, prom.clone()),
            }
            HistogramMetric { prom, otel: meter.f64_histogram(name).with_description(help).with_unit(unit).build() }
        };
        let dispatch_latency = histogram(
            "swarm.dispatch.latency",
            "From a subtask becoming ready to its dispatch to a worker",
            "s",
            seconds,
        );
        let critical_steps = histogram("swarm.run.critical_steps", "Critical steps of finished runs", "{step}", counts);
        let parallelism =
            histogram("swarm.run.parallelism", "Total work / critical path of finished runs", "1", ratios);
        let store_batch_size =
            histogram("swarm.store.batch.size", "Writes per group commit to the state store", "{op}", counts);
        let store_commit_duration =
            histogram("swarm.store.commit.duration", "Duration of a group commit to the state store", "s", seconds);
        let tool_call_duration =
            histogram("swarm.tool_call.duration", "Duration of tool calls, by tool and outcome", "s", seconds);
        let token_usage = histogram("gen_ai.client.token.usage", "Tokens used by model calls", "{token}", counts);
        let operation_duration = histogram("gen_ai.client.operation.duration", "Duration of model calls", "s", seconds);
        let mcp_duration = histogram("mcp.client.operation.duration", "Duration of MCP requests", "s", seconds);
        let gateway_wait =
            histogram("swarm.gateway.wait", "From a model call's permit request to its grant", "s", seconds);
        // Series without labels exist from the start (a scraper sees 0, not nothing).
        for c in [&runs_started, &runs_refused, &speculations, &speculation_wins] {
            drop(c.prom.get_or_create(&Labels::default()));
        }
        for g in [&runs_active, &queue_depth, &workers] {
            drop(g.prom.get_or_create(&Labels::default()));
        }
        for h in [&dispatch_latency, &critical_steps, &parallelism, &store_batch_size, &store_commit_duration] {
            drop(h.prom.get_or_create(&Labels::default()));
        }
        Self {
            registry,
            names,
            runs_started,
            runs_refused,
            runs_finished,
            runs_active,
            queue_depth,
            dispatch_latency,
            attempts,
            retries,
            speculations,
            speculation_wins,
            workers,
            slots,
            critical_steps,
            parallelism,
            store_batch_size,
            store_commit_duration,
            tool_call_duration,
            mcp_duration,
            token_usage,
            operation_duration,
            gateway_queue_depth,
            gateway_wait,
            gateway_tokens,
            gateway_throttled,
        }
    }

    /// The Prometheus family names (a counter's samples add `_total`, a histogram's `_bucket`,
    /// `_sum` and `_count`).
    pub fn prometheus_names(&self) -> &[String] {
        &self.names
    }

    /// The Prometheus text exposition (OpenMetrics) of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_mapping_of_otel_names() {
        let m = Metrics::new();
        m.tool_call_duration.record(0.25, &[("gen_ai.tool.name", "echo"), ("outcome", "ok")]);
        m.runs_finished.add(1, &[("state", "SUCCEEDED")]);
        m.token_usage.record(12.0, &[("gen_ai.token.type", "input")]);
        let text = m.encode();
        assert!(
            text.contains("swarm_tool_call_duration_seconds_count{gen_ai_tool_name=\"echo\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("swarm_runs_finished_total{state=\"SUCCEEDED\"} 1"), "{text}");
        assert!(text.contains("gen_ai_client_token_usage_sum{gen_ai_token_type=\"input\"} 12"), "{text}");
    }
}

#[cfg(test)]
mod dashboard {
    use super::*;

    /// Every metric the Grafana dashboard queries is one this registry exports.
    #[test]
    fn the_dashboard_queries_only_metrics_that_exist() {
        let m = Metrics::new();
        let exported = m.prometheus_names();
        assert!(exported.len() >= 15, "{exported:?}");
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../deploy/grafana/swarm.json")).expect("dashboard JSON");
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().expect("panels") {
            // A row only groups the panels after it.
            if panel["type"] == "row" {
                continue;
            }
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if !(word.starts_with("swarm_") || word.starts_with("gen_ai_client_")) {
                        continue;
                    }
                    let family = ["_bucket", "_count", "_sum", "_total"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    assert!(exported.iter().any(|e| e == family), "`{word}` in `{expr}` is not exported: {exported:?}");
                    queried += 1;
                }
            }
        }
        assert!(queried >= 14, "the dashboard queries our metrics");
    }
}
