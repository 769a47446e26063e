//! The ranges the fuzzer draws a concrete scenario from, one draw per seed
//! (`crate::fuzz`). One set of knobs, read by one of two tables:
//! - `[fuzz]` perturbs the scenario as written: a knob it sets is drawn,
//!   a knob it leaves out keeps the file's value; the world knobs (nodes,
//!   roles, consensus, workload, partitions, mutations) stay the file's.
//! - `[swarm]` draws the whole world; a knob it leaves out is drawn from
//!   the default given here.
//!
//! A range `[x, x]` pins a value.

use super::Role;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ranges {
    // The world, drawn only under `[swarm]`.
    /// Nodes, all in the UNL (default 4 to 10).
    pub nodes: Option<[u64; 2]>,
    /// Byzantine nodes (default 0 to the most the safety bound allows;
    /// never more than that, whatever the range says).
    pub byzantine: Option<[u64; 2]>,
    /// Roles byzantine nodes play (default every consensus role).
    pub roles: Option<Vec<Role>>,
    /// Default 300 to 1000.
    pub roundtime_ms: Option<[u64; 2]>,
    /// Default 15 to 30.
    pub stage_slice_pct: Option<[u64; 2]>,
    /// Default 60 to 90; stage thresholds are drawn below it.
    pub close_threshold_pct: Option<[u64; 2]>,
    /// Run length in rounds (default 40 to 60).
    pub rounds: Option<[u64; 2]>,
    /// All faults fall in the first `fault_pct` percent of the rounds
    /// (ByzzFuzz's r; default 50).
    pub fault_pct: Option<u64>,
    /// Workload: one input every this many ms (default 20 to 200).
    pub every_ms: Option<[u64; 2]>,
    /// Random two-way partitions (ByzzFuzz's d; default 0 to 2), each
    /// lasting `partition_rounds` rounds (default 1 to 6).
    pub partitions: Option<[u64; 2]>,
    pub partition_rounds: Option<[u64; 2]>,
    /// One-round `mutate` windows per mutator (ByzzFuzz's c; default 1 to
    /// 4), each to a random set of peers; `any_scope_pct` of them any-scope
    /// (default 25).
    pub mutations: Option<[u64; 2]>,
    pub any_scope_pct: Option<u64>,
    /// Lone closes set up by cuts scoped to rounds (default 0 to 1): one
    /// round's stage-3 votes reach one honest node only, which is then
    /// mostly cut off for a round or two (`fuzz/cuts.rs`).
    pub lone_closes: Option<[u64; 2]>,
    /// Random cuts of some stages' proposals over a round or two between
    /// random sets of nodes (default 0 to 2).
    pub stage_cuts: Option<[u64; 2]>,

    // The network, clocks and faults, drawn under either table.
    /// Percent, in hundredths (swarm default 0 to 3).
    pub loss_pct: Option<[f64; 2]>,
    /// Percent, in hundredths (swarm default 0 to 2).
    pub duplicate_pct: Option<[f64; 2]>,
    /// Percent, in hundredths (swarm default 0 to 10).
    pub reorder_pct: Option<[f64; 2]>,
    /// A link's latency is uniform in [min, max]; swarm default: min 1 to
    /// 10, max up to what the drawn timing allows.
    pub latency_min_ms: Option<[u64; 2]>,
    pub latency_max_ms: Option<[u64; 2]>,
    /// Each node's clock offset and drift (swarm default: what the drawn
    /// timing allows, drift ±100 ppm).
    pub clock_offset_ms: Option<[i64; 2]>,
    pub clock_drift_ppm: Option<[i64; 2]>,
    /// Each timeline event moves by up to this much, either way.
    pub timeline_jitter_ms: Option<u64>,
    /// Adds this many crash-and-restart pairs of random honest nodes that
    /// the timeline does not crash already (swarm default 0 to 2), before
    /// the faults end (`[fuzz]`: in the first 70% of the run).
    pub crashes: Option<[u64; 2]>,
    /// The nodes random crashes pick from (every honest node when unset).
    pub crash_nodes: Option<Vec<usize>>,
}

impl Ranges {
    /// The world knobs this table sets: refused under `[fuzz]`, which keeps
    /// the world the file wrote.
    pub fn world_knobs(&self) -> Vec<&'static str> {
        let set = [
            ("nodes", self.nodes.is_some()),
            ("byzantine", self.byzantine.is_some()),
            ("roles", self.roles.is_some()),
            ("roundtime_ms", self.roundtime_ms.is_some()),
            ("stage_slice_pct", self.stage_slice_pct.is_some()),
            ("close_threshold_pct", self.close_threshold_pct.is_some()),
            ("rounds", self.rounds.is_some()),
            ("fault_pct", self.fault_pct.is_some()),
            ("every_ms", self.every_ms.is_some()),
            ("partitions", self.partitions.is_some()),
            ("partition_rounds", self.partition_rounds.is_some()),
            ("mutations", self.mutations.is_some()),
            ("any_scope_pct", self.any_scope_pct.is_some()),
            ("lone_closes", self.lone_closes.is_some()),
            ("stage_cuts", self.stage_cuts.is_some()),
        ];
        set.into_iter().filter(|x| x.1).map(|x| x.0).collect()
    }

    /// Checks what is wrong whichever table holds it.
    pub fn check(&self, nodes: usize, table: &str) -> Result<(), String> {
        for (name, r) in [
            ("loss_pct", self.loss_pct),
            ("duplicate_pct", self.duplicate_pct),
            ("reorder_pct", self.reorder_pct),
        ] {
            if let Some([lo, hi]) = r {
                if !(0.0..=100.0).contains(&lo) || !(lo..=100.0).contains(&hi) {
                    return Err(format!(
                        "[{table}] {name} must be [lo, hi] within 0..=100, got [{lo}, {hi}]"
                    ));
                }
            }
        }
        let ordered = |name: &str, r: Option<[u64; 2]>| match r {
            Some([lo, hi]) if lo > hi => Err(format!("[{table}] {name} [{lo}, {hi}] is empty")),
            _ => Ok(()),
        };
        ordered("latency_min_ms", self.latency_min_ms)?;
        ordered("latency_max_ms", self.latency_max_ms)?;
        ordered("crashes", self.crashes)?;
        ordered("lone_closes", self.lone_closes)?;
        ordered("stage_cuts", self.stage_cuts)?;
        for (name, r) in [
            ("clock_offset_ms", self.clock_offset_ms),
            ("clock_drift_ppm", self.clock_drift_ppm),
        ] {
            if let Some([lo, hi]) = r.filter(|[lo, hi]| lo > hi) {
                return Err(format!("[{table}] {name} [{lo}, {hi}] is empty"));
            }
        }
        if table == "fuzz" {
            if let Some(&i) = self.crash_nodes.iter().flatten().find(|&&i| i >= nodes) {
                return Err(format!(
                    "[fuzz] crash_nodes names node {i}, but there are only {nodes} nodes"
                ));
            }
        }
        Ok(())
    }
}
