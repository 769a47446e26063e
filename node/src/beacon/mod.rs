//! The commit-reveal random beacon, all of it but the node's own part in
//! a round (`consensus/node/beacon.rs`): its signed messages and fraud
//! proofs, what ledgers and proposals carry of it ([`Beacon`]), a
//! session's outcome, and the counting consensus does over them. Pure
//! functions of their inputs.
//!
//! One session per ledger, named by the last closed ledger the
//! commitments are proposed on; call it `L`:
//!
//! 1. In the rounds on lcl `L`, each UNL node proposes a [`SignedCommit`]
//!    to its [`secret_for`] `L`. The agreed set of commits goes into ledger
//!    `N = L + 1`.
//! 2. In the rounds on lcl `N`, each node whose commit is in `N` proposes
//!    its [`SignedReveal`], which still names `L`. The agreed set of
//!    reveals goes into ledger `N + 1`, with the [`Outcome`] that
//!    [`decide`] draws from the two sets: the beacon value of `N + 1`.
//!
//! So every ledger carries the commits of one session and the reveals of
//! the one before. [`tally::carried_by`] is the stage ladder's counting
//! for both; [`tally::double_commits`] turns two different signed commits
//! from one node into evidence.
//!
//! The exits are the note's three, recorded identically on every node
//! that saw the same agreed sets: success, every committer revealed;
//! offline, a committer whose reveal did not make the agreed set is
//! recorded absent and the value is made from the reveals that did; fraud,
//! a node with two different commitments or a reveal that does not open
//! its commitment is recorded with a [`FraudProof`] and its secret left
//! out. A session is never re-rolled: a re-roll would let a withholder pick
//! among as many outcomes as it can force re-rolls. Withholding still
//! gives a node that reveals last a choice of two values (with its secret
//! or without it; a coalition of k, 2^k), at the price of being recorded
//! absent; [`Absences`] counts that per node so operators can see who
//! does it.
//!
//! Secrets come from the node key ([`secret_for`]), not the entropy seam:
//! a node restarted between commit and reveal must reveal the secret it
//! committed to, and nothing needs to be stored for that.

mod absences;
mod carried;
mod commit;
mod fraud;
mod outcome;
pub mod tally;

pub use absences::{AbsenceError, Absences};
pub use carried::{two_each, Beacon};
pub use commit::{commitment, secret_for, SignedCommit, SignedReveal};
pub use fraud::{FraudError, FraudProof};
pub use outcome::{decide, value, Outcome};

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod testkit {
    use crate::crypto::{Hash, Keypair, PubKey};
    use crate::ledger_id::LedgerId;

    /// `n` node keys, always the same for the same index.
    pub fn keys(n: u8) -> Vec<Keypair> {
        (0..n).map(|i| Keypair::from_seed([i + 1; 32])).collect()
    }

    /// Their public keys, sorted as a UNL is.
    pub fn unl(keys: &[Keypair]) -> Vec<PubKey> {
        let mut u: Vec<PubKey> = keys.iter().map(|k| k.public()).collect();
        u.sort();
        u
    }

    pub fn lcl(seq: u64) -> LedgerId {
        LedgerId {
            seq,
            hash: Hash([seq as u8; 32]),
        }
    }
}
