//! Specs (and fork patches) as text: YAML 1.2, as JSON is, so that only `true` and `false` are
//! booleans. With YAML 1.1's rules `args: {text: y}` arrived as `true` and failed as
//! `args.text: required string`; `y`, `n`, `yes`, `no`, `on` and `off` are strings here.

use serde::de::DeserializeOwned;

/// Reads `text` (YAML or JSON) with YAML 1.2's booleans.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, serde_saphyr::options! { strict_booleans: true })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    #[test]
    fn only_true_and_false_are_booleans() {
        let v: Value =
            super::from_str("{a: y, b: n, c: on, d: off, e: yes, f: no, g: true, h: false, i: 'y'}").expect("yaml");
        assert_eq!(
            v,
            json!({"a": "y", "b": "n", "c": "on", "d": "off", "e": "yes", "f": "no", "g": true, "h": false, "i": "y"})
        );
    }
}
