//! Ledgers and the hash chain they form.
//!
//! Ledgers carry verdicts on earlier runs: the state and output hashes of
//! running ledger N, once enough of the UNL agreed on them (usually in
//! ledger N+1), or that the copies disagreed and run N is uncertified.
//! Input ordering never waits for a verdict: contracts that talk over the
//! node party line may diverge, and the chain goes on.

use crate::crypto::{Hash, Hasher};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

mod proposal;

pub use crate::beacon::Beacon;
pub use crate::ledger_id::LedgerId;
pub use proposal::{Proposal, SignedProposal};

/// State and output hashes of one contract run: what the next ledger
/// certifies. Here rather than in `contract` because ledgers carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    pub state: Hash,
    pub output: Hash,
}

const LEDGER_DOMAIN: &str = "hotpocket/ledger/v1";

/// The agreed content of one consensus round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub seq: u64,
    /// Hash of ledger `seq - 1` (zero for genesis).
    pub prev: Hash,
    /// Agreed close time, unix milliseconds.
    pub time: u64,
    /// Agreed input hashes, sorted and distinct.
    pub inputs: Vec<Hash>,
    /// Verdicts on the runs of ledgers before this one: consecutive seqs
    /// from the first run the chain had no verdict on.
    pub verdicts: Vec<Verdict>,
    /// The random beacon's commits, reveals, frauds and outcome.
    pub beacon: Beacon,
}

/// What the UNL agreed about running ledger `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub seq: u64,
    /// The certified result, or `None`: the copies' results differ so that
    /// none can reach the threshold, and the run stays uncertified.
    pub result: Option<ExecResult>,
}

/// Most verdicts one ledger (or proposal) carries: runs a ledger may
/// catch up on after rounds without one.
pub const MAX_VERDICTS: usize = 16;

impl Ledger {
    pub fn genesis() -> Ledger {
        Ledger {
            seq: 0,
            prev: Hash::ZERO,
            time: 0,
            inputs: vec![],
            verdicts: vec![],
            beacon: Beacon::default(),
        }
    }

    /// sha256 over the previous hash and the ledger's content, in a fixed,
    /// length-prefixed order.
    pub fn hash(&self) -> Hash {
        ledger_hash(
            self.seq,
            &self.prev,
            self.time,
            &self.inputs,
            &self.verdicts,
            &self.beacon,
        )
    }
}

/// [`Ledger::hash`] of a ledger with these parts, which a proposal names
/// without being one (`Proposal::candidate_hash`).
pub(crate) fn ledger_hash(
    seq: u64,
    prev: &Hash,
    time: u64,
    inputs: &[Hash],
    verdicts: &[Verdict],
    beacon: &Beacon,
) -> Hash {
    let mut h = Hasher::new(LEDGER_DOMAIN);
    h.hash(prev).u64(seq).u64(time);
    h.u64(inputs.len() as u64);
    for i in inputs {
        h.hash(i);
    }
    h.u64(verdicts.len() as u64);
    for v in verdicts {
        h.u64(v.seq);
        match &v.result {
            None => h.u64(0),
            Some(r) => h.u64(1).hash(&r.state).hash(&r.output),
        };
    }
    h.hash(&beacon.digest());
    h.finish()
}

/// A ledger as a node keeps it: with its hash, the input bodies it knows, and
/// the signed stage-3 proposals that closed it (empty for genesis).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRecord {
    pub ledger: Ledger,
    pub hash: Hash,
    /// Shared with the proposal book that held them (and, in the
    /// simulator, with every node that received them): a proof is a
    /// threshold of whole proposals, each listing the UNL's beacon parts.
    pub proof: Vec<Arc<SignedProposal>>,
    pub bodies: BTreeMap<Hash, Vec<u8>>,
}

