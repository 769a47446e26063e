//! What travels on the party line: signed chunks of a contract's NPL
//! output, the relay envelope around them, and the framing a receiving
//! contract reads them in.

use crate::crypto::{self, CryptoError, Hash, KeyRing, Keypair, PubKey, Sig};
use serde::{Deserialize, Serialize};

const CHUNK_DOMAIN: &str = "hotpocket/npl/v1";
const ID_DOMAIN: &str = "hotpocket/npl/id/v1";
const CONTENT_DOMAIN: &str = "hotpocket/npl/content/v1";

/// One piece of what `author`'s contract wrote to its NPL output during the
/// run of ledger `seq`. Pieces are numbered per author and run from 0, so a
/// receiver can put them back in order and tell a gap from the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NplChunk {
    pub author: PubKey,
    /// The ledger whose contract run wrote it.
    pub seq: u64,
    /// Per-author chunk number within that run, from 0.
    pub index: u64,
    pub data: Vec<u8>,
}

impl NplChunk {
    fn signing_bytes(&self) -> Vec<u8> {
        // postcard is deterministic for a given value (field order, varints,
        // no maps): the canonical encoding we sign, as for proposals.
        postcard::to_allocvec(self).expect("encoding into a Vec cannot fail")
    }

    /// Signs with `key`. A key other than `author`'s yields a chunk that
    /// fails verification, which is what the simulator's forger wants.
    pub fn sign(self, key: &Keypair) -> SignedChunk {
        let sig = key.sign(CHUNK_DOMAIN, &self.signing_bytes());
        SignedChunk { chunk: self, sig }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedChunk {
    pub chunk: NplChunk,
    pub sig: Sig,
}

impl SignedChunk {
    /// Verifies against the UNL's cached keys.
    pub fn verify_with(&self, ring: &KeyRing) -> Result<(), CryptoError> {
        ring.verify(
            &self.chunk.author,
            CHUNK_DOMAIN,
            &self.chunk.signing_bytes(),
            &self.sig,
        )
    }

    pub fn verify(&self) -> Result<(), CryptoError> {
        crypto::verify(
            &self.chunk.author,
            CHUNK_DOMAIN,
            &self.chunk.signing_bytes(),
            &self.sig,
        )
    }

    /// The hash of the signed encoding: two copies with the same id are the
    /// same bytes, so a copy of a chunk already checked needs no second
    /// signature check.
    pub fn id(&self) -> Hash {
        let bytes = postcard::to_allocvec(self).expect("encoding into a Vec cannot fail");
        Hash::of(ID_DOMAIN, &[&bytes])
    }

    /// The hash of the chunk without its signature. An author can sign one
    /// chunk twice with different signatures (ed25519 does not force one
    /// nonce); the contract would hear the same bytes, so that is a copy,
    /// not equivocation.
    pub(crate) fn content(&self) -> Hash {
        Hash::of(CONTENT_DOMAIN, &[&self.chunk.signing_bytes()])
    }
}

/// A chunk as it goes over a peer link. `hops` counts relays so far; it is
/// not signed, since it only bounds relaying: a peer that lowers it makes
/// the chunk travel one hop further, which a copy from another path could
/// do anyway, and dedup keeps that at most one delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NplEnvelope {
    pub hops: u8,
    pub chunk: SignedChunk,
}

/// The record a contract reads from its NPL input: the prototype's framing,
/// `Length: N\nPubkey: <64 hex>\n\n` then N bytes of data, no `\r`.
pub fn frame(author: &PubKey, data: &[u8]) -> Vec<u8> {
    let head = format!("Length: {}\nPubkey: {}\n\n", data.len(), author.to_hex());
    let mut out = Vec::with_capacity(head.len() + data.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &Keypair) -> NplChunk {
        NplChunk {
            author: key.public(),
            seq: 5,
            index: 2,
            data: b"sig share".to_vec(),
        }
    }

    #[test]
    fn framing_is_byte_exact() {
        let author = PubKey([0xab; 32]);
        let got = frame(&author, b"hi\n\x00");
        let mut want = b"Length: 4\nPubkey: ".to_vec();
        want.extend_from_slice("ab".repeat(32).as_bytes());
        want.extend_from_slice(b"\n\nhi\n\x00");
        assert_eq!(got, want);
        let empty = frame(&author, b"");
        assert!(empty.starts_with(b"Length: 0\nPubkey: "));
        assert!(empty.ends_with(b"\n\n"));
        assert_eq!(empty.len(), "Length: 0\nPubkey: \n\n".len() + 64);
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let k = Keypair::from_seed([3; 32]);
        let ring = KeyRing::new(&[k.public()]);
        let sc = sample(&k).sign(&k);
        assert_eq!(sc.verify_with(&ring), Ok(()));
        assert_eq!(sc.verify(), Ok(()));
        let tampers: [fn(&mut NplChunk); 4] = [
            |c| c.data[0] ^= 1,
            |c| c.seq += 1,
            |c| c.index += 1,
            |c| c.data.push(0),
        ];
        for tamper in tampers {
            let mut t = sc.clone();
            tamper(&mut t.chunk);
            assert_eq!(t.verify_with(&ring), Err(CryptoError::BadSignature));
        }
        // Another node's name on one's own signature fails.
        let other = Keypair::from_seed([4; 32]);
        let mut t = sc.clone();
        t.chunk.author = other.public();
        assert!(t.verify().is_err());
        // So does a proposal-domain signature over the same bytes.
        let mut t = sc;
        t.sig = k.sign("hotpocket/proposal/v1", &t.chunk.signing_bytes());
        assert!(t.verify().is_err());
    }

    #[test]
    fn id_covers_the_signature_and_content_does_not() {
        let k = Keypair::from_seed([3; 32]);
        let a = sample(&k).sign(&k);
        let mut b = a.clone();
        b.sig.0[0] ^= 1;
        assert_ne!(a.id(), b.id());
        assert_eq!(a.content(), b.content());
        let mut c = a.clone();
        c.chunk.index += 1;
        assert_ne!(a.content(), c.content());
        assert_eq!(a.id(), a.clone().id());
    }

    #[test]
    fn envelope_round_trips_through_postcard() {
        let k = Keypair::from_seed([3; 32]);
        let env = NplEnvelope {
            hops: 1,
            chunk: sample(&k).sign(&k),
        };
        let bytes = postcard::to_allocvec(&env).unwrap();
        let back: NplEnvelope = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.chunk.verify(), Ok(()));
    }
}
