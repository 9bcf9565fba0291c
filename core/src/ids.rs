//! Typed identifiers. Every id has its own type, so a run id can never be passed where a
//! subtask id is expected:
//!
//! ```compile_fail
//! use swarm_core::{RunId, SubtaskId};
//! fn takes_subtask(_: &SubtaskId) {}
//! takes_subtask(&RunId::from("r-1"));
//! ```

use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// Consumes the id, returning its text.
            pub fn into_string(self) -> String {
                self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

macro_rules! number_id {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

string_id!(
    /// A run: one submitted DAG.
    RunId
);
string_id!(
    /// A subtask of a run, unique within the run (chosen by the user).
    SubtaskId
);
string_id!(
    /// A worker node.
    WorkerId
);
number_id!(
    /// The attempt number of a subtask, starting at 1.
    AttemptNo(u32)
);
number_id!(
    /// A fencing token: unique per attempt and only ever growing. Worker reports echo it, and
    /// reports carrying a fence that is no longer current are rejected.
    Fence(u64)
);
number_id!(
    /// The sequence number of an event within one run's event stream, starting at 1.
    Seq(u64)
);

number_id!(
    /// A subtask's index in its run's DAG and in the engine's slots: given at validation in spec
    /// order; subagents take the next ones as they are spawned.
    SubtaskIx(u32)
);
number_id!(
    /// A run's key inside one coordinator's term (its run table), cheaper than the [`RunId`].
    RunKey(u32)
);
number_id!(
    /// A worker's `Connect` stream, as numbered by the coordinator that accepted it.
    ConnId(u64)
);

impl SubtaskIx {
    /// As an index into the run's arrays.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl RunId {
    /// A new, time-ordered run id such as `r-0193f1c2a4b7-5f3a9c`.
    pub fn generate(now_unix_ms: u64) -> Self {
        Self(format!("r-{now_unix_ms:012x}-{:06x}", fastrand::u32(..0x100_0000)))
    }

    /// Whether `text` has the shape [`RunId::generate`] gives (`r-` + 12 hex digits + `-` + 6
    /// hex digits; more digits once the clock outgrows 12).
    pub fn is_well_formed(text: &str) -> bool {
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        text.strip_prefix("r-")
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(time, random)| time.len() >= 12 && hex(time) && random.len() == 6 && hex(random))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_run_ids_are_well_formed_and_other_text_is_not() {
        assert!(RunId::is_well_formed(RunId::generate(1_000).as_str()));
        for bad in ["", "r-", "garbage", "r-zzzzzzzzzzzz-000000", "r-000000000001-00000", "x-000000000001-000000"] {
            assert!(!RunId::is_well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn generated_run_ids_sort_by_time() {
        let a = RunId::generate(1_000);
        let b = RunId::generate(2_000);
        assert!(a < b, "{a} should sort before {b}");
    }
}
