//! A memory of signature checks, shared by the nodes of one process.
//!
//! In the simulator every node verifies the same signed bytes: a proposal
//! broadcast to 15 peers is checked 15 times, and a beacon commit is checked
//! again each time a later proposal carries it. [`Verified`] remembers the
//! answer, keyed by the exact public key, signature and signed bytes, so the
//! answer it gives is the one `verify_strict` gave for those very bytes: a
//! forged or bit-flipped signature differs in some byte and is checked in
//! full. A [`Keypair`](super::Keypair) that shares it records what it signs
//! (an ed25519 signature made with the key verifies under it), so an honest
//! message is never checked at all.
//!
//! It is a capability handed in with the key: protocol code calls the same
//! `sign` and `verify` either way. The real node holds none.

use super::{PubKey, Sig};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Entries a generation holds before it becomes the old one and the one
/// before it is dropped: memory stays bounded however long a run lasts
/// (an entry holds the signed bytes: a 25-node proposal is ~10 KB), while
/// a signature is remembered for at least this many later ones: at 25
/// nodes about 7 rounds of proposals and beacon parts, more below. A
/// signature checked after that (a history proof) is checked in full.
const GENERATION: usize = 1024;
/// And at most this many signed bytes a generation, so a peer sending
/// large signed frames cannot make it hold 2048 of them.
const GENERATION_BYTES: usize = 8 << 20;
/// Signed bytes longer than this are checked in full every time.
const MAX_ENTRY_BYTES: usize = 1 << 20;

/// Answers by key and signature, then by the exact signed bytes: the
/// same signature over other bytes is another entry (and almost never
/// happens, so the list is one long).
type Answers = BTreeMap<(PubKey, Sig), Vec<(Box<[u8]>, bool)>>;

#[derive(Default)]
struct Generations {
    new: Answers,
    old: Answers,
    /// Entries in `new`, and the signed bytes they hold.
    held: usize,
    held_bytes: usize,
    hits: u64,
    misses: u64,
    signed: u64,
}

impl Generations {
    fn put(&mut self, key: &PubKey, sig: &Sig, signed: &[u8], valid: bool) {
        if signed.len() > MAX_ENTRY_BYTES || find(&self.new, key, sig, signed).is_some() {
            return;
        }
        if self.held >= GENERATION || self.held_bytes + signed.len() > GENERATION_BYTES {
            self.old = std::mem::take(&mut self.new);
            self.held = 0;
            self.held_bytes = 0;
        }
        self.held += 1;
        self.held_bytes += signed.len();
        let list = self.new.entry((*key, *sig)).or_default();
        list.push((signed.into(), valid));
    }
}

fn find(answers: &Answers, key: &PubKey, sig: &Sig, signed: &[u8]) -> Option<bool> {
    let list = answers.get(&(*key, *sig))?;
    list.iter().find(|(b, _)| **b == *signed).map(|(_, v)| *v)
}

/// What a memory answered so far (the bench prints it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifiedStats {
    /// Checks answered from memory, and checked in full.
    pub hits: u64,
    pub misses: u64,
    /// Signatures made by keys sharing the memory.
    pub signed: u64,
}

/// Signature checks already answered, shared by cloning.
#[derive(Clone, Default)]
pub struct Verified(Arc<Mutex<Generations>>);

impl Verified {
    pub fn new() -> Verified {
        Verified::default()
    }

    /// The answer given before for exactly these bytes, if any.
    pub(super) fn get(&self, key: &PubKey, sig: &Sig, signed: &[u8]) -> Option<bool> {
        let mut g = self.lock();
        let found = find(&g.new, key, sig, signed).or_else(|| find(&g.old, key, sig, signed));
        match found {
            Some(_) => g.hits += 1,
            None => g.misses += 1,
        }
        found
    }

    /// A sharing key made `sig`: it verifies.
    pub(super) fn signed(&self, key: &PubKey, sig: &Sig, signed: &[u8]) {
        let mut g = self.lock();
        g.signed += 1;
        g.put(key, sig, signed, true);
    }

    pub(super) fn put(&self, key: &PubKey, sig: &Sig, signed: &[u8], valid: bool) {
        self.lock().put(key, sig, signed, valid);
    }

    pub fn stats(&self) -> VerifiedStats {
        let g = self.lock();
        VerifiedStats {
            hits: g.hits,
            misses: g.misses,
            signed: g.signed,
        }
    }

    /// Entries held now (both generations).
    pub fn len(&self) -> usize {
        let g = self.lock();
        let count = |a: &Answers| a.values().map(Vec::len).sum::<usize>();
        count(&g.new) + count(&g.old)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // The maps stay consistent whatever a panicking holder did: each
        // insert or swap is one call.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
