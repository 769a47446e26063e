//! Keys, signatures and hashes.
//!
//! Public keys travel as 64 hex characters, as in the prototype's `hp.cfg` and
//! its user handshake. Signatures are ed25519 over a domain-separated canonical
//! encoding, so a signature made for one message kind can never be replayed as
//! another.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

mod verified;

pub use verified::{Verified, VerifiedStats};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("expected {expected} hex characters, got {got}")]
    HexLength { expected: usize, got: usize },
    #[error("not valid hex: {0}")]
    Hex(String),
    #[error("not a valid ed25519 public key")]
    BadPublicKey,
    #[error("signature does not verify")]
    BadSignature,
}

/// A sha256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub const ZERO: Hash = Hash([0; 32]);

    /// Hashes `parts` after a domain tag. Every part is length-prefixed, so no
    /// two different part lists can produce the same byte stream.
    pub fn of(domain: &str, parts: &[&[u8]]) -> Hash {
        let mut h = Hasher::new(domain);
        for p in parts {
            h.bytes(p);
        }
        h.finish()
    }

    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Incremental, length-prefixed sha256 used for every canonical hash.
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new(domain: &str) -> Self {
        let mut h = Hasher(Sha256::new());
        h.bytes(domain.as_bytes());
        h
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.update(v.to_le_bytes());
        self
    }
    /// Bytes already laid out as `bytes`, `u64` and `hash` calls would
    /// have written them: one update instead of two per part, for callers
    /// that hash thousands of small parts (a directory's entries).
    pub(crate) fn encoded(&mut self, stream: &[u8]) -> &mut Self {
        self.0.update(stream);
        self
    }
    pub fn hash(&mut self, h: &Hash) -> &mut Self {
        self.0.update(h.0);
        self
    }
    pub fn finish(&mut self) -> Hash {
        Hash(self.0.clone().finalize().into())
    }
}

/// An ed25519 public key, shown as 64 hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PubKey(pub [u8; 32]);

impl PubKey {
    pub fn from_hex(s: &str) -> Result<PubKey, CryptoError> {
        let bytes = decode_hex::<32>(s)?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| CryptoError::BadPublicKey)?;
        Ok(PubKey(bytes))
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn short(&self) -> String {
        hex::encode(&self.0[..3])
    }
}

impl fmt::Debug for PubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl fmt::Display for PubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An ed25519 signature (128 hex characters in text form).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sig(#[serde(with = "sig_bytes")] pub [u8; 64]);

impl Sig {
    pub fn from_hex(s: &str) -> Result<Sig, CryptoError> {
        Ok(Sig(decode_hex::<64>(s)?))
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sig:{}", hex::encode(&self.0[..4]))
    }
}

// serde implements arrays only up to 32 elements.
mod sig_bytes {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: &[u8] = Deserialize::deserialize(d)?;
        v.try_into()
            .map_err(|_| D::Error::invalid_length(v.len(), &"64 bytes"))
    }
}

