//! The ready queue: critical-path-first.
//!
//! When ready subtasks outnumber free slots, those with the longest remaining path start first.
//! A subtask's priority is its *bottom level*: its estimated duration plus the longest chain of
//! estimated durations after it. Estimates are the median measured duration of finished calls of
//! the same tool in the run (1 before any finished; agents count their steps so far); they are
//! refreshed as calls finish (at 1, 2, 4, 8 … finished calls, then every 256), so early guesses
//! give way to measurements. Ties keep submission order (FIFO).

use crate::ids::SubtaskIx;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::dag::{Dag, Work};

#[derive(Default, Debug)]
pub(super) struct ReadyQueue {
    heap: BinaryHeap<(u64, Reverse<u64>, SubtaskIx)>,
    seq: u64,
    priority: Vec<u64>,
}

impl ReadyQueue {
    pub(super) fn push_back(&mut self, i: SubtaskIx) {
        self.seq += 1;
        let p = self.priority.get(i.index()).copied().unwrap_or(1);
        self.heap.push((p, Reverse(self.seq), i));
    }

    /// Back at the head among equals (a subtask that could not be placed).
    pub(super) fn push_front(&mut self, i: SubtaskIx) {
        let p = self.priority.get(i.index()).copied().unwrap_or(1);
        self.heap.push((p, Reverse(0), i));
    }

    pub(super) fn bottom_level(&self, i: SubtaskIx) -> u64 {
        self.priority.get(i.index()).copied().unwrap_or(1)
    }

    pub(super) fn pop_front(&mut self) -> Option<SubtaskIx> {
        self.heap.pop().map(|(_, _, i)| i)
    }

    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.heap.clear();
    }

    /// New priorities; queued entries are re-ranked.
    pub(super) fn reprioritize(&mut self, priority: Vec<u64>) {
        self.priority = priority;
        let entries: Vec<(u64, Reverse<u64>, SubtaskIx)> = self.heap.drain().collect();
        for (_, seq, i) in entries {
            let p = self.priority.get(i.index()).copied().unwrap_or(1);
            self.heap.push((p, seq, i));
        }
    }
}

/// Bottom levels of every subtask, with `estimate(i)` as its own weight.
pub(super) fn bottom_levels(dag: &Dag, estimate: impl Fn(SubtaskIx) -> u64) -> Vec<u64> {
    let mut bottom = vec![0u64; dag.len()];
    for &i in dag.topo_order().iter().rev() {
        let after = dag.node(i).dependents.iter().map(|&d| bottom[d.index()]).max().unwrap_or(0);
        bottom[i.index()] = estimate(i).max(1) + after;
    }
    bottom
}

/// True when `n` finished calls (of a run of `len` subtasks) warrant refreshing the
/// estimates: at each power of two, then every 256 calls or every eighth of the run, whichever
/// is rarer (a refresh walks the whole DAG: this keeps it O(1) amortised per call).
pub(super) fn refresh_due(n: u32, len: usize) -> bool {
    n.is_power_of_two() || n.is_multiple_of((len as u32 / 8).max(256))
}

/// Whether a node is a plain tool call (only those have per-tool duration estimates).
pub(super) fn is_tool(dag: &Dag, i: SubtaskIx) -> bool {
    matches!(dag.node(i).work, Work::Tool)
}
