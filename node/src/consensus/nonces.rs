//! The nonces of users' signed inputs in the chain, so that a user's inputs
//! run in the order it signed them, as hpcore's do: an input may go into a
//! ledger only with a nonce above every nonce of its user's that a ledger
//! already holds, while that other input's last ledger is not passed. So a
//! node holding back one input of a user until a later one ran (or
//! replaying one) cannot get it run after it; a user whose clock stepped
//! back waits at most until its last input's last ledger.
//!
//! Every honest node proposes only inputs this allows on its own chain;
//! an input no honest node proposes never reaches the stage-1 threshold.

use crate::contract::{signer, Signer};
use crate::crypto::{Hash, PubKey};
use crate::ledger::LedgerRecord;
use std::collections::BTreeMap;

/// Seqs a nonce is kept for at most, whatever last ledger its user signed:
/// a user signing far-off last ledgers holds the node's memory no longer.
pub const NONCE_WINDOW: u64 = 1024;

#[derive(Debug, Default)]
pub struct Nonces {
    /// Per user, the signed inputs in recent ledgers: (seq, nonce, last).
    by_user: BTreeMap<PubKey, Vec<(u64, u64, u64)>>,
}

impl Nonces {
    /// Ledger `record` joined the chain; `checked` holds the signers of
    /// bodies already checked (pooled here), the rest are checked now.
    pub fn add(&mut self, record: &LedgerRecord, checked: &BTreeMap<Hash, Option<Signer>>) {
        let seq = record.ledger.seq;
        for h in &record.ledger.inputs {
            let found = match checked.get(h) {
                Some(s) => *s,
                None => record.bodies.get(h).and_then(|b| signer(b)),
            };
            let Some(Signer { user, nonce, last }) = found else {
                continue;
            };
            // Too late for its ledger: every node skipped it.
            if seq <= last {
                self.by_user
                    .entry(user)
                    .or_default()
                    .push((seq, nonce, last));
            }
        }
    }

    /// Ledger `seq` left the chain.
    pub fn remove(&mut self, seq: u64) {
        for v in self.by_user.values_mut() {
            v.retain(|(s, ..)| *s != seq);
        }
        self.by_user.retain(|_, v| !v.is_empty());
    }

    /// Forgets what cannot refuse an input of ledger `next` or later any
    /// more: `next` is one past the last final ledger, the lowest a
    /// rollback can take the chain back to.
    pub fn prune(&mut self, next: u64) {
        for v in self.by_user.values_mut() {
            v.retain(|&(s, _, last)| last >= next && s + NONCE_WINDOW > next);
        }
        self.by_user.retain(|_, v| !v.is_empty());
    }

    /// Whether `user`'s input of `nonce` may go into ledger `next`.
    pub fn fresh(&self, user: &PubKey, nonce: u64, next: u64) -> bool {
        let held = self.by_user.get(user).map_or(&[][..], Vec::as_slice);
        !held
            .iter()
            .any(|&(s, n, last)| n >= nonce && last >= next && s + NONCE_WINDOW > next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{input_hash, SignedInput};
    use crate::crypto::Keypair;

    fn signed(key: &Keypair, nonce: u64, last: u64) -> Vec<u8> {
        let container = format!(r#"{{"input":"x","nonce":{nonce},"max_ledger_seq_no":{last}}}"#);
        SignedInput {
            user: key.public(),
            sig: key.sign_raw(container.as_bytes()),
            container,
        }
        .encode()
    }

    fn ledger(seq: u64, bodies: &[Vec<u8>]) -> LedgerRecord {
        let mut r = LedgerRecord::genesis();
        r.ledger.seq = seq;
        for b in bodies {
            r.ledger.inputs.push(input_hash(b));
            r.bodies.insert(input_hash(b), b.clone());
        }
        r
    }

    #[test]
    fn a_nonce_below_a_landed_one_waits_until_that_ones_last_ledger() {
        let u = Keypair::from_seed([1; 32]);
        let other = Keypair::from_seed([2; 32]).public();
        let mut n = Nonces::default();
        n.add(&ledger(5, &[signed(&u, 20, 12)]), &BTreeMap::new());
        assert!(!n.fresh(&u.public(), 19, 6), "older than one that ran");
        assert!(!n.fresh(&u.public(), 20, 6), "the same nonce again");
        assert!(n.fresh(&u.public(), 21, 6));
        assert!(n.fresh(&other, 1, 6), "another user's nonces are its own");
        // Past the landed input's last ledger, its nonce no longer counts.
        assert!(n.fresh(&u.public(), 19, 13));
        // A rollback of its ledger takes it back.
        n.remove(5);
        assert!(n.fresh(&u.public(), 19, 6));
        // Kept as long as a rollback can bring back a ledger it refuses:
        // ledger 12 closed (11 final), then rolled back.
        n.add(&ledger(5, &[signed(&u, 20, 12)]), &BTreeMap::new());
        n.add(&ledger(12, &[]), &BTreeMap::new());
        n.prune(12);
        n.remove(12);
        assert!(!n.fresh(&u.public(), 19, 12));
        n.remove(5);
        // One past its last ledger when it landed never ran: not counted;
        // nor is a forged one.
        let mut forged = signed(&u, 50, 12);
        let at = forged.len() - 10;
        forged[at] ^= 1;
        n.add(&ledger(13, &[signed(&u, 40, 12), forged]), &BTreeMap::new());
        assert!(n.fresh(&u.public(), 30, 14));
    }
}
