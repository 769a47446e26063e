//! The `[fuzz]` and `[swarm]` tables: ranges the fuzzer draws a concrete
//! scenario from, one draw per seed (`crate::fuzz`).

use super::Role;
use serde::{Deserialize, Serialize};

/// Ranges the fuzzer draws from, one draw per seed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FuzzRanges {
    pub loss_pct: Option<[f64; 2]>,
    pub duplicate_pct: Option<[f64; 2]>,
    pub reorder_pct: Option<[f64; 2]>,
    pub latency_min_ms: Option<[u64; 2]>,
    pub latency_max_ms: Option<[u64; 2]>,
    pub clock_offset_ms: Option<[i64; 2]>,
    pub clock_drift_ppm: Option<[i64; 2]>,
    /// Each timeline event moves by up to this much, either way.
    pub timeline_jitter_ms: Option<u64>,
    /// Adds this many crash-and-restart pairs of random honest nodes, at
    /// random times in the first 70% of the run.
    pub random_crashes: Option<[u64; 2]>,
    /// The honest nodes random crashes pick from (all when unset).
    pub random_crash_nodes: Option<Vec<usize>>,
}

/// Ranges the swarm draws from; a range `[x, x]` pins a value.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwarmRanges {
    /// Nodes, all in the UNL (default 4 to 10).
    pub nodes: Option<[u64; 2]>,
    /// Byzantine nodes (default 0 to the most the safety bound allows;
    /// never more than that, whatever the range says).
    pub byzantine: Option<[u64; 2]>,
    /// Roles byzantine nodes play (default every consensus role).
    pub roles: Option<Vec<Role>>,
    pub roundtime_ms: Option<[u64; 2]>,
    pub stage_slice_pct: Option<[u64; 2]>,
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
    /// Crash-and-restart pairs of honest nodes (default 0 to 2).
    pub crashes: Option<[u64; 2]>,
    /// One-round `mutate` windows per mutator (ByzzFuzz's c; default 1 to
    /// 4), each to a random set of peers; `any_scope_pct` of them any-scope.
    pub mutations: Option<[u64; 2]>,
    pub any_scope_pct: Option<u64>,
    pub loss_pct: Option<[u64; 2]>,
}
