//! The `[consensus]` table: the settings every node of a scenario shares,
//! and the node's config they make.

use hotpocket_node::consensus::{ConsensusConfig, PlantedBug};
use hotpocket_node::crypto::PubKey;
use hotpocket_node::npl::NplLimits;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusSettings {
    pub roundtime_ms: u64,
    pub stage_slice_pct: u64,
    pub stage_thresholds_pct: [u64; 3],
    pub close_threshold_pct: u64,
    /// How often a node party line chunk is relayed (0: direct links only).
    pub npl_max_hops: u8,
    /// A check switched off to show an adversary exploits it (tests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planted_bug: Option<PlantedBug>,
    /// Whether the network takes the prototype's vouched inputs (hp.cfg's
    /// `prototype_users`). Off, users speak hpcore's protocol and sign
    /// their inputs, and no node can put an input in a user's name.
    #[serde(skip_serializing_if = "is_true")]
    pub prototype_users: bool,
    /// Ledgers a node keeps whole in memory (hp.cfg's `memory_ledgers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_ledgers: Option<u64>,
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for ConsensusSettings {
    fn default() -> Self {
        ConsensusSettings {
            roundtime_ms: 1000,
            stage_slice_pct: 25,
            stage_thresholds_pct: [50, 65, 80],
            close_threshold_pct: 80,
            npl_max_hops: NplLimits::default().max_hops,
            planted_bug: None,
            prototype_users: true,
            memory_ledgers: None,
        }
    }
}

impl ConsensusSettings {
    /// The node's config: these settings on the defaults, with `unl`.
    pub fn config(&self, unl: Vec<PubKey>) -> ConsensusConfig {
        let mut cfg = ConsensusConfig {
            roundtime_ms: self.roundtime_ms,
            stage_slice_pct: self.stage_slice_pct,
            stage_thresholds_pct: self.stage_thresholds_pct,
            close_threshold_pct: self.close_threshold_pct,
            planted_bug: self.planted_bug,
            vouched_inputs: self.prototype_users,
            npl: NplLimits {
                max_hops: self.npl_max_hops,
                ..NplLimits::default()
            },
            ..ConsensusConfig::new(unl)
        };
        if let Some(m) = self.memory_ledgers {
            cfg.memory_ledgers = m;
        }
        cfg
    }
}
