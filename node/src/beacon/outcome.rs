//! The outcome of one beacon session, from its agreed commits and reveals.

use super::{FraudProof, SignedCommit, SignedReveal};
use crate::crypto::{Hash, Hasher, KeyRing, PubKey};
use crate::ledger_id::LedgerId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a session produced. Every list is sorted by node key and no node
/// is in two of them, so equal inputs give equal bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The beacon value, see `beacon::value`.
    pub value: Hash,
    /// Committers whose secret is in the value.
    pub revealed: Vec<PubKey>,
    /// Committers with no reveal in the agreed set, not convicted of fraud.
    pub absent: Vec<PubKey>,
    /// One proof per convicted node (the least, in the types' order, where
    /// there are several), sorted by that node's key.
    pub fraud: Vec<FraudProof>,
}

impl Outcome {
    /// Whether the value is unpredictable: at least one secret went in.
    /// Without one it is a function of the lcl alone.
    pub fn is_random(&self) -> bool {
        !self.revealed.is_empty()
    }
}

const VALUE_DOMAIN: &str = "hotpocket/beacon-value/v1";

/// The beacon value of the session on `lcl`: `H(domain ‖ lcl ‖ n ‖ (key,
/// secret) × n)` over `contributions`, which the caller sorts by key
/// ([`decide`] does). Secrets are hashed, not xored, so the value is
/// random if any one secret is, whatever the others are: they were fixed
/// by their commitments before it was revealed.
///
/// With no contributions (`n = 0`) the value is still defined, as
/// `H(domain ‖ lcl ‖ 0)`, identical on every node, so a ledger always has
/// one; but anyone who knows the lcl can compute it, so it is not random
/// ([`Outcome::is_random`] says so).
pub fn value(lcl: &LedgerId, contributions: &[(PubKey, [u8; 32])]) -> Hash {
    let mut h = Hasher::new(VALUE_DOMAIN);
    h.u64(lcl.seq).hash(&lcl.hash);
    h.u64(contributions.len() as u64);
    for (key, secret) in contributions {
        h.bytes(&key.0).bytes(secret);
    }
    h.finish()
}

/// The outcome of the session on `lcl`, from the agreed sets of its commits
/// and reveals and the fraud proofs consensus carried for it.
///
/// Only entries for `lcl`, by keys in `unl` (sorted, as the consensus
/// config keeps it), with valid signatures count; the rest are ignored,
/// so no input can make this panic or differ between nodes that got the
/// same sets. A committer is every UNL node with a valid commit. Then:
///
/// - two different commitments from one node convict it of a double
///   commit; a reveal that does not open its author's commitment convicts
///   it of a bad reveal; so does any valid proof in `frauds`. A convicted
///   node's secret is left out even if it revealed one that matches.
/// - every other committer with a reveal that opens its commitment
///   contributes its secret; one without is absent.
///
/// Cost: one signature check per distinct entry, two per proof.
pub fn decide(
    ring: &KeyRing,
    unl: &[PubKey],
    lcl: LedgerId,
    commits: &[SignedCommit],
    reveals: &[SignedReveal],
    frauds: &[FraudProof],
) -> Outcome {
    let member = |k: &PubKey| unl.binary_search(k).is_ok();
    // Each node's commitments, one valid copy of each: copies may differ in
    // signature alone, and the least valid one stands for them all.
    let mut committed: BTreeMap<PubKey, BTreeMap<Hash, &SignedCommit>> = BTreeMap::new();
    for c in sorted(commits) {
        if c.lcl != lcl || !member(&c.author) {
            continue;
        }
        let mine = committed.entry(c.author).or_default();
        if !mine.contains_key(&c.commitment) && c.verify_with(ring).is_ok() {
            mine.insert(c.commitment, c);
        }
    }
    committed.retain(|_, cs| !cs.is_empty());

    let mut convicted: BTreeMap<PubKey, FraudProof> = BTreeMap::new();
    let mut convict = |p: FraudProof| {
        let kept = convicted.entry(p.accused()).or_insert_with(|| p.clone());
        if p < *kept {
            *kept = p;
        }
    };
    for cs in committed.values() {
        // Sorted by commitment: the two least make the proof.
        let mut it = cs.values();
        if let (Some(a), Some(b)) = (it.next(), it.next()) {
            convict(FraudProof::double_commit((*a).clone(), (*b).clone()));
        }
    }
    for p in sorted(frauds) {
        if p.lcl() == lcl && member(&p.accused()) && p.verify(ring).is_ok() {
            convict(p.clone());
        }
    }

    let mut opened: BTreeMap<PubKey, [u8; 32]> = BTreeMap::new();
    for r in sorted(reveals) {
        let Some(cs) = committed.get(&r.author) else {
            continue; // not a committer
        };
        if r.lcl != lcl || r.verify_with(ring).is_err() {
            continue;
        }
        for c in cs.values() {
            if r.opens(c) {
                opened.insert(r.author, r.secret);
            } else {
                convict(FraudProof::BadReveal((*c).clone(), r.clone()));
            }
        }
    }

    let mut contributions = Vec::new();
    let mut absent = Vec::new();
    for author in committed.keys() {
        if convicted.contains_key(author) {
            continue;
        }
        match opened.get(author) {
            Some(secret) => contributions.push((*author, *secret)),
            None => absent.push(*author),
        }
    }
    Outcome {
        value: value(&lcl, &contributions),
        revealed: contributions.iter().map(|(k, _)| *k).collect(),
        absent,
        fraud: convicted.into_values().collect(),
    }
}

/// References to `items` in their order, each once: which copy is taken
/// never depends on the order the caller had them in, and an identical
/// copy costs no second signature check.
fn sorted<T: Ord>(items: &[T]) -> Vec<&T> {
    let mut v: Vec<&T> = items.iter().collect();
    v.sort();
    v.dedup();
    v
}
