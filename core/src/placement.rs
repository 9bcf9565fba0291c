//! Where a subtask may run: labels a worker must have (or must not have), labels it should
//! preferably have, and resources it holds while its attempt runs.
//!
//! ```yaml
//! placement:
//!   labels: {pool: gpu}          # required: the worker has every one
//!   avoid: {region: us}          # the worker has none of these
//!   prefer: [{labels: {zone: a}, weight: 10}]   # soft: among the workers that fit, the heaviest
//!   resources: {gpu: 1, memory: 4Gi}           # held from the attempt's start to its end
//! ```
//!
//! Amounts are quantities as Kubernetes writes them: a number (`1`, `0.5`), with a decimal
//! (`k`, `M`, `G`, `T`) or binary (`Ki`, `Mi`, `Gi`, `Ti`) suffix, or milli (`500m`). They are
//! kept in thousandths (`500m` of cpu is 500, `1` is 1,000).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The largest amount (in thousandths) a quantity may have: 2^53, so that it stays exact as
/// a JSON number (about 9 PB of memory).
pub const MAX_AMOUNT: u64 = 1 << 53;
/// Labels and resources in one placement, each at most.
pub const MAX_ENTRIES: usize = 32;

/// A subtask's placement (see the [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub avoid: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefer: Vec<Preference>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Quantity>,
}

/// How a worker fits a placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Its labels or its resources' capacity rule it out.
    Never,
    /// It fits once attempts holding its resources end.
    NotNow,
    /// It fits now, with this preference score.
    Now(u64),
}

/// A soft wish: workers with all these labels score `weight` more.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preference {
    pub labels: BTreeMap<String, String>,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// An amount of a resource, in thousandths, as parsed from text or a number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(pub u64);

impl Quantity {
    /// Parses `1`, `0.5`, `500m`, `4Gi`, `2k`, ... (see the [module docs](self)).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
        let (number, suffix) = t.split_at(split);
        let factor: f64 = match suffix {
            "" => 1.0,
            "m" => 0.001,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "Ki" => 1024.0,
            "Mi" => 1024.0 * 1024.0,
            "Gi" => 1024.0 * 1024.0 * 1024.0,
            "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            other => return Err(format!("`{text}`: unknown suffix `{other}` (m, k, M, G, T, Ki, Mi, Gi, Ti)")),
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(format!("`{text}` is not an amount (a number, optionally with a suffix: 500m, 4Gi)"));
        }
        let value: f64 = number.parse().map_err(|_| format!("`{text}` is not an amount"))?;
        Self::from_f64(value * factor).map_err(|e| format!("`{text}`: {e}"))
    }

    /// `value` units (not thousandths): refused when negative, not finite or too large.
    pub fn from_f64(value: f64) -> Result<Self, String> {
        if !value.is_finite() {
            return Err("not a finite number".into());
        }
        if value < 0.0 {
            return Err("negative".into());
        }
        let milli = (value * 1000.0).round();
        if milli > MAX_AMOUNT as f64 {
            return Err(format!("larger than {} units", MAX_AMOUNT / 1000));
        }
        Ok(Self(milli as u64))
    }

    /// The amount as text that parses back to it (`1`, `0.5`, `4294967296`).
    pub fn to_text(self) -> String {
        if self.0.is_multiple_of(1000) { (self.0 / 1000).to_string() } else { format!("{}m", self.0) }
    }
}

impl Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_text())
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(f64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Self::from_f64(n).map_err(|e| serde::de::Error::custom(format!("{n}: {e}"))),
            Either::Text(t) => Self::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// Whether `name` may name a resource: `cpu`, `memory`, `gpu` or a custom name, all alike
/// (lowercase letters, digits, `-`, `_`, `.`, `/`; at most 63 bytes).
pub fn valid_resource_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_./".contains(&b))
}

/// Whether `name` and `value` may be a label (as a worker's or a placement's).
pub fn valid_label(name: &str, value: &str) -> bool {
    let ok = |s: &str, empty: bool| {
        (empty || !s.is_empty())
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
    };
    ok(name, false) && ok(value, true)
}

