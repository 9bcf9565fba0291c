//! Placement: which worker runs an attempt. A pure function over a snapshot of the registry.
//!
//! Contract: the chosen worker offers the tool, has a free slot and fits the subtask's
//! placement (its labels, and resources free now: [`swarm_core::placement`]); among those, the
//! one with the highest preference score, then the most free slots, wins (ties: the lowest
//! index), which spreads load evenly and keeps a busy worker from becoming a hot spot. An
//! agent's later attempt prefers the worker of its last one (its workspace, its warm MCP
//! sessions) above all of that, when it fits and has a free slot.

use swarm_core::placement::{Fit, Placement};

/// What placement needs to know of a worker.
pub trait Candidate {
    /// True when the worker can take attempts now.
    fn alive(&self) -> bool;
    /// Slots not holding an attempt.
    fn free_slots(&self) -> u32;
    /// True when the worker offers `tool`.
    fn offers(&self, tool: &str) -> bool;
    /// How the worker fits `placement` (labels; resources free now).
    fn fit(&self, placement: &Placement) -> Fit;
}

/// Why nothing was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoPlacement {
    /// Workers offer the tool and fit, but none has a free slot now.
    Busy,
    /// Workers offer the tool and have its labels, and some have a free slot, but not the
    /// resources it asks for: they are held by other attempts.
    Held,
    /// No connected worker offers the tool.
    NoWorkerOffers,
    /// Workers offer the tool, but none has the labels or the resources' capacity asked for.
    NoWorkerMatches,
}

/// Picks a worker for a call of `tool` placed as `placement`. See the module docs.
pub fn place<C: Candidate>(tool: &str, placement: Option<&Placement>, workers: &[C]) -> Result<usize, NoPlacement> {
    place_avoiding(tool, placement, workers, &[])
}

/// Like [`place`], never choosing worker `except` (a backup attempt goes elsewhere).
pub fn place_except<C: Candidate>(
    tool: &str,
    placement: Option<&Placement>,
    workers: &[C],
    except: Option<usize>,
) -> Result<usize, NoPlacement> {
    place_avoiding(tool, placement, workers, except.as_slice())
}

/// Like [`place`], never choosing a worker in `avoid`.
pub fn place_avoiding<C: Candidate>(
    tool: &str,
    placement: Option<&Placement>,
    workers: &[C],
    avoid: &[usize],
) -> Result<usize, NoPlacement> {
    place_preferring(tool, placement, workers, avoid, None)
}

