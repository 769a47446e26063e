//! History sync: checking ledgers fetched from peers.
//!
//! A peer may lie. A fetched ledger is accepted only if it extends our chain
//! and carries its close proof: stage-3 proposals, signed by at least the
//! close threshold of distinct UNL members, each naming exactly this ledger.
//! Forging one therefore needs the keys of that many UNL members.

use crate::contract::input_hash;
use crate::crypto::{CryptoError, KeyRing, PubKey};
use crate::ledger::{check_link, ChainError, LedgerId, LedgerRecord};
use std::collections::BTreeSet;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SyncError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("ledger {seq}: proof has {got} valid signers, {needed} needed")]
    ProofTooSmall { seq: u64, got: usize, needed: usize },
    #[error("ledger {seq}: proof signer {signer:?} is not in the UNL")]
    ProofNotUnl { seq: u64, signer: PubKey },
    #[error("ledger {seq}: signer {signer:?} appears twice in the proof")]
    ProofDuplicate { seq: u64, signer: PubKey },
    #[error("ledger {seq}: proof entry is stage {stage}, not 3")]
    ProofStage { seq: u64, stage: u8 },
    #[error("ledger {seq}: proof entry by {signer:?} proposes a different ledger")]
    ProofMismatch { seq: u64, signer: PubKey },
    #[error("ledger {seq}: proof signature by {signer:?}: {err}")]
    ProofSignature {
        seq: u64,
        signer: PubKey,
        err: CryptoError,
    },
    #[error("ledger {seq}: carries a body that is not one of its inputs")]
    StrayBody { seq: u64 },
    #[error("ledger {seq}: a beacon signature or fraud proof does not hold")]
    BeaconEvidence { seq: u64 },
}

impl SyncError {
    /// What failed, without the seqs and keys: a name campaigns count by.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::Chain(ChainError::Seq { .. }) => "seq",
            SyncError::Chain(ChainError::Prev { .. }) => "prev",
            SyncError::Chain(ChainError::Hash { .. }) => "hash",
            SyncError::Chain(ChainError::Inputs { .. }) => "inputs",
            SyncError::Chain(ChainError::Verdicts { .. }) => "verdicts",
            SyncError::Chain(ChainError::Beacon { .. }) => "beacon",
            SyncError::ProofTooSmall { .. } => "proof-too-small",
            SyncError::ProofNotUnl { .. } => "proof-not-unl",
            SyncError::ProofDuplicate { .. } => "proof-duplicate",
            SyncError::ProofStage { .. } => "proof-stage",
            SyncError::ProofMismatch { .. } => "proof-mismatch",
            SyncError::ProofSignature { .. } => "proof-signature",
            SyncError::StrayBody { .. } => "stray-body",
            SyncError::BeaconEvidence { .. } => "beacon-evidence",
        }
    }
}

/// Checks that `rec` may follow `lcl`. Signatures are checked last: they are
/// the expensive part and a malformed record fails earlier.
pub fn verify_record(
    unl: &[PubKey],
    needed: usize,
    ring: &KeyRing,
    lcl: &LedgerId,
    rec: &LedgerRecord,
) -> Result<(), SyncError> {
    verify_record_signed(unl, needed, Some(ring), lcl, rec)
}

