//! Artifacts: files a subtask hands on (`outputs: {artifacts: [report.md, "data/*.csv"]}`).
//!
//! Paths are relative to the producing subtask's workspace, `/`-separated, with no empty, `.`
//! or `..` component: the same text names the file in the payload store and under
//! `inputs/<subtask>/` in each dependent's workspace, and it can lead nowhere else. Patterns
//! add `*` (any characters within one component), `?` (one character) and a `**` component
//! (any number of components).

use serde::{Deserialize, Serialize};

/// Patterns one subtask may declare.
pub const MAX_PATTERNS: usize = 100;
/// The longest pattern.
pub const MAX_PATTERN_BYTES: usize = 256;
/// The longest artifact path.
pub const MAX_PATH_BYTES: usize = 1024;
/// Files one subtask may hand on.
pub const MAX_FILES: usize = 10_000;
/// The directory of a workspace where dependencies' artifacts are placed (never collected).
pub const INPUTS_DIR: &str = "inputs";

/// A file a subtask handed on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Relative to the producing workspace.
    pub path: String,
    pub size: u64,
    /// SHA-256 of the contents, lowercase hex.
    pub sha256: String,
    /// Where it is in the payload store.
    pub key: String,
}

/// What a subtask hands on once it succeeds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// Paths or patterns of workspace files (see the module docs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
}

impl Outputs {
    pub fn is_empty(&self) -> bool {
        self.artifacts.is_empty()
    }
}

/// Whether `path` is a well-formed artifact path (relative, no `.`/`..`/empty components).
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("longer than {MAX_PATH_BYTES} bytes"));
    }
    if path.starts_with('/') {
        return Err(format!("`{path}` is absolute: name files relative to the workspace"));
    }
    if path.contains(['\\', '\0']) || path.chars().any(char::is_control) {
        return Err(format!("`{}` holds a backslash or a control character", path.escape_debug()));
    }
    for part in path.split('/') {
        match part {
            "" => return Err(format!("`{path}` has an empty component")),
            "." | ".." => return Err(format!("`{path}` has a `{part}` component: it must stay in the workspace")),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `pattern` is a well-formed artifact pattern.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!("longer than {MAX_PATTERN_BYTES} bytes"));
    }
    check_path(pattern)?;
    if pattern.split('/').next() == Some(INPUTS_DIR) {
        return Err(format!("`{pattern}`: `{INPUTS_DIR}/` holds the dependencies' artifacts, which are not handed on"));
    }
    if let Some(part) = pattern.split('/').find(|p| p.contains("**") && *p != "**") {
        return Err(format!("`{pattern}`: `**` must be a whole component, not `{part}`"));
    }
    Ok(())
}

/// Whether `pattern` has glob characters (a plain path must match a file).
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// Whether `path` matches `pattern` (both `/`-separated).
pub fn matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    match_parts(&pattern, &path)
}

fn match_parts(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| match_parts(rest, &path[skip..])),
        Some((first, rest)) => {
            path.split_first().is_some_and(|(p, path_rest)| match_component(first, p) && match_parts(rest, path_rest))
        }
    }
}

/// `*` and `?` within one component.
fn match_component(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_workspace_are_refused() {
        for bad in ["", "/etc/passwd", "../../x", "a/../b", "a//b", "./a", "a/.", "a\\b", "a\0b", "a/\n"] {
            assert!(check_path(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["report.md", "data/a.csv", "a.b/c..d", "...x"] {
            assert_eq!(check_path(good), Ok(()), "{good:?}");
        }
        assert!(check_pattern("inputs/a/x").is_err());
        assert!(check_pattern("a**/b").is_err());
        assert!(check_pattern(&"a".repeat(MAX_PATTERN_BYTES + 1)).is_err());
        assert_eq!(check_pattern("out/**/*.csv"), Ok(()));
    }

    #[test]
    fn globs_match_within_and_across_components() {
        let cases = [
            ("report.md", "report.md", true),
            ("report.md", "x/report.md", false),
            ("*.csv", "a.csv", true),
            ("*.csv", "d/a.csv", false),
            ("data/*.csv", "data/a.csv", true),
            ("data/*.csv", "data/a.csvx", false),
            ("data/?.csv", "data/ab.csv", false),
            ("data/?.csv", "data/a.csv", true),
            ("**", "a/b/c", true),
            ("out/**", "out/a/b", true),
            ("out/**/*.txt", "out/x.txt", true),
            ("out/**/*.txt", "out/a/b/x.txt", true),
            ("out/**/*.txt", "other/x.txt", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*", "", true),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(matches(pattern, path), want, "{pattern} vs {path}");
        }
    }
}
