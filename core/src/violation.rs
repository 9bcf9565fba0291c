//! What is wrong with a run spec: a leaf module (it imports nothing of the crate), so that
//! validation, conversion and the API's error mapping can all name it.

/// One problem with a spec: the field path and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecViolation {
    /// The field path, e.g. `subtasks[3].depends_on[1]`.
    pub field: String,
    /// What is wrong, in words.
    pub description: String,
}

/// All violations found in one spec (never empty when returned as an error). The last may
/// count the problems not listed ([`SpecViolations::more`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid run spec: {}", summary(.0))]
pub struct SpecViolations(pub Vec<SpecViolation>);

/// The field of the entry that counts problems not listed one by one.
pub const MORE_FIELD: &str = "spec";
const MORE_SUFFIX: &str = " more problems not listed";

/// The most violations spelled out in the error's message (all are in its details).
const IN_MESSAGE: usize = 3;

fn summary(v: &[SpecViolation]) -> String {
    let (listed, more) = split(v);
    let mut text = listed
        .iter()
        .take(IN_MESSAGE)
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    let rest = listed.len().saturating_sub(IN_MESSAGE) + more;
    if rest > 0 {
        text.push_str(&format!("; and {rest} more"));
    }
    text
}

fn split(v: &[SpecViolation]) -> (&[SpecViolation], usize) {
    match v.split_last() {
        Some((last, listed)) if last.field == MORE_FIELD && last.description.contains(MORE_SUFFIX) => {
            let n = last.description.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            (listed, n)
        }
        _ => (v, 0),
    }
}

impl SpecViolations {
    /// The violations listed one by one, and how many more were found but not listed.
    pub fn more(&self) -> (&[SpecViolation], usize) {
        split(&self.0)
    }

    /// The problems two checks of one spec found, as one list: the first check's, then the
    /// second's on fields the first did not name (the first replaced what it refused with a
    /// stand-in, which the second must not be blamed for); at most `cap` listed, the rest
    /// counted.
    pub fn merge(first: Vec<SpecViolation>, second: &SpecViolations, cap: usize) -> SpecViolations {
        let (listed, mut more) = second.more();
        let named: std::collections::HashSet<&str> = first.iter().map(|v| v.field.as_str()).collect();
        let rest: Vec<SpecViolation> = listed.iter().filter(|v| !named.contains(v.field.as_str())).cloned().collect();
        let mut out = Vec::with_capacity(cap.min(first.len() + rest.len()) + 1);
        for v in first.into_iter().chain(rest) {
            if out.len() < cap {
                out.push(v);
            } else {
                more += 1;
            }
        }
        if more > 0 {
            out.push(Self::more_entry(more, out.len()));
        }
        SpecViolations(out)
    }

    /// The entry that says `more` problems were not listed after the first `listed`.
    pub fn more_entry(more: usize, listed: usize) -> SpecViolation {
        SpecViolation {
            field: MORE_FIELD.to_owned(),
            description: format!("{more}{MORE_SUFFIX} (the first {listed} are)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(field: &str) -> SpecViolation {
        SpecViolation { field: field.into(), description: "bad".into() }
    }

    #[test]
    fn merge_keeps_the_first_checks_fields_and_counts_past_the_cap() {
        let second = SpecViolations(vec![v("a"), v("c"), SpecViolations::more_entry(5, 2)]);
        let merged = SpecViolations::merge(vec![v("a"), v("b")], &second, 100);
        let fields: Vec<_> = merged.more().0.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["a", "b", "c"], "the stand-in's `a` is not blamed twice");
        assert_eq!(merged.more().1, 5, "the second check's uncounted problems stay counted");

        let merged = SpecViolations::merge((0..10).map(|i| v(&format!("f{i}"))).collect(), &second, 4);
        assert_eq!(merged.more().0.len(), 4);
        assert_eq!(merged.more().1, 6 + 2 + 5, "six of the first, `a` and `c`, and the five counted");
    }
}
