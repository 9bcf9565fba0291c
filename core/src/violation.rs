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

/// All violations found in one spec (never empty when returned as an error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid run spec: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
pub struct SpecViolations(pub Vec<SpecViolation>);
