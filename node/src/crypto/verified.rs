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
use crate::memo::Generations;
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

struct Memory {
    /// Whether the signature verifies, by key and signature, then by the
    /// exact signed bytes.
    answers: Generations<(PubKey, Sig), bool>,
    signed: u64,
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            answers: Generations::new(GENERATION, GENERATION_BYTES),
            signed: 0,
        }
    }
}

impl Memory {
    fn put(&mut self, key: &PubKey, sig: &Sig, signed: &[u8], valid: bool) {
        if signed.len() <= MAX_ENTRY_BYTES {
            self.answers.put((*key, *sig), signed, valid);
        }
    }
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
pub struct Verified(Arc<Mutex<Memory>>);

impl Verified {
    pub fn new() -> Verified {
        Verified::default()
    }

    /// The answer given before for exactly these bytes, if any.
    pub(super) fn get(&self, key: &PubKey, sig: &Sig, signed: &[u8]) -> Option<bool> {
        let mut g = self.lock();
        g.answers.find(&(*key, *sig), signed).map(|(_, v)| *v)
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
            hits: g.answers.hits(),
            misses: g.answers.misses(),
            signed: g.signed,
        }
    }

    /// Entries held now (both generations).
    pub fn len(&self) -> usize {
        self.lock().answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        // The maps stay consistent whatever a panicking holder did: each
        // insert or swap is one call.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
