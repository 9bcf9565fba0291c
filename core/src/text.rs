//! Small helpers for messages people read.

/// The candidate closest to `word`, when one is close enough to be a likely typo
/// (Jaro-Winkler similarity of at least 0.8, as clap suggests subcommands).
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_name_is_suggested_and_a_far_one_is_not() {
        assert_eq!(did_you_mean("ech0", ["sleep", "echo", "http_get"]), Some("echo"));
        assert_eq!(did_you_mean("bb", ["a", "b", "c"]), Some("b"));
        assert_eq!(did_you_mean("zzzz", ["sleep", "echo"]), None);
    }
}
