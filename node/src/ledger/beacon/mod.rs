//! What ledgers carry of the random beacon: signed commits and reveals,
//! fraud proofs, and a session's outcome. Here rather than in `beacon`
//! because ledgers carry them; `beacon` decides and counts them.

mod commit;
mod fraud;

pub use commit::{commitment, secret_for, SignedCommit, SignedReveal};
pub use fraud::{FraudError, FraudProof};

use crate::crypto::{Hash, Hasher, PubKey};
use crate::ledger::LedgerId;
use serde::{Deserialize, Serialize};

const BEACON_DOMAIN: &str = "hotpocket/ledger-beacon/v1";

/// What a session produced. Every list is sorted by node key and no node
/// is in two of them, so equal inputs give equal bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The beacon value, see `beacon::value`.
    pub value: Hash,
    /// Committers whose secret is in the value.
    pub revealed: Vec<PubKey>,
    /// Committers with no reveal in the agreed set, not convicted of fraud.
    pub absent: Vec<PubKey>,
    /// One proof per convicted node (the least, in the types' order, where
    /// there are several), sorted by that node's key.
    pub fraud: Vec<FraudProof>,
}

impl Outcome {
    /// Whether the value is unpredictable: at least one secret went in.
    /// Without one it is a function of the lcl alone.
    pub fn is_random(&self) -> bool {
        !self.revealed.is_empty()
    }
}

/// A ledger's (or a proposal's) part of the beacon. Ledger `N` on lcl
/// `L = N - 1` carries the commits of the session on `L` and the double
/// commits seen among them, and the reveals of the session on `L - 1`
/// with that session's outcome (none before ledger 2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beacon {
    /// Sorted by (author, commitment), distinct, all naming the lcl.
    pub commits: Vec<SignedCommit>,
    /// Double commits in the session on the lcl, sorted by accused, one
    /// each.
    pub frauds: Vec<FraudProof>,
    /// Sorted by (author, secret), distinct, all naming the lcl's parent.
    pub reveals: Vec<SignedReveal>,
    /// In stage-3 proposals and ledgers from seq 2 on.
    pub outcome: Option<Box<Outcome>>,
}

impl Beacon {
    /// What the ledger hash chains: postcard is deterministic for a value.
    pub fn digest(&self) -> Hash {
        let bytes = postcard::to_allocvec(self).expect("encoding into a Vec cannot fail");
        Hasher::new(BEACON_DOMAIN).bytes(&bytes).finish()
    }

    /// Whether a peer's beacon part on `lcl` is within bounds for a UNL of
    /// `unl` nodes: at most two commits or reveals per node (one more than
    /// an honest node makes, so a double commit can be shown), sorted and
    /// distinct, for the right sessions. Signatures are checked where
    /// entries are counted.
    pub fn well_formed(&self, lcl: LedgerId, unl: usize) -> bool {
        let most = unl.saturating_mul(2);
        let reveal_session = |r: &SignedReveal| r.lcl.seq.checked_add(1) == Some(lcl.seq);
        self.commits.len() <= most
            && self.commits.iter().all(|c| c.lcl == lcl)
            && increasing(&self.commits, |c| (c.author, c.commitment.0))
            && self.reveals.len() <= most
            && self.reveals.iter().all(reveal_session)
            && self.reveals.windows(2).all(|w| w[0].lcl == w[1].lcl)
            && increasing(&self.reveals, |r| (r.author, r.secret))
            && self.frauds.len() <= unl
            && self.frauds.iter().all(|p| p.lcl() == lcl)
            && increasing(&self.frauds, FraudProof::accused)
            && self.outcome.as_ref().is_none_or(|o| {
                o.revealed.len() + o.absent.len() + o.fraud.len() <= unl
                    && increasing(&o.revealed, |k| *k)
                    && increasing(&o.absent, |k| *k)
                    && increasing(&o.fraud, FraudProof::accused)
            })
    }
}

fn increasing<T, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> bool {
    items.windows(2).all(|w| key(&w[0]) < key(&w[1]))
}