impl Placement {
    /// Every problem with this placement, as (field under `placement`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let labels = |field: &str, map: &BTreeMap<String, String>, out: &mut Vec<(String, String)>| {
            if map.len() > MAX_ENTRIES {
                out.push((field.to_owned(), format!("at most {MAX_ENTRIES} labels")));
            }
            for (k, v) in map {
                if !valid_label(k, v) {
                    out.push((
                        format!("{field}.{k}"),
                        format!("`{k}: {v}` is not a label (letters, digits, `-_./`, at most 63 bytes each)"),
                    ));
                }
            }
        };
        labels("labels", &self.labels, &mut out);
        labels("avoid", &self.avoid, &mut out);
        for (i, p) in self.prefer.iter().enumerate() {
            labels(&format!("prefer[{i}].labels"), &p.labels, &mut out);
            if p.labels.is_empty() {
                out.push((format!("prefer[{i}].labels"), "required (the labels preferred)".into()));
            }
            if p.weight == 0 {
                out.push((format!("prefer[{i}].weight"), "must be at least 1 (1 when left out)".into()));
            }
        }
        if self.resources.len() > MAX_ENTRIES {
            out.push(("resources".into(), format!("at most {MAX_ENTRIES} resources")));
        }
        for name in self.resources.keys() {
            if !valid_resource_name(name) {
                out.push((
                    format!("resources.{name}"),
                    format!(
                        "`{name}` is not a resource name (cpu, memory, gpu, or a custom name of lowercase letters, \
                         digits, `-_./`)"
                    ),
                ));
            }
        }
        for (k, v) in &self.labels {
            if self.avoid.get(k) == Some(v) {
                out.push((format!("avoid.{k}"), format!("`{k}: {v}` is both required and avoided")));
            }
        }
        out
    }

    /// True when nothing is asked.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.avoid.is_empty() && self.prefer.is_empty() && self.resources.is_empty()
    }

    /// Whether a worker with `labels` may ever take it (resources aside).
    pub fn labels_match<'a>(&self, labels: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.labels.iter().all(|(k, v)| labels(k) == Some(v.as_str()))
            && !self.avoid.iter().any(|(k, v)| labels(k) == Some(v.as_str()))
    }

    /// The preference score of a worker with `labels`.
    pub fn score<'a>(&self, labels: impl Fn(&str) -> Option<&'a str>) -> u64 {
        self.prefer
            .iter()
            .filter(|p| p.labels.iter().all(|(k, v)| labels(k) == Some(v.as_str())))
            .map(|p| u64::from(p.weight))
            .sum()
    }

    /// How a worker with `labels`, resource `capacity` and resources `used` fits it.
    pub fn fit<'a>(
        &self,
        labels: impl Fn(&str) -> Option<&'a str> + Copy,
        capacity: impl Fn(&str) -> u64,
        used: impl Fn(&str) -> u64,
    ) -> Fit {
        if !self.labels_match(labels) {
            return Fit::Never;
        }
        let mut now = true;
        for (name, q) in &self.resources {
            let cap = capacity(name);
            if q.0 > cap {
                return Fit::Never;
            }
            now &= used(name).saturating_add(q.0) <= cap;
        }
        if now { Fit::Now(self.score(labels)) } else { Fit::NotNow }
    }

    /// A short description for messages: `labels pool=gpu, resources gpu=1`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let join =
            |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        if !self.labels.is_empty() {
            parts.push(format!("labels {}", join(&self.labels)));
        }
        if !self.avoid.is_empty() {
            parts.push(format!("avoiding {}", join(&self.avoid)));
        }
        if !self.resources.is_empty() {
            let r = self.resources.iter().map(|(k, q)| format!("{k}={}", q.to_text())).collect::<Vec<_>>().join(",");
            parts.push(format!("resources {r}"));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_written_and_the_worst_are_refused() {
        assert_eq!(Quantity::parse("1"), Ok(Quantity(1000)));
        assert_eq!(Quantity::parse("0.5"), Ok(Quantity(500)));
        assert_eq!(Quantity::parse("500m"), Ok(Quantity(500)));
        assert_eq!(Quantity::parse("4Gi"), Ok(Quantity(4 * 1024 * 1024 * 1024 * 1000)));
        assert_eq!(Quantity::parse("2k"), Ok(Quantity(2_000_000)));
        for bad in ["", "-1", "NaN", "inf", "1e300", "1.2.3", "4Gb", "Gi", " m", "1 000", "99999999999999999999"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Quantity::from_f64(f64::NAN).is_err());
        assert!(Quantity::from_f64(-0.001).is_err());
        assert!(Quantity::from_f64(1e300).is_err());
        for q in [Quantity(1000), Quantity(500), Quantity(4_294_967_296_000)] {
            assert_eq!(Quantity::parse(&q.to_text()), Ok(q));
        }
    }

    #[test]
    fn a_placement_names_each_problem_and_matches_labels() {
        let p: Placement = serde_json::from_value(serde_json::json!({
            "labels": {"pool": "gpu"}, "avoid": {"pool": "gpu", "bad key!": "x"},
            "prefer": [{"labels": {}}], "resources": {"gpu": 1, "Memory": "4Gi"}
        }))
        .expect("parses");
        let fields: Vec<String> = p.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["avoid.bad key!", "prefer[0].labels", "resources.Memory", "avoid.pool"]);
        assert!(serde_json::from_value::<Placement>(serde_json::json!({"resources": {"gpu": -1}})).is_err());
        assert!(serde_json::from_value::<Placement>(serde_json::json!({"resources": {"gpu": "NaN"}})).is_err());
        assert!(serde_json::from_value::<Placement>(serde_json::json!({"lables": {}})).is_err());

        let p = Placement {
            labels: [("pool".into(), "gpu".into())].into(),
            avoid: [("region".into(), "us".into())].into(),
            prefer: vec![Preference { labels: [("zone".into(), "a".into())].into(), weight: 10 }],
            ..Placement::default()
        };
        let worker = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
        };
        assert!(p.labels_match(worker(&[("pool", "gpu"), ("region", "eu")])));
        assert!(!p.labels_match(worker(&[("pool", "gpu"), ("region", "us")])));
        assert!(!p.labels_match(worker(&[("pool", "cpu")])));
        assert_eq!(p.score(worker(&[("pool", "gpu"), ("zone", "a")])), 10);
        assert_eq!(p.score(worker(&[("pool", "gpu")])), 0);
        let gpu = Placement {
            resources: [("gpu".into(), Quantity(1000))].into(),
            ..Placement { labels: Default::default(), ..p.clone() }
        };
        let gpu_worker = worker(&[("pool", "gpu")]);
        assert_eq!(gpu.fit(gpu_worker, |_| 1000, |_| 0), Fit::Now(0));
        assert_eq!(gpu.fit(gpu_worker, |_| 1000, |_| 1000), Fit::NotNow, "its one gpu is held");
        assert_eq!(gpu.fit(gpu_worker, |_| 500, |_| 0), Fit::Never, "half a gpu never fits a whole one");
        assert_eq!(gpu.fit(worker(&[("region", "us")]), |_| 1000, |_| 0), Fit::Never, "avoided");
    }
}
