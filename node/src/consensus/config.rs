//! Consensus settings shared by every node of a network.

use crate::crypto::PubKey;
use crate::npl::{LimitsError, NplLimits};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusConfig {
    /// Length of one round in milliseconds.
    pub roundtime_ms: u64,
    /// Per-contract offset of round boundaries, in milliseconds.
    pub round_offset_ms: u64,
    /// Percent of the round given to each of stages 1-3; stage 0 gets the rest.
    pub stage_slice_pct: u64,
    /// Percent of the UNL that must have proposed an input in the previous
    /// stage for it to be kept in stages 1, 2 and 3.
    pub stage_thresholds_pct: [u64; 3],
    /// Percent of the UNL that must agree on one stage-3 candidate to close.
    pub close_threshold_pct: u64,
    /// Proposals older than this many rounds (or this far ahead) are dropped.
    pub max_round_skew: u64,
    /// Most input hashes in one proposal.
    pub max_inputs_per_ledger: usize,
    /// Largest accepted input body, bytes.
    pub max_input_bytes: usize,
    /// Most input bodies a node keeps waiting for consensus.
    pub max_pool_inputs: usize,
    /// Most bytes of input bodies waiting for consensus.
    pub max_pool_bytes: usize,
    /// Most bytes of input bodies one ledger may carry, so a ledger and its
    /// proof always fit in one history frame.
    pub max_ledger_input_bytes: usize,
    /// Most ledgers served in one history response.
    pub history_batch: u64,
    /// A node whose contract is more than this many ledgers behind its lcl
    /// fetches the certified state from peers instead of running them all
    /// (0: always run them).
    pub state_sync_gap: u64,
    /// Recent ledgers the node keeps in memory, whole (proof and bodies);
    /// older ones live only in the store, which serves them to peers.
    /// Ledgers not yet run, or whose outputs wait for a verdict, stay
    /// too, however old. At least `MIN_MEMORY_LEDGERS`.
    pub memory_ledgers: u64,
    /// Bounds on the node party line; the same on every node.
    pub npl: NplLimits,
    /// Sorted, distinct UNL.
    pub unl: Vec<PubKey>,
    /// Sign the output tree root of every delivered run and tell the
    /// peers, for hpcore's users (`Action::OutputsSigned`).
    pub sign_outputs: bool,
    /// Whether inputs the node that took them vouches for (the seed
    /// prototype's sessions) are pooled and run. Off, only inputs their
    /// users signed (hpcore's) are: no UNL member can put an input in a
    /// user's name into a run. Every node of a network must agree.
    pub vouched_inputs: bool,
    /// A check switched off on purpose. Only the simulator's tests set it,
    /// to show that an adversary exploits the check's absence (a fuzzer
    /// that cannot catch a planted bug has no teeth); the node's config
    /// file has no such field, and a node built without the `planted`
    /// feature has neither the field nor any way around the checks.
    #[cfg(feature = "planted")]
    pub planted_bug: Option<PlantedBug>,
}

/// The checks a test may switch off; each names what the node then skips.
#[cfg(feature = "planted")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlantedBug {
    /// A peer's proposal is taken without checking its signature.
    NoSignatureCheck,
    /// A proposal by a key outside the UNL is taken and counted.
    NoUnlCheck,
    /// A ledger closes when a majority of the stage-3 proposals received
    /// agree, rather than the close threshold of the whole UNL.
    CloseOnReceived,
    /// A ledger fetched from history is adopted on a proof with one valid
    /// signer, rather than the close threshold.
    WeakHistoryProof,
    /// A ledger fetched from history is adopted with whatever bodies it
    /// carries, unchecked against its input hashes.
    UncheckedBodies,
    /// A ledger fetched from history is adopted without checking that it
    /// follows the one before it (seq + 1, and its parent's hash).
    NoLinkCheck,
    /// An input body is pooled, and so proposed, without checking its
    /// user's signature, or whether the network takes vouched inputs.
    UncheckedInputs,
    /// A signed input is proposed whatever its nonce: a user's inputs can
    /// run out of the order it signed them.
    NoNonceOrder,
    /// The lcl is rolled back without a proof of another ledger at its
    /// seq even when this node voted on top of it (or restarted with it).
    RollBackVoted,
    /// A ledger fetched from history is adopted without checking its
    /// proof's signatures (authors, threshold and candidate still are).
    NoProofSignatureCheck,
    /// Catch-up adopts a history answer's unfinal tip even when more
    /// peers are on another ledger at its seq.
    AdoptOutvotedTip,
    /// A ledger at the lcl's seq, proven by its own close proof, is taken
    /// as proof that the lcl lost, as a proof of its child is: a node drops
    /// an lcl it voted on for a ledger nobody built on.
    SiblingAsProof,
}

/// The fewest ledgers kept in memory: a rollback needs the lcl and the
/// ledger below it, and a round's verdicts the few runs before.
pub const MIN_MEMORY_LEDGERS: u64 = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("roundtime_ms must be at least 40, got {0}")]
    Roundtime(u64),
    #[error("stage_slice_pct must be between 1 and 33, got {0}")]
    StageSlice(u64),
    #[error("thresholds must be between 1 and 100 percent, got {0}")]
    Threshold(u64),
    #[error("the close threshold must be above 50% or two halves could close different ledgers, got {0}")]
    CloseThreshold(u64),
    #[error("the UNL is empty")]
    EmptyUnl,
    #[error("memory_ledgers must be at least {MIN_MEMORY_LEDGERS}, got {0}")]
    MemoryLedgers(u64),
    #[error("node party line: {0}")]
    Npl(#[from] LimitsError),
}

