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

    /// The entry that says `more` problems were not listed after the first `listed`.
    pub fn more_entry(more: usize, listed: usize) -> SpecViolation {
        SpecViolation {
            field: MORE_FIELD.to_owned(),
            description: format!("{more}{MORE_SUFFIX} (the first {listed} are)"),
        }
    }
}
