//! What a run leaves: the report the world writes when it ends, after
//! judging the scenario's expectations on what its checker saw.

use super::users::ByzUserStats;
use super::{log::Log, NetStats, World};
use crate::check::expectations::Judged;
use crate::check::violation::{Kind, Violation};
use crate::scenario::{Role, Scenario};
use hotpocket_node::consensus::{FrameStats, Stats, VoteStatus};
use hotpocket_node::crypto::{Hash, VerifiedStats};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize)]
pub struct NodeReport {
    pub id: usize,
    pub role: Role,
    pub seq: u64,
    pub lcl: String,
    pub status: Option<VoteStatus>,
    pub stats: Stats,
    /// Runs of this node that differed from the certified result, and runs
    /// whose outputs it withheld.
    pub diverged: u64,
    pub withheld: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub trace_hash: String,
    pub trace_events: u64,
    pub passed: bool,
    pub violations: Vec<Violation>,
    pub nodes: Vec<NodeReport>,
    pub simulated_ms: u64,
    pub net: NetStats,
    pub inputs_submitted: u64,
    pub inputs_dropped: u64,
    /// Inputs nodes took from users, and how many of those were answered:
    /// their output reached the user.
    pub inputs_taken: u64,
    pub inputs_answered: u64,
    /// Runs handed out with as many UNL signatures over their outputs as
    /// hpcore's client asks, and with fewer.
    pub outputs_signed: [u64; 2],
    /// Statuses hpcore users got for their signed inputs: accepted (each
    /// naming the ledger that holds the input), rejected.
    pub statuses: [u64; 2],
    /// Closes that a node later rolled back (never final ones).
    pub rolled_back: u64,
    /// The rare paths an honest node took (`RarePath::name`), sorted.
    pub reached: Vec<String>,
    pub beacon: BeaconSummary,
    pub byzantine_users: ByzUserStats,
    /// Every message and mark of the run, when it was asked for.
    #[serde(skip)]
    pub log: Option<Log>,
    /// Signature checks answered from the shared memory, and checked in
    /// full, and proposal frames found in memory or decoded: for the bench,
    /// not the report.
    #[serde(skip)]
    pub verified: VerifiedStats,
    #[serde(skip)]
    pub frames: FrameStats,
}

/// The random beacon over the run's final ledgers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BeaconSummary {
    /// Final ledgers with an outcome, and how many of them are random.
    pub outcomes: u64,
    pub random: u64,
    /// Per node: final ledgers recording it absent, and convicting it.
    pub absent: BTreeMap<usize, u64>,
    pub fraud: BTreeMap<usize, u64>,
    /// Honest nodes recorded absent while away or behind (any ledger
    /// closed, final or not).
    pub excused: u64,
    /// Commits of honest nodes, up and in time, that missed the ledger.
    pub commits_missed: u64,
    /// Each random value, by seq: for the statistics, not the report.
    #[serde(skip)]
    pub values: Vec<Hash>,
}

impl World {
    /// Ends the run (nothing is sent after this), judges the scenario's
    /// expectations and writes the report.
    pub fn report(&self, s: &Scenario, seed: u64) -> Report {
        self.shut_down();
        let trace_hash = self.trace_hash().to_string();
        let simulated_ms = self.now();
        let mut g = self.lock();
        let honest = s.honest();
        let steady: Vec<usize> = honest
            .iter()
            .copied()
            .filter(|&i| g.nodes[i].crashes == 0)
            .collect();
        let judged = Judged {
            honest: honest.clone(),
            steady,
            uptime: s.uptime(),
            end_ms: simulated_ms,
        };
        g.checker.check_expectations(&s.expectations, &judged);
        // With no byzantine node, a seen equivocation is an honest node that
        // signed one stage twice (a restart mid-round, say).
        if honest.len() == s.nodes {
            for i in 0..s.nodes {
                let n = g.nodes[i].stats.equivocations;
                if n > 0 {
                    let what = format!("node {i} saw {n} equivocations, and every node is honest");
                    g.checker
                        .violate(Violation::at_end(Kind::Equivocation, what).by(i));
                }
            }
        }
        let (inputs_taken, inputs_answered) = g.checker.outputs.summary();
        let nodes = (0..g.nodes.len())
            .map(|i| {
                let lcl = g.checker.lcl.get(&i).copied();
                let n = &g.nodes[i];
                NodeReport {
                    id: i,
                    role: n.role,
                    seq: lcl.map_or(0, |l| l.seq),
                    lcl: lcl.map_or_else(String::new, |l| l.hash.to_string()),
                    status: n.status,
                    stats: n.stats.clone(),
                    diverged: g.checker.divergences.get(&i).copied().unwrap_or(0),
                    withheld: g.checker.withheld.get(&i).copied().unwrap_or(0),
                }
            })
            .collect();
        Report {
            scenario: s.name.clone(),
            seed,
            trace_hash,
            trace_events: g.trace.events,
            passed: g.checker.violations.is_empty(),
            violations: g.checker.violations.clone(),
            nodes,
            simulated_ms,
            net: g.net,
            inputs_submitted: g.inputs_submitted,
            inputs_dropped: g.inputs_dropped,
            inputs_taken,
            inputs_answered,
            outputs_signed: g.checker.outputs.signed_runs,
            statuses: g.checker.outputs.statuses.into(),
            rolled_back: g.checker.rolled_back,
            reached: g.reached.iter().map(|p| p.name()).collect(),
            byzantine_users: g.byz_users.clone(),
            log: g.log.take(),
            verified: VerifiedStats::default(),
            frames: FrameStats::default(),
            beacon: {
                let b = &g.checker.beacon;
                let values: Vec<Hash> = b.values.values().flatten().copied().collect();
                BeaconSummary {
                    outcomes: b.values.len() as u64,
                    random: values.len() as u64,
                    absent: b.absent.clone(),
                    fraud: b.fraud.clone(),
                    excused: b.excused,
                    commits_missed: b.commits_missed,
                    values,
                }
            },
        }
    }
}
