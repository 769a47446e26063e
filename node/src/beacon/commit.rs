//! Signed commitments and reveals, and the secrets behind them.

use crate::crypto::{self, CryptoError, Hash, Hasher, KeyRing, Keypair, PubKey, Sig};
use crate::ledger_id::LedgerId;
use serde::{Deserialize, Serialize};

const COMMIT_DOMAIN: &str = "hotpocket/beacon-commit/v1";
const REVEAL_DOMAIN: &str = "hotpocket/beacon-reveal/v1";
const COMMITMENT_DOMAIN: &str = "hotpocket/beacon-commitment/v1";
const SECRET_DOMAIN: &str = "hotpocket/beacon-secret/v1";

/// What a node commits to: `H(domain ‖ lcl ‖ author ‖ secret)`. The author
/// is inside so one node cannot copy another's commitment and later reveal
/// the same secret as its own; the lcl is inside so a commitment is good
/// for one session only.
pub fn commitment(lcl: &LedgerId, author: &PubKey, secret: &[u8; 32]) -> Hash {
    Hasher::new(COMMITMENT_DOMAIN)
        .u64(lcl.seq)
        .hash(&lcl.hash)
        .bytes(&author.0)
        .bytes(secret)
        .finish()
}

/// The secret `key`'s node uses in the session on `lcl`: a keyed hash of
/// the node's secret key and the lcl (seq and hash), under its own domain.
///
/// Unpredictable to anyone without the key, and fixed per lcl: a node that
/// restarts between commit and reveal recomputes the same secret, so its
/// reveal still matches; a round that fails to close and is proposed again
/// commits to the same value, never a second one (which would be fraud);
/// and the node cannot re-roll its secret. Nobody else can check the
/// derivation, so this does not stop a byzantine node from committing to a
/// secret of its choosing: what bounds it is the order, commitments fixed
/// in a ledger before anyone reveals.
pub fn secret_for(key: &Keypair, lcl: &LedgerId) -> [u8; 32] {
    key.derive_secret(SECRET_DOMAIN, &encode(lcl))
}

/// postcard is deterministic for a given value (field order, varints, no
/// maps): the canonical encoding we sign, as for proposals.
fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("encoding into a Vec cannot fail")
}

/// A node's commitment for the beacon session on `lcl`, the ledger the
/// commitments are proposed on (they go into the next one).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SignedCommit {
    pub author: PubKey,
    pub lcl: LedgerId,
    pub commitment: Hash,
    pub sig: Sig,
}

impl SignedCommit {
    /// The honest commit: to this node's own secret for `lcl`.
    pub fn new(key: &Keypair, lcl: LedgerId) -> SignedCommit {
        let c = commitment(&lcl, &key.public(), &secret_for(key, &lcl));
        SignedCommit::sign(key, lcl, c)
    }

    /// Signs any commitment, as `key`'s node: what tests and the
    /// simulator's double committers use.
    pub fn sign(key: &Keypair, lcl: LedgerId, commitment: Hash) -> SignedCommit {
        let author = key.public();
        let sig = key.sign(COMMIT_DOMAIN, &encode(&(&author, &lcl, &commitment)));
        SignedCommit {
            author,
            lcl,
            commitment,
            sig,
        }
    }

    fn signing_bytes(&self) -> Vec<u8> {
        encode(&(&self.author, &self.lcl, &self.commitment))
    }

    /// Verifies against the UNL's cached keys. Membership is the caller's
    /// to check: the ring verifies unknown keys too.
    pub fn verify_with(&self, ring: &KeyRing) -> Result<(), CryptoError> {
        ring.verify(
            &self.author,
            COMMIT_DOMAIN,
            &self.signing_bytes(),
            &self.sig,
        )
    }

    pub fn verify(&self) -> Result<(), CryptoError> {
        crypto::verify(
            &self.author,
            COMMIT_DOMAIN,
            &self.signing_bytes(),
            &self.sig,
        )
    }
}

/// A node's secret for the session on `lcl`, revealed once the ledger
/// holding the session's commitments has closed. It still names the
/// session's lcl, not the ledger it is proposed on, so a reveal and its
/// commit always name the same lcl.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SignedReveal {
    pub author: PubKey,
    pub lcl: LedgerId,
    pub secret: [u8; 32],
    pub sig: Sig,
}

impl SignedReveal {
    /// The honest reveal: this node's own secret for `lcl`.
    pub fn new(key: &Keypair, lcl: LedgerId) -> SignedReveal {
        SignedReveal::sign(key, lcl, secret_for(key, &lcl))
    }

    /// Signs any secret, as `key`'s node: what tests and the simulator's
    /// lying revealers use.
    pub fn sign(key: &Keypair, lcl: LedgerId, secret: [u8; 32]) -> SignedReveal {
        let author = key.public();
        let sig = key.sign(REVEAL_DOMAIN, &encode(&(&author, &lcl, &secret)));
        SignedReveal {
            author,
            lcl,
            secret,
            sig,
        }
    }

    fn signing_bytes(&self) -> Vec<u8> {
        encode(&(&self.author, &self.lcl, &self.secret))
    }

    pub fn verify_with(&self, ring: &KeyRing) -> Result<(), CryptoError> {
        ring.verify(
            &self.author,
            REVEAL_DOMAIN,
            &self.signing_bytes(),
            &self.sig,
        )
    }

