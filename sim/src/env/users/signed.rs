//! What a node hands its hpcore users with a run's outputs: the UNL's
//! signatures over the run's output tree root (`consensus::OutputSigs`).
//! No simulated user speaks hpcore's protocol, but every node gathers the
//! signatures as it would for one; this checks each handing against the
//! run the node delivered: once per run, over that run's root, every
//! signature valid and by a UNL member.

use hotpocket_node::consensus::{signers_needed, ConsensusConfig};
use hotpocket_node::contract::{OutputTree, RunResult, B3};
use hotpocket_node::crypto::{Hash, KeyRing, PubKey, Sig, Verified};
use std::collections::BTreeMap;

pub struct SignedCheck {
    unl: Vec<PubKey>,
    /// The world's memory of checks: a signature its signer recorded is
    /// not checked again.
    ring: KeyRing,
    needed: usize,
    /// Roots of runs delivered and not handed yet, by seq.
    expected: BTreeMap<u64, B3>,
}

impl SignedCheck {
    pub fn new(cfg: &ConsensusConfig, verified: Option<&Verified>) -> SignedCheck {
        SignedCheck {
            unl: cfg.unl.clone(),
            ring: KeyRing::new(&cfg.unl).sharing(verified),
            needed: signers_needed(cfg),
            expected: BTreeMap::new(),
        }
    }

    pub fn delivered(&mut self, seq: u64, ledger: &Hash, run: &RunResult) {
        let root = OutputTree::of(run, seq, ledger).root();
        self.expected.insert(seq, root);
    }

    /// A handing: whether it had the signatures hpcore's client asks for,
    /// or what is wrong with it.
    pub fn signed(&mut self, seq: u64, root: &B3, sigs: &[(PubKey, Sig)]) -> Result<bool, String> {
        let Some(expected) = self.expected.remove(&seq) else {
            return Err(format!("handed signatures for ledger {seq}'s outputs twice, or for a run it never delivered"));
        };
        if expected != *root {
            return Err(format!(
                "handed signatures for ledger {seq} over another root than its run's"
            ));
        }
        for (k, sig) in sigs {
            if self.unl.binary_search(k).is_err() || self.ring.verify_raw(k, root, sig).is_err() {
                return Err(format!(
                    "handed ledger {seq}'s outputs with a signature that does not hold (by {})",
                    k.short()
                ));
            }
        }
        let mut signers: Vec<&PubKey> = sigs.iter().map(|(k, _)| k).collect();
        signers.sort();
        signers.dedup();
        if signers.len() != sigs.len() {
            return Err(format!(
                "handed ledger {seq}'s outputs with one signer counted twice"
            ));
        }
        Ok(sigs.len() >= self.needed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpocket_node::contract::{RunOutcome, UserIo};
    use hotpocket_node::crypto::Keypair;

    #[test]
    fn a_handing_must_match_the_delivered_run_once_with_valid_signers() {
        let keys: Vec<Keypair> = (1..=3).map(|i| Keypair::from_seed([i; 32])).collect();
        let cfg = ConsensusConfig::new(keys.iter().map(Keypair::public).collect());
        let mut check = SignedCheck::new(&cfg, None);
        let run = RunResult {
            outcome: RunOutcome::Exited(Some(0)),
            outputs: BTreeMap::from([(PubKey([5; 32]), b"out".to_vec())]),
            io: UserIo::Raw,
        };
        let tree = OutputTree::of(&run, 2, &Hash([2; 32]));
        let root = tree.root();
        let sigs: Vec<(PubKey, Sig)> = keys.iter().map(|k| (k.public(), tree.sign(k))).collect();
        check.delivered(2, &Hash([2; 32]), &run);
        assert_eq!(
            check.signed(2, &root, &sigs[..2]),
            Ok(false),
            "2 of 3 is short"
        );
        assert!(check.signed(2, &root, &sigs).is_err(), "twice");
        check.delivered(2, &Hash([2; 32]), &run);
        let mut forged = sigs.clone();
        forged[1].1 = forged[0].1;
        assert!(check.signed(2, &root, &forged).is_err());
        check.delivered(2, &Hash([2; 32]), &run);
        assert_eq!(check.signed(2, &root, &sigs), Ok(true));
    }
}