/// `verify_record`, with the proof's signatures left unchecked when `ring`
/// is `None`: only the planted bug `NoProofSignatureCheck` asks that.
pub(crate) fn verify_record_signed(
    unl: &[PubKey],
    needed: usize,
    ring: Option<&KeyRing>,
    lcl: &LedgerId,
    rec: &LedgerRecord,
) -> Result<(), SyncError> {
    let seq = rec.ledger.seq;
    check_link(lcl, &rec.ledger, &rec.hash)?;
    if rec.proof.len() < needed {
        return Err(SyncError::ProofTooSmall {
            seq,
            got: rec.proof.len(),
            needed,
        });
    }
    let mut signers = BTreeSet::new();
    for sp in &rec.proof {
        let p = &sp.proposal;
        if unl.binary_search(&p.author).is_err() {
            return Err(SyncError::ProofNotUnl {
                seq,
                signer: p.author,
            });
        }
        if !signers.insert(p.author) {
            return Err(SyncError::ProofDuplicate {
                seq,
                signer: p.author,
            });
        }
        if p.stage != 3 {
            return Err(SyncError::ProofStage {
                seq,
                stage: p.stage,
            });
        }
        if p.candidate_hash() != rec.hash {
            return Err(SyncError::ProofMismatch {
                seq,
                signer: p.author,
            });
        }
    }
    for (h, body) in &rec.bodies {
        if input_hash(body) != *h || rec.ledger.inputs.binary_search(h).is_err() {
            return Err(SyncError::StrayBody { seq });
        }
    }
    let Some(ring) = ring else {
        return Ok(());
    };
    for sp in &rec.proof {
        sp.verify_with(ring)
            .map_err(|err| SyncError::ProofSignature {
                seq,
                signer: sp.proposal.author,
                err,
            })?;
    }
    // The ledger hash names the beacon entries but not their signatures.
    if !rec.ledger.beacon.verify_evidence(ring) {
        return Err(SyncError::BeaconEvidence { seq });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::ConsensusConfig;
    use crate::consensus::Proposal;
    use crate::crypto::{Hash, Keypair};
    use crate::ledger::Ledger;
    use std::collections::BTreeMap;

    fn check(cfg: &ConsensusConfig, lcl: &LedgerId, rec: &LedgerRecord) -> Result<(), SyncError> {
        let needed = cfg.needed(cfg.close_threshold_pct);
        verify_record(&cfg.unl, needed, &KeyRing::new(&cfg.unl), lcl, rec)
    }

    fn setup() -> (ConsensusConfig, Vec<Keypair>, LedgerRecord, LedgerRecord) {
        let keys: Vec<Keypair> = (1..=5).map(|i| Keypair::from_seed([i; 32])).collect();
        let cfg = ConsensusConfig::new(keys.iter().map(|k| k.public()).collect());
        let g = LedgerRecord::genesis();
        let body = b"hello".to_vec();
        let ih = input_hash(&body);
        let proof = keys[..4]
            .iter()
            .map(|k| {
                Proposal {
                    author: k.public(),
                    round: 3,
                    stage: 3,
                    time: 3000,
                    lcl: g.id(),
                    inputs: vec![ih],
                    results: vec![],
                    beacon: crate::ledger::Beacon {
                        commits: vec![crate::beacon::SignedCommit::new(&keys[0], g.id())],
                        ..Default::default()
                    },
                }
                .sign(k)
            })
            .map(std::sync::Arc::new)
            .collect::<Vec<_>>();
        let ledger: Ledger = proof[0].proposal.candidate();
        let rec = LedgerRecord {
            hash: ledger.hash(),
            ledger,
            proof,
            bodies: BTreeMap::from([(ih, body)]),
        };
        (cfg, keys, g, rec)
    }

    #[test]
    fn accepts_a_proven_ledger() {
        let (cfg, _, g, rec) = setup();
        assert_eq!(check(&cfg, &g.id(), &rec), Ok(()));
    }

    #[test]
    fn rejects_a_ledger_whose_beacon_evidence_was_tampered_with() {
        // The hash names the commit, not its signature: only the evidence
        // check sees a copy whose signature was broken on the way.
        let (cfg, _, g, rec) = setup();
        let mut r = rec;
        r.ledger.beacon.commits[0].sig.0[0] ^= 1;
        assert_eq!(r.ledger.hash(), r.hash);
        assert_eq!(
            check(&cfg, &g.id(), &r),
            Err(SyncError::BeaconEvidence { seq: 1 })
        );
    }

    #[test]
    fn rejects_forgeries() {
        let (cfg, keys, g, rec) = setup();
        let mut r = rec.clone();
        r.proof.pop();
        assert!(matches!(
            check(&cfg, &g.id(), &r),
            Err(SyncError::ProofTooSmall { .. })
        ));

        let mut r = rec.clone();
        let dup = r.proof[0].clone();
        r.proof[1] = dup;
        assert!(matches!(
            check(&cfg, &g.id(), &r),
            Err(SyncError::ProofDuplicate { .. })
        ));

        // A changed ledger no longer matches what the signers proposed.
        let mut r = rec.clone();
        r.ledger.time += 1;
        r.hash = r.ledger.hash();
        assert!(matches!(
            check(&cfg, &g.id(), &r),
            Err(SyncError::ProofMismatch { .. })
        ));

        let mut r = rec.clone();
        std::sync::Arc::make_mut(&mut r.proof[2]).sig.0[0] ^= 1;
        assert!(matches!(
            check(&cfg, &g.id(), &r),
            Err(SyncError::ProofSignature { .. })
        ));

        // A key outside the UNL cannot vouch.
        let outsider = Keypair::from_seed([99; 32]);
        let mut r = rec.clone();
        let mut p = r.proof[3].proposal.clone();
        p.author = outsider.public();
        r.proof[3] = std::sync::Arc::new(p.sign(&outsider));
        assert!(matches!(
            check(&cfg, &g.id(), &r),
            Err(SyncError::ProofNotUnl { .. })
        ));

        let mut r = rec.clone();
        r.bodies.insert(input_hash(b"x"), b"x".to_vec());
        assert!(matches!(
            check(&cfg, &g.id(), &r),
            Err(SyncError::StrayBody { .. })
        ));

        // A proven ledger on another chain does not link.
        let other = LedgerId {
            seq: 0,
            hash: Hash([7; 32]),
        };
        assert!(matches!(
            check(&cfg, &other, &rec),
            Err(SyncError::Chain(_))
        ));
        let _ = keys;
    }
}
