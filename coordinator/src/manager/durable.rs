//! Dispatch waits for durability: a subtask starts only once the records it builds on are in
//! the store (its dependencies' results, the spawn record that created it). Otherwise a leader
//! that dies before those writes land leaves a successor that does not know the dependency
//! ended, while a worker already runs the dependent with its output.

use std::collections::{HashMap, VecDeque};

use swarm_core::SubtaskIx;
use swarm_core::dag::Node;

/// One run's records written but not yet known durable, by the outbox mark of their write.
#[derive(Default)]
pub(super) struct Unsettled {
    marks: HashMap<SubtaskIx, u64>,
    /// The same, in mark order (marks grow), to drop settled ones cheaply.
    order: VecDeque<(u64, SubtaskIx)>,
}

impl Unsettled {
    /// `subtask`'s record (or spawn record) was handed to the outbox as write number `mark`.
    pub(super) fn written(&mut self, subtask: SubtaskIx, mark: u64) {
        self.marks.insert(subtask, mark);
        self.order.push_back((mark, subtask));
    }

    /// Forgets the writes up to `settled` (see `Outbox::settled`).
    pub(super) fn settle(&mut self, settled: u64) {
        while let Some(&(mark, subtask)) = self.order.front() {
            if mark > settled {
                break;
            }
            self.order.pop_front();
            if self.marks.get(&subtask) == Some(&mark) {
                self.marks.remove(&subtask);
            }
        }
    }

    /// Whether `subtask`'s latest record is not yet durable, the outbox having settled up to
    /// `settled`.
    pub(super) fn pending(&self, subtask: SubtaskIx, settled: u64) -> bool {
        self.marks.get(&subtask).is_some_and(|&mark| mark > settled)
    }

    /// Whether `node` builds on a record not yet durable.
    pub(super) fn blocks(&self, node: &Node) -> bool {
        !self.marks.is_empty() && node.deps.iter().chain(node.parent.iter()).any(|d| self.marks.contains_key(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_core::{Dag, Limits, RunSpec, SubtaskSpec};

    #[test]
    fn a_dependent_waits_until_its_dependencys_write_settles() {
        let spec = RunSpec::new(
            "t",
            vec![
                SubtaskSpec::tool("a", "echo", serde_json::json!({})),
                SubtaskSpec::tool("b", "echo", serde_json::json!({})).after(["a"]),
                SubtaskSpec::tool("c", "echo", serde_json::json!({})),
            ],
        );
        let dag = Dag::build(&spec, &Limits::default()).expect("valid");
        let (a, b, c) = (SubtaskIx(0), SubtaskIx(1), SubtaskIx(2));
        let mut u = Unsettled::default();
        u.written(a, 5);
        assert!(u.blocks(dag.node(b)));
        assert!(!u.blocks(dag.node(c)), "an independent subtask does not wait");
        u.settle(4);
        assert!(u.blocks(dag.node(b)));
        u.settle(5);
        assert!(!u.blocks(dag.node(b)));
        // A rewrite of the record waits for the later write.
        u.written(a, 7);
        u.written(a, 9);
        u.settle(8);
        assert!(u.blocks(dag.node(b)));
    }
}