fn decode_hex<const N: usize>(s: &str) -> Result<[u8; N], CryptoError> {
    if s.len() != N * 2 {
        return Err(CryptoError::HexLength {
            expected: N * 2,
            got: s.len(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| CryptoError::Hex(e.to_string()))?;
    Ok(out)
}

/// A node's or user's signing key.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
    public: PubKey,
    /// Where what this key signs is recorded as verified, when the key
    /// shares a process's memory of checks.
    verified: Option<Verified>,
}

impl Keypair {
    /// Builds a key from 32 secret bytes; callers get those from the entropy
    /// trait, so the simulator derives keys from its seed.
    pub fn from_seed(seed: [u8; 32]) -> Keypair {
        let signing = SigningKey::from_bytes(&seed);
        let public = PubKey(signing.verifying_key().to_bytes());
        Keypair {
            signing,
            public,
            verified: None,
        }
    }
    /// This key, recording every signature it makes in `verified`: a
    /// signature the key made verifies under it, so a [`KeyRing`] sharing
    /// that memory need not check it again. The simulator hands its nodes
    /// keys like this; a real node's key shares nothing.
    pub fn sharing(mut self, verified: &Verified) -> Keypair {
        self.verified = Some(verified.clone());
        self
    }
    /// The memory this key records into, if it shares one.
    pub fn verified(&self) -> Option<&Verified> {
        self.verified.as_ref()
    }
    pub fn public(&self) -> PubKey {
        self.public
    }
    /// The 32-byte secret seed (what `from_seed` takes).
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }
    pub fn secret_hex(&self) -> String {
        hex::encode(self.signing.to_bytes())
    }
    /// A signing seed for this node's contract, derived from the node's
    /// secret so it survives restarts, but never the node key itself: a
    /// contract that leaks it cannot sign proposals or NPL chunks.
    pub fn contract_seed(&self) -> [u8; 32] {
        Hash::of("hotpocket/contract-seed/v1", &[&self.signing.to_bytes()]).0
    }
    /// A secret keyed by this node's secret key, for one purpose (`domain`)
    /// and one occasion (`context`): unpredictable to anyone without the
    /// key, and the same every time, so a node that restarts recomputes it
    /// rather than having to store it (the beacon's per-ledger secrets).
    /// Distinct from `contract_seed` (another domain, two parts), so a
    /// contract that knows its seed learns nothing of these.
    pub fn derive_secret(&self, domain: &str, context: &[u8]) -> [u8; 32] {
        Hash::of(domain, &[&self.signing.to_bytes(), context]).0
    }
    /// Signs `msg` as it is, with no domain: only where a client fixed the
    /// format (the user handshakes, hpcore's output roots).
    pub fn sign_raw(&self, msg: &[u8]) -> Sig {
        let sig = Sig(self.signing.sign(msg).to_bytes());
        if let Some(v) = &self.verified {
            v.signed(&self.public, &sig, msg);
        }
        sig
    }
    /// Signs `msg` under `domain`.
    pub fn sign(&self, domain: &str, msg: &[u8]) -> Sig {
        let signed = signing_bytes(domain, msg);
        let sig = Sig(self.signing.sign(&signed).to_bytes());
        if let Some(v) = &self.verified {
            v.signed(&self.public, &sig, &signed);
        }
        sig
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.public)
    }
}

fn signing_bytes(domain: &str, msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(domain.len() + msg.len() + 1);
    v.extend_from_slice(domain.as_bytes());
    v.push(0);
    v.extend_from_slice(msg);
    v
}

/// Verifies a signature strictly: malformed keys, non-canonical signatures and
/// small-order points are all rejected.
pub fn verify(key: &PubKey, domain: &str, msg: &[u8], sig: &Sig) -> Result<(), CryptoError> {
    let vk = VerifyingKey::from_bytes(&key.0).map_err(|_| CryptoError::BadPublicKey)?;
    verify_with(&vk, domain, msg, sig)
}

/// Verifies a signature over `msg` exactly, with no domain prefix: what the
/// prototype's users sign (the challenge string), so existing clients work.
pub fn verify_raw(key: &PubKey, msg: &[u8], sig: &Sig) -> Result<(), CryptoError> {
    let vk = VerifyingKey::from_bytes(&key.0).map_err(|_| CryptoError::BadPublicKey)?;
    vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig.0))
        .map_err(|_| CryptoError::BadSignature)
}

fn verify_with(vk: &VerifyingKey, domain: &str, msg: &[u8], sig: &Sig) -> Result<(), CryptoError> {
    verify_signed(vk, &signing_bytes(domain, msg), sig)
}

fn verify_signed(vk: &VerifyingKey, signed: &[u8], sig: &Sig) -> Result<(), CryptoError> {
    let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
    vk.verify_strict(signed, &sig)
        .map_err(|_| CryptoError::BadSignature)
}

/// Known public keys, decompressed once. Decompressing a key is a field
/// exponentiation, about a third of a verification, and a node verifies
/// signatures of the same few UNL keys all day.
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: std::collections::BTreeMap<PubKey, VerifyingKey>,
    /// Checks already answered in this process, when the ring shares them.
    verified: Option<Verified>,
}

impl KeyRing {
    /// Keys that are not valid points are left out; their signatures then
    /// fail like any unknown key's.
    pub fn new(keys: &[PubKey]) -> KeyRing {
        KeyRing {
            keys: keys
                .iter()
                .filter_map(|k| VerifyingKey::from_bytes(&k.0).ok().map(|vk| (*k, vk)))
                .collect(),
            verified: None,
        }
    }

    /// This ring, answering from `verified` what was checked (or signed by
    /// a key sharing it) before, and recording what it checks.
    pub fn sharing(mut self, verified: Option<&Verified>) -> KeyRing {
        self.verified = verified.cloned();
        self
    }

