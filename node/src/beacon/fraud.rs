//! Fraud proofs: signed evidence that a node cheated in a beacon session,
//! checkable by anyone with the UNL's keys and nothing else.

use super::{SignedCommit, SignedReveal};
use crate::crypto::{CryptoError, KeyRing, PubKey};
use crate::ledger_id::LedgerId;
use serde::{Deserialize, Serialize};

/// Why a supposed fraud proof proves nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FraudError {
    #[error("evidence is signed by two nodes, {first:?} and {second:?}")]
    Authors { first: PubKey, second: PubKey },
    #[error("evidence is from two sessions, {first:?} and {second:?}")]
    Sessions { first: LedgerId, second: LedgerId },
    #[error("both commits are to the same commitment")]
    SameCommitment,
    #[error("the reveal opens the commitment")]
    RevealMatches,
    #[error("evidence signed by {author:?}: {err}")]
    Signature { author: PubKey, err: CryptoError },
}

/// Evidence that one node cheated in the session on one lcl. Each variant
/// carries the node's own signed messages, so it convicts on its own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FraudProof {
    /// Two different commitments, both signed by the node, for one session.
    DoubleCommit(SignedCommit, SignedCommit),
    /// A signed reveal that does not open the node's signed commitment.
    BadReveal(SignedCommit, SignedReveal),
}

impl FraudProof {
    /// A double commit with its two commits in order, so the same evidence
    /// always makes the same proof.
    pub fn double_commit(a: SignedCommit, b: SignedCommit) -> FraudProof {
        if b < a {
            FraudProof::DoubleCommit(b, a)
        } else {
            FraudProof::DoubleCommit(a, b)
        }
    }

    /// The node the proof accuses, whether or not it holds.
    pub fn accused(&self) -> PubKey {
        match self {
            FraudProof::DoubleCommit(a, _) | FraudProof::BadReveal(a, _) => a.author,
        }
    }

    /// The session the proof is about, whether or not it holds.
    pub fn lcl(&self) -> LedgerId {
        match self {
            FraudProof::DoubleCommit(a, _) | FraudProof::BadReveal(a, _) => a.lcl,
        }
    }

