//! Placement: which worker runs an attempt. A pure function over a snapshot of the registry.
//!
//! Contract: the chosen worker offers the tool and has a free slot; among those, the one with
//! the most free slots wins (ties: the lowest index), which spreads load evenly and keeps a
//! busy worker from becoming a hot spot.

/// What placement needs to know of a worker.
pub trait Candidate {
    /// True when the worker can take attempts now.
    fn alive(&self) -> bool;
    /// Slots not holding an attempt.
    fn free_slots(&self) -> u32;
    /// True when the worker offers `tool`.
    fn offers(&self, tool: &str) -> bool;
}

/// Why nothing was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoPlacement {
    /// Workers offer the tool, but none has a free slot now.
    Busy,
    /// No connected worker offers the tool.
    NoWorkerOffers,
}

/// Picks a worker for a call of `tool`. See the module docs.
pub fn place<C: Candidate>(tool: &str, workers: &[C]) -> Result<usize, NoPlacement> {
    place_except(tool, workers, None)
}

/// Like [`place`], never choosing worker `except` (a backup attempt goes elsewhere).
pub fn place_except<C: Candidate>(tool: &str, workers: &[C], except: Option<usize>) -> Result<usize, NoPlacement> {
    place_avoiding(tool, workers, except.as_slice())
}

/// Like [`place`], never choosing a worker in `avoid`.
pub fn place_avoiding<C: Candidate>(tool: &str, workers: &[C], avoid: &[usize]) -> Result<usize, NoPlacement> {
    let mut best: Option<(usize, u32)> = None;
    let mut offered = false;
    for (i, w) in workers.iter().enumerate() {
        if !w.alive() || !w.offers(tool) || avoid.contains(&i) {
            continue;
        }
        offered = true;
        let free = w.free_slots();
        if free > 0 && best.is_none_or(|(_, f)| free > f) {
            best = Some((i, free));
        }
    }
    match best {
        Some((i, _)) => Ok(i),
        None if offered => Err(NoPlacement::Busy),
        None => Err(NoPlacement::NoWorkerOffers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct W(bool, u32, &'static [&'static str]);
    impl Candidate for W {
        fn alive(&self) -> bool {
            self.0
        }
        fn free_slots(&self) -> u32 {
            self.1
        }
        fn offers(&self, tool: &str) -> bool {
            self.2.contains(&tool)
        }
    }

    #[test]
    fn most_free_worker_offering_the_tool_wins() {
        let ws = [W(true, 9, &["echo"]), W(true, 3, &["sleep"]), W(true, 5, &["sleep"]), W(false, 50, &["sleep"])];
        assert_eq!(place("sleep", &ws), Ok(2));
        assert_eq!(place("echo", &ws), Ok(0));
        assert_eq!(place("http_get", &ws), Err(NoPlacement::NoWorkerOffers));
        let busy = [W(true, 0, &["sleep"])];
        assert_eq!(place("sleep", &busy), Err(NoPlacement::Busy));
        assert_eq!(place_except("sleep", &ws, Some(2)), Ok(1), "a backup avoids the original's worker");
        assert_eq!(place_except("echo", &ws, Some(0)), Err(NoPlacement::NoWorkerOffers));
    }
}