impl LedgerRecord {
    pub fn genesis() -> LedgerRecord {
        let ledger = Ledger::genesis();
        LedgerRecord {
            hash: ledger.hash(),
            ledger,
            proof: vec![],
            bodies: BTreeMap::new(),
        }
    }
    /// Bytes it takes encoded, as on the wire and in the store. Measured,
    /// not estimated: a proof repeats the ledger's input list once per
    /// signer, so sizes vary a lot.
    pub fn encoded_len(&self) -> usize {
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }
    pub fn id(&self) -> LedgerId {
        LedgerId {
            seq: self.ledger.seq,
            hash: self.hash,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("ledger {got} does not follow ledger {prev}")]
    Seq { prev: u64, got: u64 },
    #[error("ledger {seq} names predecessor {named:?}, chain has {actual:?}")]
    Prev { seq: u64, named: Hash, actual: Hash },
    #[error("ledger {seq} claims hash {claimed:?}, content hashes to {actual:?}")]
    Hash {
        seq: u64,
        claimed: Hash,
        actual: Hash,
    },
    #[error("ledger {seq} inputs are not sorted and distinct")]
    Inputs { seq: u64 },
    #[error("ledger {seq} has verdicts that are not consecutive runs before it")]
    Verdicts { seq: u64 },
    #[error("ledger {seq} has beacon entries out of order or for other sessions")]
    Beacon { seq: u64 },
}

/// Checks that `next` extends `prev`: consecutive seq, linked hash, hash that
/// matches the content, canonical input order.
pub fn check_link(prev: &LedgerId, next: &Ledger, claimed: &Hash) -> Result<(), ChainError> {
    if next.seq != prev.seq + 1 {
        return Err(ChainError::Seq {
            prev: prev.seq,
            got: next.seq,
        });
    }
    if next.prev != prev.hash {
        return Err(ChainError::Prev {
            seq: next.seq,
            named: next.prev,
            actual: prev.hash,
        });
    }
    let actual = next.hash();
    if actual != *claimed {
        return Err(ChainError::Hash {
            seq: next.seq,
            claimed: *claimed,
            actual,
        });
    }
    if !next.inputs.windows(2).all(|w| w[0] < w[1]) {
        return Err(ChainError::Inputs { seq: next.seq });
    }
    if !verdicts_well_formed(&next.verdicts, next.seq) {
        return Err(ChainError::Verdicts { seq: next.seq });
    }
    // The UNL's size is not known here; the close proof bounds the rest.
    if !next.beacon.well_formed(*prev, usize::MAX / 4) {
        return Err(ChainError::Beacon { seq: next.seq });
    }
    Ok(())
}

/// At most `MAX_VERDICTS`, on consecutive runs before ledger `seq`. Which
/// run they start at is the chain's to check.
pub fn verdicts_well_formed(verdicts: &[Verdict], seq: u64) -> bool {
    verdicts.len() <= MAX_VERDICTS
        && verdicts
            .windows(2)
            .all(|w| w[0].seq.checked_add(1) == Some(w[1].seq))
        && verdicts.last().is_none_or(|v| v.seq < seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(prev: &LedgerRecord) -> Ledger {
        Ledger {
            seq: prev.ledger.seq + 1,
            prev: prev.hash,
            time: 1000,
            inputs: vec![Hash([1; 32]), Hash([2; 32])],
            verdicts: vec![verdict(0, 3, 4)],
            beacon: Beacon::default(),
        }
    }

    fn verdict(seq: u64, state: u8, output: u8) -> Verdict {
        Verdict {
            seq,
            result: Some(ExecResult {
                state: Hash([state; 32]),
                output: Hash([output; 32]),
            }),
        }
    }

    #[test]
    fn hash_covers_every_field() {
        let base = child(&LedgerRecord::genesis());
        let h = base.hash();
        let variants = [
            Ledger {
                seq: 2,
                ..base.clone()
            },
            Ledger {
                prev: Hash([9; 32]),
                ..base.clone()
            },
            Ledger {
                time: 1001,
                ..base.clone()
            },
            Ledger {
                inputs: vec![Hash([1; 32])],
                ..base.clone()
            },
            Ledger {
                verdicts: vec![verdict(0, 5, 4)],
                ..base.clone()
            },
            Ledger {
                verdicts: vec![verdict(0, 3, 5)],
                ..base.clone()
            },
            Ledger {
                verdicts: vec![Verdict {
                    seq: 0,
                    result: None,
                }],
                ..base.clone()
            },
            Ledger {
                verdicts: vec![],
                ..base.clone()
            },
            Ledger {
                beacon: Beacon {
                    outcome: Some(Box::new(crate::beacon::Outcome {
                        value: Hash([1; 32]),
                        revealed: vec![],
                        absent: vec![],
                        fraud: vec![],
                    })),
                    ..Beacon::default()
                },
                ..base.clone()
            },
        ];
        for v in variants {
            assert_ne!(v.hash(), h, "{v:?}");
        }
        assert_eq!(base.clone().hash(), h);
    }

    #[test]
    fn genesis_hash_is_stable() {
        // Golden value: changing the ledger encoding must be a conscious act.
        assert_eq!(
            Ledger::genesis().hash().to_string(),
            "9c61447e1d7877e6848d8a6ff21e680a2062caffc0efd31402559b69cbe7edca"
        );
    }

    #[test]
    fn check_link_rejects_breaks() {
        let g = LedgerRecord::genesis();
        let l = child(&g);
        let h = l.hash();
        assert_eq!(check_link(&g.id(), &l, &h), Ok(()));
        assert!(matches!(
            check_link(&g.id(), &l, &Hash::ZERO),
            Err(ChainError::Hash { .. })
        ));
        let skip = Ledger {
            seq: 2,
            ..l.clone()
        };
        assert!(matches!(
            check_link(&g.id(), &skip, &skip.hash()),
            Err(ChainError::Seq { .. })
        ));
        let wrong_prev = Ledger {
            prev: Hash([8; 32]),
            ..l.clone()
        };
        assert!(matches!(
            check_link(&g.id(), &wrong_prev, &wrong_prev.hash()),
            Err(ChainError::Prev { .. })
        ));
        let unsorted = Ledger {
            inputs: vec![Hash([2; 32]), Hash([1; 32])],
            ..l
        };
        assert!(matches!(
            check_link(&g.id(), &unsorted, &unsorted.hash()),
            Err(ChainError::Inputs { .. })
        ));
    }
}