impl ConsensusConfig {
    pub fn new(unl: Vec<PubKey>) -> ConsensusConfig {
        let mut unl = unl;
        unl.sort();
        unl.dedup();
        ConsensusConfig {
            roundtime_ms: 1000,
            round_offset_ms: 0,
            stage_slice_pct: 25,
            stage_thresholds_pct: [50, 65, 80],
            close_threshold_pct: 80,
            max_round_skew: 3,
            max_inputs_per_ledger: 4096,
            max_input_bytes: 1 << 20,
            max_pool_inputs: 16384,
            max_pool_bytes: 256 << 20,
            max_ledger_input_bytes: 4 << 20,
            history_batch: 64,
            state_sync_gap: 32,
            memory_ledgers: 64,
            npl: NplLimits::default(),
            unl,
            sign_outputs: true,
            vouched_inputs: true,
            #[cfg(feature = "planted")]
            planted_bug: None,
        }
    }

    #[cfg(feature = "planted")]
    pub(crate) fn planted(&self, bug: PlantedBug) -> bool {
        self.planted_bug == Some(bug)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.roundtime_ms < 40 {
            return Err(ConfigError::Roundtime(self.roundtime_ms));
        }
        if !(1..=33).contains(&self.stage_slice_pct) {
            return Err(ConfigError::StageSlice(self.stage_slice_pct));
        }
        for &t in self.stage_thresholds_pct.iter() {
            if !(1..=100).contains(&t) {
                return Err(ConfigError::Threshold(t));
            }
        }
        if !(51..=100).contains(&self.close_threshold_pct) {
            return Err(ConfigError::CloseThreshold(self.close_threshold_pct));
        }
        if self.unl.is_empty() {
            return Err(ConfigError::EmptyUnl);
        }
        if self.memory_ledgers < MIN_MEMORY_LEDGERS {
            return Err(ConfigError::MemoryLedgers(self.memory_ledgers));
        }
        self.npl.validate()?;
        Ok(())
    }

    /// Length of each of stages 1-3, ms.
    pub fn stage_ms(&self) -> u64 {
        self.roundtime_ms * self.stage_slice_pct / 100
    }

    /// The UNL members other than `me`.
    pub fn peers_of(&self, me: &PubKey) -> Vec<PubKey> {
        self.unl.iter().filter(|k| *k != me).copied().collect()
    }

    pub fn in_unl(&self, k: &PubKey) -> bool {
        self.unl.binary_search(k).is_ok()
    }

    /// Votes needed for `pct` percent of the UNL, rounded up.
    pub fn needed(&self, pct: u64) -> usize {
        threshold(self.unl.len(), pct)
    }
}

/// `ceil(pct * n / 100)` in integers: no floating point decides consensus.
pub fn threshold(n: usize, pct: u64) -> usize {
    ((pct * n as u64).div_ceil(100)) as usize
}

/// Whether `cfg` switches the check `bug` (a [`PlantedBug`] name) off.
/// Without the `planted` feature, as in every `hotpocket` binary, it is
/// `false`: the check cannot be bypassed, and the bypass is not compiled.
#[cfg(feature = "planted")]
macro_rules! planted {
    ($cfg:expr, $bug:ident) => {
        $cfg.planted($crate::consensus::PlantedBug::$bug)
    };
}

#[cfg(not(feature = "planted"))]
macro_rules! planted {
    ($cfg:expr, $bug:ident) => {
        false
    };
}

pub(crate) use planted;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_rounds_up() {
        let cases = [
            (5, 50, 3),
            (5, 65, 4),
            (5, 80, 4),
            (4, 50, 2),
            (4, 65, 3),
            (4, 80, 4),
            (3, 80, 3),
            (10, 80, 8),
            (10, 65, 7),
            (7, 80, 6),
            (1, 80, 1),
            (20, 50, 10),
            (100, 80, 80),
        ];
        for (n, pct, want) in cases {
            assert_eq!(threshold(n, pct), want, "n={n} pct={pct}");
        }
    }

    #[test]
    fn close_quorums_intersect_in_more_than_a_fifth() {
        // Two 80% quorums of any UNL size share at least 60% of it, so a fork
        // needs that many equivocators.
        for n in 1..200usize {
            let q = threshold(n, 80);
            assert!(2 * q > n, "n={n}");
            assert!(2 * q - n >= threshold(n, 60), "n={n}");
        }
    }

    #[test]
    fn validate_names_the_problem() {
        let mut c = ConsensusConfig::new(vec![PubKey([1; 32])]);
        assert_eq!(c.validate(), Ok(()));
        c.close_threshold_pct = 50;
        assert_eq!(c.validate(), Err(ConfigError::CloseThreshold(50)));
        c.close_threshold_pct = 80;
        c.stage_slice_pct = 40;
        assert_eq!(c.validate(), Err(ConfigError::StageSlice(40)));
        c.stage_slice_pct = 25;
        c.memory_ledgers = 3;
        assert_eq!(c.validate(), Err(ConfigError::MemoryLedgers(3)));
        c.memory_ledgers = 4;
        c.unl.clear();
        assert_eq!(c.validate(), Err(ConfigError::EmptyUnl));
    }
}
