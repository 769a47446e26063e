//! The peer handshake as a sans-IO state machine: messages in, messages out.
//! The TCP transport (`real::peers`) only moves its bytes; the simulator or
//! a test can drive it directly.
//!
//! ```text
//! dialer                                   acceptor
//!   Hello(version, key_d, challenge_d)  ->
//!                                       <- Hello(version, key_a, challenge_a)
//!   Proof(sign_d(Dialer, transcript))   ->   verified before signing anything
//!                                       <- Proof(sign_a(Acceptor, transcript))
//! ```
//!
//! The transcript binds the version, both keys in their roles and both
//! challenges. Version 1 had each side sign "the other's challenge, my key,
//! the key you claim" for anyone who claimed a UNL key, before checking
//! anything: an attacker could connect to two nodes claiming to be each
//! other and hand one node's challenge to the other to sign. Here an
//! acceptor signs only after the dialer proved its key over the acceptor's
//! own fresh challenge, and a dialer signs only a transcript in which it is
//! the dialer, so no node is a signing oracle for a party that has not
//! proved a key, and no proof made for one connection fits another.

use crate::crypto::{verify, Hash, Keypair, PubKey, Sig};

/// Handshake version; any other is refused.
pub const VERSION: u8 = 2;
const PROOF_DOMAIN: &str = "hotpocket/peer-proof/v2";
const TRANSCRIPT_DOMAIN: &str = "hotpocket/peer-transcript/v2";
const SESSION_DOMAIN: &str = "hotpocket/peer-session/v2";
/// version (1) + key (32) + challenge (32).
pub const HELLO_BYTES: usize = 65;
pub const PROOF_BYTES: usize = 64;
/// No handshake message is longer: a transport reads no more than this
/// of the handshake before a peer is authenticated (TLS beneath it, in
/// the real node, buffers up to one 64 KiB handshake record of its own).
pub const MAX_MESSAGE_BYTES: usize = HELLO_BYTES;

/// Which end of the connection a side is. Signed into each proof, so a
/// dialer's proof can never be replayed as an acceptor's or the reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Dialer,
    Acceptor,
}

impl Role {
    fn tag(self) -> u8 {
        match self {
            Role::Dialer => 1,
            Role::Acceptor => 2,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("handshake version {0}, expected {VERSION}")]
    Version(u8),
    #[error("malformed handshake message of {0} bytes")]
    Malformed(usize),
    #[error("peer key {0} is not in the UNL")]
    NotInUnl(PubKey),
    #[error("connected to ourselves")]
    Loopback,
    #[error("handshake proof from {0} does not verify")]
    BadProof(PubKey),
    #[error("dialled {expected} but {got} answered")]
    Unexpected { expected: PubKey, got: PubKey },
    #[error("handshake message after the handshake ended")]
    Finished,
}

/// The first message each side sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u8,
    pub key: PubKey,
    pub challenge: [u8; 32],
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HELLO_BYTES);
        v.push(self.version);
        v.extend_from_slice(&self.key.0);
        v.extend_from_slice(&self.challenge);
        v
    }

    pub fn decode(bytes: &[u8]) -> Result<Hello, HandshakeError> {
        let (&version, rest) = bytes.split_first().ok_or(HandshakeError::Malformed(0))?;
        if version != VERSION {
            return Err(HandshakeError::Version(version));
        }
        let (key, challenge) = rest
            .split_at_checked(32)
            .ok_or(HandshakeError::Malformed(bytes.len()))?;
        let key = PubKey(key.try_into().expect("split at 32"));
        let challenge = challenge
            .try_into()
            .map_err(|_| HandshakeError::Malformed(bytes.len()))?;
        Ok(Hello {
            version,
            key,
            challenge,
        })
    }
}

/// Everything both proofs sign, and what the session id is derived from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transcript {
    pub dialer: PubKey,
    pub acceptor: PubKey,
    pub dialer_challenge: [u8; 32],
    pub acceptor_challenge: [u8; 32],
}

impl Transcript {
    fn digest(&self) -> Hash {
        Hash::of(
            TRANSCRIPT_DOMAIN,
            &[
                &[VERSION],
                &self.dialer.0,
                &self.acceptor.0,
                &self.dialer_challenge,
                &self.acceptor_challenge,
            ],
        )
    }

    /// What the side in `role` signs.
    pub fn proof_message(&self, role: Role) -> Vec<u8> {
        let mut m = vec![role.tag()];
        m.extend_from_slice(&self.digest().0);
        m
    }

    pub fn session_id(&self) -> Hash {
        Hash::of(SESSION_DOMAIN, &[&self.digest().0])
    }

    fn signer(&self, role: Role) -> PubKey {
        match role {
            Role::Dialer => self.dialer,
            Role::Acceptor => self.acceptor,
        }
    }

    fn sign(&self, key: &Keypair, role: Role) -> Vec<u8> {
        key.sign(PROOF_DOMAIN, &self.proof_message(role)).0.to_vec()
    }

