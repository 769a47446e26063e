//! The commit-reveal random beacon (DESIGN §7, after the datdot note in
//! `seeds/`): pure functions of their inputs; not yet carried in proposals
//! or ledgers.
//!
//! One session per ledger, named by the last closed ledger the
//! commitments are proposed on: each UNL node commits to its
//! [`secret_for`] that lcl, and reveals it once the ledger holding the
//! agreed commits has closed.

mod commit;
mod fraud;
pub mod tally;

pub use commit::{commitment, secret_for, SignedCommit, SignedReveal};
pub use fraud::{FraudError, FraudProof};

#[cfg(test)]
mod testkit {
    use crate::crypto::{Hash, Keypair, PubKey};
    use crate::ledger::LedgerId;

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
