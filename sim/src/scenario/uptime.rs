//! Which nodes a correct protocol could keep moving at a given time, read
//! from the timeline alone: a liveness expectation is judged only where it
//! could be met. A shrink step that makes it unmeetable (drops the restart,
//! the heal) then makes the violation vanish and is refused, instead of
//! shrinking a bug into a scenario the correct code fails too.

use super::{Fault, Scenario};
use hotpocket_node::consensus::{threshold, INPUT_TTL_ROUNDS};
use std::collections::BTreeSet;

/// The timeline's crashes, pauses and partitions, replayed on demand.
pub struct Uptime {
    nodes: usize,
    /// The UNL members liveness may count on (`Role::counted_for_liveness`).
    voters: Vec<usize>,
    /// Votes a close needs.
    needed: usize,
    roundtime_ms: u64,
    timeline: Vec<(u64, Fault)>,
}

/// The timeline's state at one moment.
struct At {
    down: BTreeSet<usize>,
    groups: Vec<Vec<usize>>,
}

impl Scenario {
    pub fn uptime(&self) -> Uptime {
        let mut timeline: Vec<(u64, Fault)> = (self.timeline.iter())
            .map(|e| (e.at_ms, e.fault.clone()))
            .collect();
        timeline.sort_by_key(|(t, _)| *t);
        let unl = self.unl();
        Uptime {
            nodes: self.nodes,
            needed: threshold(unl.len(), self.consensus.close_threshold_pct),
            voters: (unl.into_iter())
                .filter(|&n| self.role(n).counted_for_liveness())
                .collect(),
            roundtime_ms: self.consensus.roundtime_ms.max(1),
            timeline,
        }
    }
}

impl Uptime {
    fn at(&self, t: u64) -> At {
        let mut at = At {
            down: BTreeSet::new(),
            groups: Vec::new(),
        };
        for (_, fault) in self.timeline.iter().take_while(|(at, _)| *at <= t) {
            match fault {
                // A crash mid-write takes the node down at its next write:
                // within a round of the event.
                Fault::Crash { node } | Fault::CrashMidWrite { node } | Fault::Pause { node } => {
                    at.down.insert(*node);
                }
                Fault::Restart { node } | Fault::Resume { node } => {
                    at.down.remove(node);
                }
                Fault::Partition { groups } => at.groups = groups.clone(),
                Fault::Heal => at.groups.clear(),
                // One-way cuts, network settings, clocks and mutations slow
                // a network down but do not by themselves stop a quorum.
                Fault::Block { .. }
                | Fault::Clock { .. }
                | Fault::Network(_)
                | Fault::Mutate { .. } => {}
            }
        }
        at
    }

    /// Whether `node` is up at `t` and can hear a quorum of counted voters
    /// that are up too: only then can it be expected to close ledgers.
    pub fn can_progress(&self, node: usize, t: u64) -> bool {
        self.voters(node, t) >= self.needed
    }

    /// Votes a close needs.
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// How many UNL members liveness counts on that `node` hears at `t`,
    /// itself included, and that are up (none when `node` is down).
    pub fn voters(&self, node: usize, t: u64) -> usize {
        let at = self.at(t);
        if at.down.contains(&node) {
            return 0;
        }
        // Nodes in no group keep all their links.
        let grouped: BTreeSet<usize> = at.groups.iter().flatten().copied().collect();
        let mine = at.groups.iter().find(|g| g.contains(&node));
        let hears =
            |other: usize| mine.is_none_or(|g| g.contains(&other)) || !grouped.contains(&other);
        (self.voters.iter())
            .filter(|&&n| !at.down.contains(&n) && hears(n))
            .count()
    }

    /// Whether any node can progress at `t`.
    pub fn quorum(&self, t: u64) -> bool {
        self.best_voters(t) >= self.needed
    }

    /// Whether an input a node pooled at `sent_ms` is owed an answer: a
    /// quorum could close ledgers for at least half of the rounds it may
    /// wait in the pool. Past that the pool drops it, and a network stalled
    /// that long (a byzantine voter withholding the ledger it closed alone,
    /// say) is allowed to.
    pub fn could_land(&self, sent_ms: u64) -> bool {
        let rt = self.roundtime_ms;
        let able = (0..INPUT_TTL_ROUNDS)
            .filter(|k| self.quorum(sent_ms + k * rt + rt / 2))
            .count() as u64;
        2 * able >= INPUT_TTL_ROUNDS
    }

    /// The most counted voters any node hears at `t`: the best-connected
    /// group, which is the one that can close.
    pub fn best_voters(&self, t: u64) -> usize {
        (0..self.nodes)
            .map(|n| self.voters(n, t))
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::TimelineEvent;

    fn three(timeline: Vec<(u64, Fault)>) -> Uptime {
        let mut s: Scenario =
            toml::from_str("name = \"t\"\nnodes = 3\nduration_ms = 10000").unwrap();
        s.timeline = timeline
            .into_iter()
            .map(|(at_ms, fault)| TimelineEvent { at_ms, fault })
            .collect();
        s.uptime()
    }

    #[test]
    fn a_node_down_for_good_leaves_three_of_three_without_a_quorum() {
        let u = three(vec![(1000, Fault::Crash { node: 2 })]);
        assert!(u.can_progress(0, 999));
        assert!(!u.can_progress(0, 1000));
        assert!(!u.can_progress(2, 5000));
        assert!(!u.quorum(9000));
        let u = three(vec![
            (1000, Fault::Crash { node: 2 }),
            (3000, Fault::Restart { node: 2 }),
        ]);
        assert!(u.quorum(3000) && u.can_progress(2, 9000));
    }

    /// The seed-192 stall of history-forger: with node 4 cut off, the four
    /// left are exactly the close threshold, and one of them is byzantine.
    #[test]
    fn a_quorum_that_needs_a_byzantine_vote_is_not_owed_progress() {
        let text = |role: &str| {
            format!(
                "name = \"t\"\nnodes = 5\nduration_ms = 10000\n\
                 [[node]]\nid = 3\nrole = \"{role}\"\n\
                 [[timeline]]\nat_ms = 1000\naction = \"partition\"\ngroups = [[4], [0, 1, 2, 3]]"
            )
        };
        let uptime = |role: &str| toml::from_str::<Scenario>(&text(role)).unwrap().uptime();
        let forger = uptime("history_forger");
        assert!(forger.quorum(500) && !forger.quorum(2000));
        assert_eq!(forger.best_voters(2000), 3);
        assert!(uptime("honest").can_progress(0, 2000));
        // Twins run correct code: counted.
        assert!(uptime("twin").can_progress(0, 2000));
        // 20 rounds of 1 s: an input sent before the cut had one round.
        assert!(!forger.could_land(0));
        assert!(uptime("honest").could_land(0));
    }

    #[test]
    fn a_partition_holds_progress_until_it_heals() {
        let split = Fault::Partition {
            groups: vec![vec![0, 1], vec![2]],
        };
        let u = three(vec![(1000, split), (4000, Fault::Heal)]);
        assert!(!u.quorum(2000));
        assert!(u.can_progress(2, 4000));
    }
}