    fn check(&self, role: Role, proof: &[u8]) -> Result<(), HandshakeError> {
        let signer = self.signer(role);
        let sig = Sig(proof
            .try_into()
            .map_err(|_| HandshakeError::Malformed(proof.len()))?);
        verify(&signer, PROOF_DOMAIN, &self.proof_message(role), &sig)
            .map_err(|_| HandshakeError::BadProof(signer))
    }
}

/// An authenticated peer: who it is, and the id both sides sign frames
/// under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerSession {
    pub peer: PubKey,
    pub id: Hash,
    pub role: Role,
}

/// What the transport does after feeding a message in.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes and wait for the next message.
    Send(Vec<u8>),
    /// The peer is authenticated; send `last` (if any) first.
    Done {
        last: Option<Vec<u8>>,
        session: PeerSession,
    },
}

#[derive(Clone, Debug)]
enum State {
    /// Waiting for the other side's hello.
    Hello,
    /// Waiting for the other side's proof of `transcript`.
    Proof(Transcript),
    /// Done or failed: every later message is refused.
    Closed,
}

/// One side of one handshake. A failed step closes it for good.
#[derive(Clone, Debug)]
pub struct Handshake {
    key: Keypair,
    unl: Vec<PubKey>,
    role: Role,
    challenge: [u8; 32],
    /// The key a dialer meant to reach, if it knows it.
    expect: Option<PubKey>,
    state: State,
}

impl Handshake {
    /// The dialing side, and the hello it sends first. `challenge` must be
    /// fresh and unpredictable for every connection.
    pub fn dialer(key: Keypair, unl: Vec<PubKey>, challenge: [u8; 32]) -> (Handshake, Vec<u8>) {
        let hello = Hello {
            version: VERSION,
            key: key.public(),
            challenge,
        }
        .encode();
        let hs = Handshake {
            key,
            unl,
            role: Role::Dialer,
            challenge,
            expect: None,
            state: State::Hello,
        };
        (hs, hello)
    }

    /// Pins the key a dialer must find at the other end. Without it, an
    /// insider whose address we dial can answer with another node's key
    /// and hand our hello to that node: both proofs then verify, and the
    /// session we think we hold with that node runs through the insider.
    pub fn expecting(mut self, peer: PubKey) -> Handshake {
        self.expect = Some(peer);
        self
    }

    /// The accepting side, which speaks only when spoken to.
    pub fn acceptor(key: Keypair, unl: Vec<PubKey>, challenge: [u8; 32]) -> Handshake {
        Handshake {
            key,
            unl,
            role: Role::Acceptor,
            challenge,
            expect: None,
            state: State::Hello,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Feeds the next message from the peer.
    pub fn receive(&mut self, msg: &[u8]) -> Result<Step, HandshakeError> {
        // Closed unless this step succeeds and moves on.
        let state = std::mem::replace(&mut self.state, State::Closed);
        match state {
            State::Closed => Err(HandshakeError::Finished),
            State::Hello => {
                let hello = Hello::decode(msg)?;
                self.admit(&hello.key)?;
                let me = self.key.public();
                match self.role {
                    Role::Acceptor => {
                        let t = Transcript {
                            dialer: hello.key,
                            acceptor: me,
                            dialer_challenge: hello.challenge,
                            acceptor_challenge: self.challenge,
                        };
                        self.state = State::Proof(t);
                        let reply = Hello {
                            version: VERSION,
                            key: me,
                            challenge: self.challenge,
                        };
                        Ok(Step::Send(reply.encode()))
                    }
                    Role::Dialer => {
                        let t = Transcript {
                            dialer: me,
                            acceptor: hello.key,
                            dialer_challenge: self.challenge,
                            acceptor_challenge: hello.challenge,
                        };
                        self.state = State::Proof(t);
                        Ok(Step::Send(t.sign(&self.key, Role::Dialer)))
                    }
                }
            }
            State::Proof(t) => match self.role {
                Role::Acceptor => {
                    // The dialer proves its key before we sign anything.
                    t.check(Role::Dialer, msg)?;
                    Ok(Step::Done {
                        last: Some(t.sign(&self.key, Role::Acceptor)),
                        session: PeerSession {
                            peer: t.dialer,
                            id: t.session_id(),
                            role: Role::Acceptor,
                        },
                    })
                }
                Role::Dialer => {
                    t.check(Role::Acceptor, msg)?;
                    Ok(Step::Done {
                        last: None,
                        session: PeerSession {
                            peer: t.acceptor,
                            id: t.session_id(),
                            role: Role::Dialer,
                        },
                    })
                }
            },
        }
    }

    fn admit(&self, peer: &PubKey) -> Result<(), HandshakeError> {
        if *peer == self.key.public() {
            return Err(HandshakeError::Loopback);
        }
        if !self.unl.contains(peer) {
            return Err(HandshakeError::NotInUnl(*peer));
        }
        match self.expect {
            Some(expected) if expected != *peer => Err(HandshakeError::Unexpected {
                expected,
                got: *peer,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