    /// Like [`verify`], using the cached key when there is one.
    pub fn verify(
        &self,
        key: &PubKey,
        domain: &str,
        msg: &[u8],
        sig: &Sig,
    ) -> Result<(), CryptoError> {
        self.verify_bytes(key, &signing_bytes(domain, msg), sig)
    }

    /// Like [`verify_raw`], using the cached key when there is one.
    pub fn verify_raw(&self, key: &PubKey, msg: &[u8], sig: &Sig) -> Result<(), CryptoError> {
        self.verify_bytes(key, msg, sig)
    }

    /// Checks `sig` over exactly `signed`, answering from the shared memory
    /// when there is one.
    fn verify_bytes(&self, key: &PubKey, signed: &[u8], sig: &Sig) -> Result<(), CryptoError> {
        let Some(memory) = &self.verified else {
            return self.check(key, signed, sig);
        };
        match memory.get(key, sig, signed) {
            Some(true) => Ok(()),
            Some(false) => Err(CryptoError::BadSignature),
            None => {
                let answer = self.check(key, signed, sig);
                // Only answers about the signature are kept: a key that is
                // no point is refused as such every time.
                if answer != Err(CryptoError::BadPublicKey) {
                    memory.put(key, sig, signed, answer.is_ok());
                }
                answer
            }
        }
    }

