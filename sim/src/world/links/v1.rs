//! Version 1 of the peer handshake, found open to a relay, kept here (and
//! only here) as a planted bug: the simulator's relay
//! adversary and session check must catch it.
//!
//! Both sides send (version, key, challenge); each then signs "the other's
//! challenge, my key, the key you claim" for anyone who claims a UNL key,
//! and checks the other's signature over its own challenge. Sans-IO, the
//! acceptor answers a hello with its hello and signature at once.

use hotpocket_node::crypto::{verify, Hash, Keypair, PubKey, Sig};
use hotpocket_node::handshake::{HandshakeError, PeerSession, Role, Step};

const VERSION: u8 = 1;
const DOMAIN: &str = "hotpocket/peer-hello/v1";
const HELLO_BYTES: usize = 65;

pub fn hello(key: PubKey, challenge: [u8; 32]) -> Vec<u8> {
    let mut v = vec![VERSION];
    v.extend_from_slice(&key.0);
    v.extend_from_slice(&challenge);
    v
}

fn proof(challenge: &[u8; 32], signer: &PubKey, other: &PubKey) -> Vec<u8> {
    let mut m = challenge.to_vec();
    m.extend_from_slice(&signer.0);
    m.extend_from_slice(&other.0);
    m
}

#[derive(Clone)]
pub struct Handshake {
    key: Keypair,
    unl: Vec<PubKey>,
    challenge: [u8; 32],
    dialer: bool,
    /// The peer's claimed key, once its hello arrived.
    peer: Option<(PubKey, [u8; 32])>,
    done: bool,
}

impl Handshake {
    /// One side, and the hello a dialer sends first.
    pub fn new(
        key: Keypair,
        unl: Vec<PubKey>,
        challenge: [u8; 32],
        dialer: bool,
    ) -> (Handshake, Vec<u8>) {
        let first = hello(key.public(), challenge);
        let hs = Handshake {
            key,
            unl,
            challenge,
            dialer,
            peer: None,
            done: false,
        };
        (hs, first)
    }

    pub fn receive(&mut self, msg: &[u8]) -> Result<Step, HandshakeError> {
        if self.done {
            return Err(HandshakeError::Finished);
        }
        match self.peer {
            None => {
                // A dialer gets hello and signature in one message.
                let (h, sig) = msg.split_at_checked(HELLO_BYTES).unwrap_or((msg, &[]));
                if h.len() != HELLO_BYTES || h[0] != VERSION {
                    self.done = true;
                    return Err(HandshakeError::Malformed(msg.len()));
                }
                let peer = PubKey(h[1..33].try_into().expect("length checked"));
                let theirs: [u8; 32] = h[33..].try_into().expect("length checked");
                if peer == self.key.public() || !self.unl.contains(&peer) {
                    self.done = true;
                    return Err(HandshakeError::NotInUnl(peer));
                }
                self.peer = Some((peer, theirs));
                let mine = self
                    .key
                    .sign(DOMAIN, &proof(&theirs, &self.key.public(), &peer))
                    .0
                    .to_vec();
                if self.dialer {
                    self.check(sig)?;
                    self.done = true;
                    return Ok(Step::Done {
                        last: Some(mine),
                        session: self.session(),
                    });
                }
                let mut reply = hello(self.key.public(), self.challenge);
                reply.extend_from_slice(&mine);
                Ok(Step::Send(reply))
            }
            Some(_) => {
                self.done = true;
                self.check(msg)?;
                Ok(Step::Done {
                    last: None,
                    session: self.session(),
                })
            }
        }
    }

    fn check(&mut self, sig: &[u8]) -> Result<(), HandshakeError> {
        let (peer, _) = self.peer.expect("hello first");
        let sig = Sig(sig.try_into().map_err(|_| {
            self.done = true;
            HandshakeError::Malformed(sig.len())
        })?);
        verify(
            &peer,
            DOMAIN,
            &proof(&self.challenge, &peer, &self.key.public()),
            &sig,
        )
        .map_err(|_| {
            self.done = true;
            HandshakeError::BadProof(peer)
        })
    }

    fn session(&self) -> PeerSession {
        let (peer, theirs) = self.peer.expect("hello first");
        let (a, b) = if self.key.public() < peer {
            (self.challenge, theirs)
        } else {
            (theirs, self.challenge)
        };
        PeerSession {
            peer,
            id: Hash::of("hotpocket/peer-session/v1", &[&a, &b]),
            role: if self.dialer {
                Role::Dialer
            } else {
                Role::Acceptor
            },
        }
    }
}