    pub fn verify(&self) -> Result<(), CryptoError> {
        crypto::verify(
            &self.author,
            REVEAL_DOMAIN,
            &self.signing_bytes(),
            &self.sig,
        )
    }

    /// Whether this reveal opens `commit`: same author, same session, and
    /// the secret hashes to the commitment. Signatures are not checked.
    pub fn opens(&self, commit: &SignedCommit) -> bool {
        self.author == commit.author
            && self.lcl == commit.lcl
            && commitment(&self.lcl, &self.author, &self.secret) == commit.commitment
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beacon::testkit::{keys, lcl};

    #[test]
    fn honest_commit_and_reveal_round_trip() {
        let k = &keys(1)[0];
        let ring = KeyRing::new(&[k.public()]);
        let c = SignedCommit::new(k, lcl(4));
        let r = SignedReveal::new(k, lcl(4));
        assert_eq!(c.verify_with(&ring), Ok(()));
        assert_eq!(r.verify_with(&ring), Ok(()));
        assert_eq!(c.verify(), Ok(()));
        assert_eq!(r.verify(), Ok(()));
        assert!(r.opens(&c));
        assert_eq!(c.commitment, commitment(&lcl(4), &k.public(), &r.secret));
        // Through postcard and back, still verifying and matching.
        let c2: SignedCommit = postcard::from_bytes(&encode(&c)).unwrap();
        let r2: SignedReveal = postcard::from_bytes(&encode(&r)).unwrap();
        assert_eq!((&c2, &r2), (&c, &r));
        assert!(r2.opens(&c2) && c2.verify().is_ok() && r2.verify().is_ok());
        // Another session's reveal, another secret, another author's: no.
        assert!(!SignedReveal::new(k, lcl(5)).opens(&c));
        assert!(!SignedReveal::sign(k, lcl(4), [0; 32]).opens(&c));
        let other = &keys(2)[1];
        assert!(!SignedReveal::sign(other, lcl(4), r.secret).opens(&c));
    }

    #[test]
    fn tampered_commits_and_reveals_fail() {
        let ks = keys(2);
        let ring = KeyRing::new(&[ks[0].public(), ks[1].public()]);
        let c = SignedCommit::new(&ks[0], lcl(4));
        let commit_tampers: [fn(&mut SignedCommit); 5] = [
            |c| c.commitment.0[0] ^= 1,
            |c| c.lcl.seq += 1,
            |c| c.lcl.hash.0[0] ^= 1,
            |c| c.sig.0[0] ^= 1,
            |c| c.author = PubKey([0; 32]),
        ];
        for tamper in commit_tampers {
            let mut t = c.clone();
            tamper(&mut t);
            assert!(t.verify_with(&ring).is_err(), "{t:?}");
        }
        let r = SignedReveal::new(&ks[0], lcl(4));
        let reveal_tampers: [fn(&mut SignedReveal); 4] = [
            |r| r.secret[31] ^= 1,
            |r| r.lcl.seq += 1,
            |r| r.sig.0[63] ^= 1,
            |r| r.author = PubKey([0; 32]),
        ];
        for tamper in reveal_tampers {
            let mut t = r.clone();
            tamper(&mut t);
            assert!(t.verify_with(&ring).is_err(), "{t:?}");
        }
        // Another node's name on one's own signature.
        let mut t = c.clone();
        t.author = ks[1].public();
        assert_eq!(t.verify_with(&ring), Err(CryptoError::BadSignature));
        // A commit signature does not pass as a reveal's over equal bytes:
        // the domains differ.
        let mut t = r;
        t.sig = ks[0].sign(COMMIT_DOMAIN, &t.signing_bytes());
        assert_eq!(t.verify_with(&ring), Err(CryptoError::BadSignature));
    }

    #[test]
    fn secrets_are_stable_and_differ_per_lcl_and_key() {
        let ks = keys(2);
        let s = secret_for(&ks[0], &lcl(4));
        // A restarted node rebuilds its key from the same seed.
        assert_eq!(s, secret_for(&keys(1)[0], &lcl(4)));
        assert_ne!(s, secret_for(&ks[1], &lcl(4)));
        assert_ne!(s, secret_for(&ks[0], &lcl(5)));
        let mut same_seq = lcl(4);
        same_seq.hash.0[0] ^= 1;
        assert_ne!(s, secret_for(&ks[0], &same_seq));
        // Neither the commitment nor the contract seed gives it away.
        assert_ne!(s, ks[0].contract_seed());
        assert_ne!(s, commitment(&lcl(4), &ks[0].public(), &s).0);
        // An honest node re-signing after a restart signs the same thing.
        assert_eq!(
            SignedCommit::new(&ks[0], lcl(4)).commitment,
            SignedCommit::new(&keys(1)[0], lcl(4)).commitment
        );
    }

    #[test]
    fn commitment_encoding_is_stable() {
        // Golden value, also computed by hand from the documented layout
        // (length-prefixed domain, seq as u64 LE, lcl hash, length-prefixed
        // key and secret): changing it must be a conscious act, as
        // commitments are kept in ledgers.
        let h = commitment(&lcl(4), &PubKey([7; 32]), &[9; 32]);
        assert_eq!(
            h.to_string(),
            "a4986aa9b63ce21c12853b8a1ccbc575bfc8322a4219f711d612293dd28ab080"
        );
    }
}