    fn check(&self, key: &PubKey, signed: &[u8], sig: &Sig) -> Result<(), CryptoError> {
        match self.keys.get(key) {
            Some(vk) => verify_signed(vk, signed, sig),
            None => {
                let vk = VerifyingKey::from_bytes(&key.0).map_err(|_| CryptoError::BadPublicKey)?;
                verify_signed(&vk, signed, sig)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_domain_separation() {
        let k = Keypair::from_seed([7; 32]);
        let sig = k.sign("a", b"msg");
        assert_eq!(verify(&k.public(), "a", b"msg", &sig), Ok(()));
        assert_eq!(
            verify(&k.public(), "b", b"msg", &sig),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            verify(&k.public(), "a", b"msh", &sig),
            Err(CryptoError::BadSignature)
        );
        let mut bad = sig;
        bad.0[5] ^= 1;
        assert_eq!(
            verify(&k.public(), "a", b"msg", &bad),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn key_ring_agrees_with_plain_verification() {
        let k = Keypair::from_seed([7; 32]);
        let other = Keypair::from_seed([8; 32]);
        let ring = KeyRing::new(&[k.public()]);
        let sig = k.sign("a", b"msg");
        assert_eq!(ring.verify(&k.public(), "a", b"msg", &sig), Ok(()));
        assert_eq!(
            ring.verify(&k.public(), "a", b"msx", &sig),
            Err(CryptoError::BadSignature)
        );
        // A key outside the ring still verifies, the slow way.
        let sig2 = other.sign("a", b"msg");
        assert_eq!(ring.verify(&other.public(), "a", b"msg", &sig2), Ok(()));
        assert_eq!(
            ring.verify(&other.public(), "a", b"msg", &sig),
            Err(CryptoError::BadSignature)
        );
    }

    /// A shared memory answers what `verify_strict` answers for the exact
    /// bytes: what a sharing key signed passes unchecked; a flipped bit, a
    /// signature moved to other bytes or another key's claim is checked in
    /// full and fails, the second time too.
    #[test]
    fn a_shared_memory_never_passes_what_would_not_verify() {
        let memory = Verified::new();
        let k = Keypair::from_seed([7; 32]).sharing(&memory);
        let other = Keypair::from_seed([8; 32]);
        let ring = KeyRing::new(&[k.public(), other.public()]).sharing(Some(&memory));
        let sig = k.sign("a", b"msg");
        assert_eq!(memory.len(), 1, "signing records the signature");
        assert_eq!(ring.verify(&k.public(), "a", b"msg", &sig), Ok(()));
        let stats = memory.stats();
        assert_eq!((stats.hits, stats.misses, stats.signed), (1, 0, 1));
        let mut flipped = sig;
        flipped.0[9] ^= 1;
        let moved = ("a", b"msx", sig);
        for _ in 0..2 {
            assert_eq!(
                ring.verify(&k.public(), "a", b"msg", &flipped),
                Err(CryptoError::BadSignature)
            );
            assert_eq!(
                ring.verify(&k.public(), moved.0, moved.1, &moved.2),
                Err(CryptoError::BadSignature)
            );
            assert_eq!(
                ring.verify(&k.public(), "b", b"msg", &sig),
                Err(CryptoError::BadSignature),
                "another domain is other signed bytes"
            );
            assert_eq!(
                ring.verify(&other.public(), "a", b"msg", &sig),
                Err(CryptoError::BadSignature),
                "the same signature claimed by another key"
            );
        }
        assert_eq!(memory.stats().misses, 4, "each checked in full once");
        // A signature from a key that shares nothing is checked, then known.
        let theirs = other.sign("a", b"msg");
        assert_eq!(ring.verify(&other.public(), "a", b"msg", &theirs), Ok(()));
        assert_eq!(ring.verify(&other.public(), "a", b"msg", &theirs), Ok(()));
        let stats = memory.stats();
        assert_eq!((stats.hits, stats.misses), (6, 5));
        // A key that is no point is refused as such, every time.
        let bad = (0..=255u8)
            .map(|b| PubKey([b; 32]))
            .find(|k| VerifyingKey::from_bytes(&k.0).is_err())
            .expect("some byte pattern is no point");
        for _ in 0..2 {
            assert_eq!(
                ring.verify(&bad, "a", b"msg", &sig),
                Err(CryptoError::BadPublicKey)
            );
        }
    }

    #[test]
    fn a_memory_stays_bounded() {
        let memory = Verified::new();
        let k = Keypair::from_seed([7; 32]).sharing(&memory);
        for i in 0..5_000u32 {
            k.sign("a", &i.to_le_bytes());
        }
        assert!(memory.len() <= 2048, "{}", memory.len());
        let ring = KeyRing::new(&[k.public()]).sharing(Some(&memory));
        let last = 4_999u32.to_le_bytes();
        let sig = k.sign("a", &last);
        assert_eq!(ring.verify(&k.public(), "a", &last, &sig), Ok(()));
        // An entry that fell out is checked again, with the same answer.
        let first = 0u32.to_le_bytes();
        let sig = Keypair::from_seed([7; 32]).sign("a", &first);
        assert_eq!(ring.verify(&k.public(), "a", &first, &sig), Ok(()));
    }

    #[test]
    fn a_memory_keeps_no_huge_entries() {
        let memory = Verified::new();
        let k = Keypair::from_seed([7; 32]).sharing(&memory);
        let big = vec![1u8; (1 << 20) + 1];
        let sig = k.sign("a", &big);
        assert!(memory.is_empty(), "too big to keep");
        let ring = KeyRing::new(&[k.public()]).sharing(Some(&memory));
        assert_eq!(ring.verify(&k.public(), "a", &big, &sig), Ok(()));
        assert!(memory.is_empty());
        // 9 entries of 1 MiB fill a generation's 8 MiB: the first goes to
        // the old one, the next fill drops it.
        let mib = vec![2u8; (1 << 20) - 2];
        for i in 0..20u8 {
            let mut m = mib.clone();
            m[0] = i;
            k.sign("", &m);
        }
        assert!(memory.len() <= 16, "{}", memory.len());
    }

    #[test]
    fn hex_round_trip_and_rejects_malformed() {
        let k = Keypair::from_seed([1; 32]);
        let hexkey = k.public().to_hex();
        assert_eq!(hexkey.len(), 64);
        assert_eq!(PubKey::from_hex(&hexkey), Ok(k.public()));
        assert!(matches!(
            PubKey::from_hex("abc"),
            Err(CryptoError::HexLength { .. })
        ));
        assert!(matches!(
            PubKey::from_hex(&"zz".repeat(32)),
            Err(CryptoError::Hex(_))
        ));
        let sig = k.sign("d", b"x");
        assert_eq!(Sig::from_hex(&sig.to_hex()), Ok(sig));
    }

    #[test]
    fn hash_parts_are_unambiguous() {
        assert_ne!(Hash::of("d", &[b"ab", b"c"]), Hash::of("d", &[b"a", b"bc"]));
        assert_ne!(Hash::of("d1", &[b"x"]), Hash::of("d2", &[b"x"]));
    }

    #[test]
    fn derived_secrets_depend_on_key_domain_and_context() {
        let k = Keypair::from_seed([1; 32]);
        let s = k.derive_secret("d", b"c");
        assert_eq!(s, Keypair::from_seed([1; 32]).derive_secret("d", b"c"));
        assert_ne!(s, Keypair::from_seed([2; 32]).derive_secret("d", b"c"));
        assert_ne!(s, k.derive_secret("e", b"c"));
        assert_ne!(s, k.derive_secret("d", b"x"));
        assert_ne!(s, k.contract_seed());
    }
}
