//! Twins (Bano et al., OPODIS 2021): byzantine behaviour without byzantine
//! code. Node `node` runs as two correct copies with one key, each with its
//! own disk and contract; round by round, every other node talks to one
//! copy only (`split[k]` lists who talks to the second copy in step k, each
//! step `step_rounds` rounds long). Double votes, forgotten state and
//! equivocation follow from the split alone. After the last step every node
//! talks to the first copy and the second is cut off.
//!
//! With `search_steps`, `fuzz` enumerates the schedules instead: seed `i`
//! is the `i`-th split sequence over that many steps (every assignment of
//! the other nodes to the copies per step), so `--seeds 0..M` covers the
//! whole space of M schedules, and seeds past it sample it again under
//! other network draws.

use crate::scenario::{Role, Scenario, ScenarioError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Twins {
    /// The node that runs twice; its role must be `twin`.
    pub node: usize,
    #[serde(default = "one")]
    pub step_rounds: u64,
    /// Per step: the nodes that talk to the second copy.
    #[serde(default)]
    pub split: Vec<Vec<usize>>,
    /// Enumerate splits over this many steps (replaces `split` when fuzzed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_steps: Option<u32>,
    /// Steps start after this many rounds (a chain to disagree about).
    #[serde(default)]
    pub from_round: u64,
    /// The split also partitions the other nodes (Twins §5): in each step
    /// the nodes with the second copy hear only each other and it, the
    /// rest only each other and the first copy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partition: bool,
}

fn one() -> u64 {
    1
}

impl Twins {
    pub fn validate(&self, s: &Scenario) -> Result<(), ScenarioError> {
        let bad = |m: String| Err(ScenarioError::Invalid(m));
        if self.node >= s.nodes || s.role(self.node) != Role::Twin {
            return bad(format!(
                "[twins] node {} must be a node with role \"twin\"",
                self.node
            ));
        }
        if (0..s.nodes).any(|i| i != self.node && s.role(i) == Role::Twin) {
            return bad("only the [twins] node may have role \"twin\"".into());
        }
        if self.step_rounds == 0 {
            return bad("[twins] step_rounds must be positive".into());
        }
        if let Some(&i) = self.split.iter().flatten().find(|&&i| i >= s.nodes) {
            return bad(format!(
                "[twins] split names node {i}, beyond the {} nodes",
                s.nodes
            ));
        }
        if self.search_steps.is_some_and(|k| k > 8) {
            return bad("[twins] search_steps is at most 8".into());
        }
        Ok(())
    }

    /// Schedules `search_steps` enumerates for `nodes` nodes.
    pub fn space(&self, nodes: usize) -> u64 {
        let per_step = 1u64 << (nodes - 1).min(16);
        per_step.saturating_pow(self.search_steps.unwrap_or(0))
    }

    /// The `index`-th schedule (mixed radix over the steps).
    pub fn enumerated(&self, nodes: usize, index: u64) -> Vec<Vec<usize>> {
        let others: Vec<usize> = (0..nodes).filter(|&i| i != self.node).collect();
        let per_step = 1u64 << others.len().min(16);
        let mut rest = index % self.space(nodes).max(1);
        (0..self.search_steps.unwrap_or(0))
            .map(|_| {
                let mask = rest % per_step;
                rest /= per_step;
                (others.iter().enumerate())
                    .filter(|(b, _)| mask >> b & 1 == 1)
                    .map(|(_, &i)| i)
                    .collect()
            })
            .collect()
    }

    /// Whether `node` talks to the second copy in round `round`.
    pub fn with_second(&self, node: usize, round: u64) -> bool {
        let Some(r) = round.checked_sub(self.from_round) else {
            return false;
        };
        self.split
            .get((r / self.step_rounds) as usize)
            .is_some_and(|g| g.contains(&node))
    }

    /// Which copy of the twin a node that means `to` reaches at `now`.
    pub fn redirect(
        &self,
        second: usize,
        roundtime: u64,
        from: usize,
        to: usize,
        now: u64,
    ) -> usize {
        if to == self.node && self.with_second(from, now / roundtime) {
            second
        } else {
            to
        }
    }

    /// Whether the split cuts a frame between the machines `from` and `to`.
    pub fn cut(&self, second: usize, roundtime: u64, from: usize, to: usize, now: u64) -> bool {
        let round = now / roundtime;
        let copy = |n: usize| n == self.node || n == second;
        let apart = self.partition
            && !copy(from)
            && !copy(to)
            && self.with_second(from, round) != self.with_second(to, round);
        apart
            || (from == self.node && self.with_second(to, round))
            || (from == second && (!self.second_alive(round) || !self.with_second(to, round)))
    }

    /// Whether the second copy is still in the game in `round`.
    pub fn second_alive(&self, round: u64) -> bool {
        round < self.from_round + self.split.len() as u64 * self.step_rounds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a frame from `from` to `to` goes at `now` (ms), and whether
    /// the split cuts it: a node's frames for the twin's key reach the copy
    /// it is with this round, and each copy reaches only the nodes with it.
    fn route(
        t: &Twins,
        second: usize,
        roundtime: u64,
        from: usize,
        to: usize,
        now: u64,
    ) -> (usize, bool) {
        let to = t.redirect(second, roundtime, from, to, now);
        (to, t.cut(second, roundtime, from, to, now))
    }

    #[test]
    fn enumeration_covers_every_schedule_once() {
        let t = Twins {
            node: 3,
            step_rounds: 1,
            split: vec![],
            search_steps: Some(2),
            from_round: 0,
            partition: false,
        };
        assert_eq!(t.space(4), 64);
        let all: std::collections::BTreeSet<_> = (0..64).map(|i| t.enumerated(4, i)).collect();
        assert_eq!(all.len(), 64);
        assert!(all.iter().flatten().flatten().all(|&i| i < 3));
        assert_eq!(t.enumerated(4, 64), t.enumerated(4, 0));
    }

    #[test]
    fn steps_follow_the_split_then_end() {
        let t = Twins {
            node: 3,
            step_rounds: 2,
            split: vec![vec![0], vec![1, 2]],
            search_steps: None,
            from_round: 5,
            partition: false,
        };
        assert!(!t.with_second(0, 4));
        assert!(t.with_second(0, 5) && t.with_second(0, 6) && !t.with_second(0, 7));
        assert!(t.with_second(2, 8) && !t.with_second(2, 9));
        assert!(t.second_alive(8) && !t.second_alive(9));
    }

    #[test]
    fn a_partition_also_cuts_the_other_nodes_apart_during_the_steps() {
        let mut t = Twins {
            node: 3,
            step_rounds: 1,
            split: vec![vec![0]],
            search_steps: None,
            from_round: 2,
            partition: false,
        };
        let second = 4;
        // Round 2 (200 ms rounds): node 0 is with the second copy.
        assert_eq!(route(&t, second, 100, 0, 1, 200), (1, false));
        t.partition = true;
        assert_eq!(route(&t, second, 100, 0, 1, 200), (1, true));
        assert_eq!(route(&t, second, 100, 1, 0, 200), (0, true));
        assert_eq!(route(&t, second, 100, 1, 2, 200), (2, false));
        // Each side keeps its copy: 0 reaches the second, 1 the first.
        assert_eq!(route(&t, second, 100, 0, 3, 200), (4, false));
        assert_eq!(route(&t, second, 100, 1, 3, 200), (3, false));
        assert_eq!(route(&t, second, 100, 4, 1, 200), (1, true));
        // Before and after the steps, nobody is apart.
        assert_eq!(route(&t, second, 100, 0, 1, 100), (1, false));
        assert_eq!(route(&t, second, 100, 0, 1, 300), (1, false));
    }
}