    /// Checks the proof and returns the node it convicts. The cheap checks
    /// come first; signatures last. Whether the node is in the UNL is the
    /// caller's to check: the ring verifies unknown keys too.
    pub fn verify(&self, ring: &KeyRing) -> Result<PubKey, FraudError> {
        let (first, second) = match self {
            FraudProof::DoubleCommit(a, b) => ((a.author, a.lcl), (b.author, b.lcl)),
            FraudProof::BadReveal(c, r) => ((c.author, c.lcl), (r.author, r.lcl)),
        };
        if first.0 != second.0 {
            return Err(FraudError::Authors {
                first: first.0,
                second: second.0,
            });
        }
        if first.1 != second.1 {
            return Err(FraudError::Sessions {
                first: first.1,
                second: second.1,
            });
        }
        let author = first.0;
        let sig = |err| FraudError::Signature { author, err };
        match self {
            FraudProof::DoubleCommit(a, b) => {
                if a.commitment == b.commitment {
                    return Err(FraudError::SameCommitment);
                }
                a.verify_with(ring).map_err(sig)?;
                b.verify_with(ring).map_err(sig)?;
            }
            FraudProof::BadReveal(c, r) => {
                if r.opens(c) {
                    return Err(FraudError::RevealMatches);
                }
                c.verify_with(ring).map_err(sig)?;
                r.verify_with(ring).map_err(sig)?;
            }
        }
        Ok(author)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beacon::testkit::{keys, lcl};
    use crate::crypto::Hash;

    #[test]
    fn real_fraud_is_proved() {
        let ks = keys(2);
        let ring = KeyRing::new(&[ks[0].public(), ks[1].public()]);
        let honest = SignedCommit::new(&ks[0], lcl(4));
        let other = SignedCommit::sign(&ks[0], lcl(4), Hash([1; 32]));
        let p = FraudProof::double_commit(honest.clone(), other.clone());
        assert_eq!(p.verify(&ring), Ok(ks[0].public()));
        // Either order is the same proof, and verifies.
        assert_eq!(p, FraudProof::double_commit(other.clone(), honest.clone()));
        let swapped = FraudProof::DoubleCommit(other.clone(), honest.clone());
        assert_eq!(swapped.verify(&ring), Ok(ks[0].public()));
        let lie = SignedReveal::sign(&ks[0], lcl(4), [0; 32]);
        let p = FraudProof::BadReveal(honest.clone(), lie);
        assert_eq!(p.verify(&ring), Ok(ks[0].public()));
        assert_eq!(p.accused(), ks[0].public());
        assert_eq!(p.lcl(), lcl(4));
        // An honest reveal against a commitment to something else.
        let p = FraudProof::BadReveal(other, SignedReveal::new(&ks[0], lcl(4)));
        assert_eq!(p.verify(&ring), Ok(ks[0].public()));
        // Proofs travel through postcard and still verify.
        let back: FraudProof = postcard::from_bytes(&postcard::to_allocvec(&p).unwrap()).unwrap();
        assert_eq!(back.verify(&ring), Ok(ks[0].public()));
    }

    #[test]
    fn fake_proofs_are_rejected() {
        let ks = keys(2);
        let ring = KeyRing::new(&[ks[0].public(), ks[1].public()]);
        let (a, b) = (&ks[0], &ks[1]);
        let honest = SignedCommit::new(a, lcl(4));
        let reveal = SignedReveal::new(a, lcl(4));
        let commit_to = |k, l, h: u8| SignedCommit::sign(k, lcl(l), Hash([h; 32]));
        // The same commitment twice, even signed twice.
        let again = SignedCommit::new(a, lcl(4));
        assert_eq!(
            FraudProof::DoubleCommit(honest.clone(), again).verify(&ring),
            Err(FraudError::SameCommitment)
        );
        // A reveal that opens its commitment.
        assert_eq!(
            FraudProof::BadReveal(honest.clone(), reveal.clone()).verify(&ring),
            Err(FraudError::RevealMatches)
        );
        // Two nodes' commits: no one node said two things.
        assert_eq!(
            FraudProof::DoubleCommit(honest.clone(), commit_to(b, 4, 1)).verify(&ring),
            Err(FraudError::Authors {
                first: a.public(),
                second: b.public()
            })
        );
        // Another node's reveal does not open the commitment, and proves
        // nothing about either.
        let theirs = SignedReveal::new(b, lcl(4));
        assert!(matches!(
            FraudProof::BadReveal(honest.clone(), theirs).verify(&ring),
            Err(FraudError::Authors { .. })
        ));
        // Two sessions: a node commits anew each ledger.
        assert!(matches!(
            FraudProof::DoubleCommit(honest.clone(), commit_to(a, 5, 1)).verify(&ring),
            Err(FraudError::Sessions { .. })
        ));
        assert!(matches!(
            FraudProof::BadReveal(honest.clone(), SignedReveal::new(a, lcl(5))).verify(&ring),
            Err(FraudError::Sessions { .. })
        ));
        // Bad signatures, on either part of either kind.
        let mut forged = commit_to(a, 4, 1);
        forged.sig.0[0] ^= 1;
        let bad_sig = Err(FraudError::Signature {
            author: a.public(),
            err: CryptoError::BadSignature,
        });
        assert_eq!(
            FraudProof::DoubleCommit(honest.clone(), forged.clone()).verify(&ring),
            bad_sig
        );
        assert_eq!(
            FraudProof::DoubleCommit(forged.clone(), honest.clone()).verify(&ring),
            bad_sig
        );
        let mut forged_reveal = SignedReveal::sign(a, lcl(4), [0; 32]);
        forged_reveal.sig.0[0] ^= 1;
        assert_eq!(
            FraudProof::BadReveal(honest.clone(), forged_reveal).verify(&ring),
            bad_sig
        );
        assert_eq!(FraudProof::BadReveal(forged, reveal).verify(&ring), bad_sig);
        // Someone else signing in the node's name.
        let mut framed = commit_to(b, 4, 1);
        framed.author = a.public();
        assert_eq!(
            FraudProof::DoubleCommit(honest, framed).verify(&ring),
            bad_sig
        );
    }
}