/// Like [`place_avoiding`], choosing worker `prefer` whenever it could be chosen at all.
pub fn place_preferring<C: Candidate>(
    tool: &str,
    placement: Option<&Placement>,
    workers: &[C],
    avoid: &[usize],
    prefer: Option<usize>,
) -> Result<usize, NoPlacement> {
    if let Some(p) = prefer.filter(|p| !avoid.contains(p))
        && let Some(w) = workers.get(p)
        && w.alive()
        && w.offers(tool)
        && w.free_slots() > 0
        && placement.is_none_or(|pl| matches!(w.fit(pl), Fit::Now(_)))
    {
        return Ok(p);
    }
    let mut best: Option<(usize, u64, u32)> = None;
    let (mut offered, mut fits, mut held) = (false, false, false);
    for (i, w) in workers.iter().enumerate() {
        if !w.alive() || !w.offers(tool) || avoid.contains(&i) {
            continue;
        }
        offered = true;
        let score = match placement.map(|p| w.fit(p)) {
            None => Some(0),
            Some(Fit::Never) => continue,
            Some(Fit::NotNow) => None,
            Some(Fit::Now(score)) => Some(score),
        };
        fits = true;
        let free = w.free_slots();
        held |= score.is_none() && free > 0;
        if let Some(score) = score
            && free > 0
            && best.is_none_or(|(_, s, f)| (score, free) > (s, f))
        {
            best = Some((i, score, free));
        }
    }
    match best {
        Some((i, _, _)) => Ok(i),
        None if held => Err(NoPlacement::Held),
        None if fits => Err(NoPlacement::Busy),
        None if offered => Err(NoPlacement::NoWorkerMatches),
        None => Err(NoPlacement::NoWorkerOffers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_core::placement::Quantity;

    /// alive, free slots, tools, labels, gpu capacity, gpu used (thousandths).
    struct W(bool, u32, &'static [&'static str], &'static [(&'static str, &'static str)], u64, u64);
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
        fn fit(&self, p: &Placement) -> Fit {
            let labels = |k: &str| self.3.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
            p.fit(labels, |r| if r == "gpu" { self.4 } else { 0 }, |r| if r == "gpu" { self.5 } else { 0 })
        }
    }

    #[test]
    fn most_free_worker_offering_the_tool_wins() {
        let ws = [
            W(true, 9, &["echo"], &[], 0, 0),
            W(true, 3, &["sleep"], &[], 0, 0),
            W(true, 5, &["sleep"], &[], 0, 0),
            W(false, 50, &["sleep"], &[], 0, 0),
        ];
        assert_eq!(place("sleep", None, &ws), Ok(2));
        assert_eq!(place("echo", None, &ws), Ok(0));
        assert_eq!(place("http_get", None, &ws), Err(NoPlacement::NoWorkerOffers));
        let busy = [W(true, 0, &["sleep"], &[], 0, 0)];
        assert_eq!(place("sleep", None, &busy), Err(NoPlacement::Busy));
        assert_eq!(place_except("sleep", None, &ws, Some(2)), Ok(1), "a backup avoids the original's worker");
        assert_eq!(place_except("echo", None, &ws, Some(0)), Err(NoPlacement::NoWorkerOffers));
    }

    #[test]
    fn an_agent_goes_back_to_its_worker_when_it_can() {
        let ws = [W(true, 9, &["m"], &[("pool", "a")], 0, 0), W(true, 1, &["m"], &[("pool", "b")], 0, 0)];
        assert_eq!(place_preferring("m", None, &ws, &[], Some(1)), Ok(1), "fewer free slots, but its workspace");
        let full = [W(true, 9, &["m"], &[], 0, 0), W(true, 0, &["m"], &[], 0, 0)];
        assert_eq!(place_preferring("m", None, &full, &[], Some(1)), Ok(0), "soft: no free slot there");
        let gone = [W(true, 9, &["m"], &[], 0, 0), W(false, 5, &["m"], &[], 0, 0)];
        assert_eq!(place_preferring("m", None, &gone, &[], Some(1)), Ok(0), "its worker is gone");
        let pool_a: Placement =
            serde_json::from_value(serde_json::json!({"labels": {"pool": "a"}})).expect("placement");
        assert_eq!(place_preferring("m", Some(&pool_a), &ws, &[], Some(1)), Ok(0), "its placement comes first");
        assert_eq!(place_preferring("m", None, &ws, &[1], Some(1)), Ok(0), "it failed there");
        assert_eq!(place_preferring("m", None, &ws, &[], Some(7)), Ok(0), "an index out of range is ignored");
    }

    #[test]
    fn labels_and_resources_decide_first_then_preferences_then_free_slots() {
        let ws = [
            W(true, 60, &["sleep"], &[("pool", "cpu")], 0, 0),
            W(true, 4, &["sleep"], &[("pool", "gpu"), ("zone", "a")], 1000, 0),
            W(true, 8, &["sleep"], &[("pool", "gpu"), ("zone", "b")], 1000, 1000),
        ];
        let gpu: Placement = serde_json::from_value(serde_json::json!({"resources": {"gpu": 1}})).expect("placement");
        assert_eq!(place("sleep", Some(&gpu), &ws), Ok(1), "the only gpu free");
        let held = [W(true, 4, &["sleep"], &[("pool", "gpu")], 1000, 1000)];
        assert_eq!(place("sleep", Some(&gpu), &held), Err(NoPlacement::Held), "free slots, but its gpu is held");
        let full = [W(true, 0, &["sleep"], &[("pool", "gpu")], 1000, 0)];
        assert_eq!(place("sleep", Some(&gpu), &full), Err(NoPlacement::Busy), "its gpu is free, its slots are not");
        let two = Placement { resources: [("gpu".into(), Quantity(2000))].into(), ..Placement::default() };
        assert_eq!(place("sleep", Some(&two), &ws), Err(NoPlacement::NoWorkerMatches), "no worker has two");
        let pool: Placement =
            serde_json::from_value(serde_json::json!({"labels": {"pool": "gpu"}})).expect("placement");
        assert_eq!(place("sleep", Some(&pool), &ws), Ok(2), "the most free of the pool");
        let prefer: Placement = serde_json::from_value(
            serde_json::json!({"labels": {"pool": "gpu"}, "prefer": [{"labels": {"zone": "a"}, "weight": 5}]}),
        )
        .expect("placement");
        assert_eq!(place("sleep", Some(&prefer), &ws), Ok(1), "preferred over more free slots");
        let nowhere: Placement =
            serde_json::from_value(serde_json::json!({"labels": {"pool": "tpu"}})).expect("placement");
        assert_eq!(place("sleep", Some(&nowhere), &ws), Err(NoPlacement::NoWorkerMatches));
        let avoid: Placement =
            serde_json::from_value(serde_json::json!({"avoid": {"pool": "gpu"}})).expect("placement");
        assert_eq!(place("sleep", Some(&avoid), &ws), Ok(0));
        assert_eq!(place_except("sleep", Some(&avoid), &ws, Some(0)), Err(NoPlacement::NoWorkerMatches));
    }
}
