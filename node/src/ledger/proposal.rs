//! Signed consensus proposals.

use super::{Beacon, Ledger, LedgerId, Verdict};
use crate::crypto::{self, CryptoError, Hash, KeyRing, Keypair, PubKey, Sig};
use serde::{Deserialize, Serialize};

const PROPOSAL_DOMAIN: &str = "hotpocket/proposal/v1";

/// What one UNL node says in one stage of one round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub author: PubKey,
    pub round: u64,
    pub stage: u8,
    /// Proposed ledger close time, unix ms.
    pub time: u64,
    /// The author's last closed ledger.
    pub lcl: LedgerId,
    /// Proposed input hashes, sorted and distinct.
    pub inputs: Vec<Hash>,
    /// Runs without a verdict yet: in stages 0 and 1 the author's own
    /// results of those it has run; in stages 2 and 3 the verdicts it
    /// votes for (see `tally::verdicts`).
    pub results: Vec<Verdict>,
    /// The beacon: in stage 0 the author's own commit (and reveal), in
    /// stage 1 all it saw, in stages 2 and 3 what it votes for, and in
    /// stage 3 the outcome (see `consensus/node/beacon.rs`).
    pub beacon: Beacon,
}

impl Proposal {
    /// The ledger this proposal would close. Its hash identifies the
    /// candidate: two stage-3 proposals agree exactly when these are equal.
    pub fn candidate(&self) -> Ledger {
        Ledger {
            // Saturating: proof entries are checked before their signatures.
            seq: self.lcl.seq.saturating_add(1),
            prev: self.lcl.hash,
            time: self.time,
            inputs: self.inputs.clone(),
            verdicts: self.results.clone(),
            beacon: self.beacon.clone(),
        }
    }

    /// `candidate().hash()`, without copying the candidate's parts: every
    /// node hashes every stage-3 proposal it tallies.
    pub fn candidate_hash(&self) -> Hash {
        super::ledger_hash(
            self.lcl.seq.saturating_add(1),
            &self.lcl.hash,
            self.time,
            &self.inputs,
            &self.results,
            &self.beacon,
        )
    }

    /// Whether `other` would close the very same candidate: the fields
    /// `candidate` reads are equal, so the candidates' hashes are too.
    pub fn same_candidate(&self, other: &Proposal) -> bool {
        self.lcl == other.lcl
            && self.time == other.time
            && self.inputs == other.inputs
            && self.results == other.results
            && self.beacon == other.beacon
    }

    fn signing_bytes(&self) -> Vec<u8> {
        // postcard is deterministic for a given value: field order, varints,
        // no maps. That makes it the canonical encoding we sign.
        postcard::to_allocvec(self).expect("encoding into a Vec cannot fail")
    }

    /// Signs with `key`. A key other than `author`'s yields a proposal that
    /// fails verification, which is what the simulator's forger wants.
    pub fn sign(self, key: &Keypair) -> SignedProposal {
        self.sign_keeping_bytes(key).0
    }

    /// Signs, and hands back the bytes signed too: the wire encoding of
    /// the signed proposal starts with them (`PeerMessage::proposal_frame`),
    /// so a node encodes its proposal once, not once to sign and again to
    /// send.
    pub fn sign_keeping_bytes(self, key: &Keypair) -> (SignedProposal, Vec<u8>) {
        let signed = self.signing_bytes();
        let sig = key.sign(PROPOSAL_DOMAIN, &signed);
        let sp = SignedProposal {
            proposal: self,
            sig,
        };
        (sp, signed)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedProposal {
    pub proposal: Proposal,
    pub sig: Sig,
}

impl SignedProposal {
    /// Verifies against the UNL's cached keys.
    pub fn verify_with(&self, ring: &KeyRing) -> Result<(), CryptoError> {
        ring.verify(
            &self.proposal.author,
            PROPOSAL_DOMAIN,
            &self.proposal.signing_bytes(),
            &self.sig,
        )
    }

    /// `verify_with`, given the proposal's encoding when the caller has it
    /// (a memory of sent frames does), so as not to encode it again.
    /// `encoded` must be exactly `signing_bytes()`: bytes the proposal was
    /// decoded from are not enough, since a non-canonical encoding decodes
    /// too.
    pub fn verify_encoded(
        &self,
        ring: &KeyRing,
        encoded: Option<&[u8]>,
    ) -> Result<(), CryptoError> {
        let Some(encoded) = encoded else {
            return self.verify_with(ring);
        };
        // Encoding again defeats the point, so only in debug builds: every
        // test run checks that callers hand in the right bytes.
        debug_assert_eq!(
            encoded,
            self.proposal.signing_bytes(),
            "not this proposal's encoding"
        );
        ring.verify(&self.proposal.author, PROPOSAL_DOMAIN, encoded, &self.sig)
    }

    pub fn verify(&self) -> Result<(), CryptoError> {
        crypto::verify(
            &self.proposal.author,
            PROPOSAL_DOMAIN,
            &self.proposal.signing_bytes(),
            &self.sig,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &Keypair) -> Proposal {
        Proposal {
            author: key.public(),
            round: 7,
            stage: 3,
            time: 7000,
            lcl: LedgerId {
                seq: 4,
                hash: Hash([4; 32]),
            },
            inputs: vec![Hash([1; 32])],
            results: vec![Verdict {
                seq: 4,
                result: Some(crate::ledger::ExecResult {
                    state: Hash([2; 32]),
                    output: Hash([3; 32]),
                }),
            }],
            beacon: Default::default(),
        }
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let k = Keypair::from_seed([9; 32]);
        let sp = sample(&k).sign(&k);
        assert!(sp.verify().is_ok());
        let mut t = sp.clone();
        t.proposal.inputs.clear();
        assert!(t.verify().is_err());
        let mut t = sp.clone();
        t.proposal.stage = 2;
        assert!(t.verify().is_err());
        // Claiming another author with one's own signature fails.
        let other = Keypair::from_seed([8; 32]);
        let mut t = sp;
        t.proposal.author = other.public();
        assert!(t.verify().is_err());
    }

    #[test]
    fn same_candidate_means_same_hash() {
        let (a, b) = (Keypair::from_seed([9; 32]), Keypair::from_seed([8; 32]));
        // Another author, round and stage: the same candidate.
        let mut other = sample(&b);
        other.round = 8;
        other.stage = 2;
        assert!(sample(&a).same_candidate(&other));
        assert_eq!(sample(&a).candidate_hash(), other.candidate_hash());
        let changes: [fn(&mut Proposal); 5] = [
            |p| p.time += 1,
            |p| p.lcl.seq += 1,
            |p| p.inputs.clear(),
            |p| p.results.clear(),
            |p| {
                p.beacon.outcome = Some(Box::new(crate::beacon::Outcome {
                    value: Hash([5; 32]),
                    revealed: vec![],
                    absent: vec![],
                    fraud: vec![],
                }))
            },
        ];
        for change in changes {
            let mut p = sample(&a);
            change(&mut p);
            assert!(!sample(&a).same_candidate(&p));
            assert_ne!(sample(&a).candidate_hash(), p.candidate_hash());
        }
    }

    #[test]
    fn candidate_links_to_lcl() {
        let k = Keypair::from_seed([9; 32]);
        assert_eq!(sample(&k).candidate_hash(), sample(&k).candidate().hash());
        let c = sample(&k).candidate();
        assert_eq!(c.seq, 5);
        assert_eq!(c.prev, Hash([4; 32]));
    }
}
