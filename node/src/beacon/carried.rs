//! What a ledger or a proposal carries of the beacon: signed commits and
//! reveals, fraud proofs and a session's outcome, how the ledger hash
//! covers them, and the bounds a peer's part must keep.

use super::{FraudProof, Outcome, SignedCommit, SignedReveal};
use crate::crypto::{Hash, Hasher, KeyRing, PubKey};
use crate::ledger_id::LedgerId;
use serde::{Deserialize, Serialize};

const BEACON_DOMAIN: &str = "hotpocket/ledger-beacon/v1";

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
    /// What the ledger hash chains: the content of every entry, not its
    /// signature. A node may sign its own message any number of ways (and
    /// make any number of proofs against itself), so two honest nodes can
    /// hold different valid copies of one entry; if the copies were hashed,
    /// a byzantine node could split the candidates with a second signature
    /// sent to some of them. Each node keeps copies whose signatures it
    /// checked (see `verify_evidence`): the evidence, not the name.
    pub fn digest(&self) -> Hash {
        let mut h = Hasher::new(BEACON_DOMAIN);
        h.u64(self.commits.len() as u64);
        for c in &self.commits {
            h.bytes(&c.author.0)
                .u64(c.lcl.seq)
                .hash(&c.lcl.hash)
                .hash(&c.commitment);
        }
        h.u64(self.frauds.len() as u64);
        for p in &self.frauds {
            let lcl = p.lcl();
            h.bytes(&p.accused().0).u64(lcl.seq).hash(&lcl.hash);
        }
        h.u64(self.reveals.len() as u64);
        for r in &self.reveals {
            h.bytes(&r.author.0)
                .u64(r.lcl.seq)
                .hash(&r.lcl.hash)
                .bytes(&r.secret);
        }
        match &self.outcome {
            None => h.u64(0),
            Some(o) => {
                h.u64(1).hash(&o.value);
                for keys in [&o.revealed, &o.absent] {
                    h.u64(keys.len() as u64);
                    keys.iter().for_each(|k| {
                        h.bytes(&k.0);
                    });
                }
                h.u64(o.fraud.len() as u64);
                o.fraud.iter().for_each(|p| {
                    h.bytes(&p.accused().0);
                });
                &mut h
            }
        };
        h.finish()
    }

    /// Whether every signature and proof holds: what a node checks before
    /// it keeps a ledger it did not build itself, since the hash does not
    /// cover signatures.
    pub fn verify_evidence(&self, ring: &KeyRing) -> bool {
        self.commits.iter().all(|c| c.verify_with(ring).is_ok())
            && self.reveals.iter().all(|r| r.verify_with(ring).is_ok())
            && (self.frauds.iter())
                .chain(self.outcome.iter().flat_map(|o| &o.fraud))
                .all(|p| p.verify(ring).is_ok())
    }

    /// Whether a peer's beacon part on `lcl` is within bounds for a UNL of
    /// `unl` nodes: at most two commits and two reveals per author (one
    /// more than an honest node makes, so a double commit can be shown)
    /// and two per UNL node in all, sorted and distinct, for the right
    /// sessions. Signatures are checked where entries are counted.
    pub fn well_formed(&self, lcl: LedgerId, unl: usize) -> bool {
        let most = unl.saturating_mul(2);
        let reveal_session = |r: &SignedReveal| r.lcl.seq.checked_add(1) == Some(lcl.seq);
        self.commits.len() <= most
            && self.commits.iter().all(|c| c.lcl == lcl)
            && increasing(&self.commits, |c| (c.author, c.commitment.0))
            && at_most_two_each(&self.commits, |c| c.author)
            && self.reveals.len() <= most
            && self.reveals.iter().all(reveal_session)
            && self.reveals.windows(2).all(|w| w[0].lcl == w[1].lcl)
            && increasing(&self.reveals, |r| (r.author, r.secret))
            && at_most_two_each(&self.reveals, |r| r.author)
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

/// Keeps at most the first two entries of each author in `items` (sorted
/// by author), so what a node proposes is always well formed.
pub fn two_each<T>(items: &mut Vec<T>, author: impl Fn(&T) -> PubKey) {
    let mut last: Option<(PubKey, usize)> = None;
    items.retain(|x| {
        let a = author(x);
        let n = match last {
            Some((k, n)) if k == a => n + 1,
            _ => 1,
        };
        last = Some((a, n));
        n <= 2
    });
}

/// In a list sorted by author, no author has more than two entries.
fn at_most_two_each<T>(items: &[T], author: impl Fn(&T) -> PubKey) -> bool {
    items.windows(3).all(|w| author(&w[0]) != author(&w[2]))
}

fn increasing<T, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> bool {
    items.windows(2).all(|w| key(&w[0]) < key(&w[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beacon::testkit::{keys, lcl, unl};

    fn sample() -> Beacon {
        let ks = keys(3);
        let mut commits: Vec<SignedCommit> =
            ks.iter().map(|k| SignedCommit::new(k, lcl(5))).collect();
        commits.sort_by_key(|c| (c.author, c.commitment));
        let mut reveals: Vec<SignedReveal> =
            ks.iter().map(|k| SignedReveal::new(k, lcl(4))).collect();
        reveals.sort_by_key(|r| (r.author, r.secret));
        Beacon {
            commits,
            reveals,
            ..Beacon::default()
        }
    }

    #[test]
    fn the_digest_names_content_not_signatures() {
        let b = sample();
        let ring = KeyRing::new(&unl(&keys(3)));
        assert!(b.verify_evidence(&ring));
        // Another signature on the same entry: same digest, and the forged
        // copy fails the evidence check instead.
        let mut forged = b.clone();
        forged.reveals[0].sig.0 = [0; 64];
        assert_eq!(forged.digest(), b.digest());
        assert!(!forged.verify_evidence(&ring));
        // Any change of content: another digest.
        let changes: [fn(&mut Beacon); 4] = [
            |b| b.reveals[1].secret[0] ^= 1,
            |b| b.commits[2].commitment.0[0] ^= 1,
            |b| {
                b.commits.pop();
            },
            |b| {
                b.outcome = Some(Box::new(Outcome {
                    value: Hash::ZERO,
                    revealed: vec![],
                    absent: vec![],
                    fraud: vec![],
                }))
            },
        ];
        for change in changes {
            let mut c = b.clone();
            change(&mut c);
            assert_ne!(c.digest(), b.digest(), "{c:?}");
        }
    }

    #[test]
    fn two_entries_per_author_at_most() {
        let k = &keys(1)[0];
        let mut three: Vec<SignedCommit> = (0..3u8)
            .map(|i| SignedCommit::sign(k, lcl(5), Hash([i; 32])))
            .collect();
        let b = |commits: Vec<SignedCommit>| Beacon {
            commits,
            ..Beacon::default()
        };
        assert!(!b(three.clone()).well_formed(lcl(5), 4));
        two_each(&mut three, |c| c.author);
        assert_eq!(three.len(), 2);
        assert!(b(three).well_formed(lcl(5), 4));
    }
}
