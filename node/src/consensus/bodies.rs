//! Input bodies: a ledger runs only once this node holds every input body it
//! names.
//!
//! Votes are on input hashes, so a node can close a ledger whose bodies it
//! never received (a lost broadcast). Someone has them: stage-0 proposals
//! name only inputs a node holds, and an input survives stage 1 only with
//! half the UNL behind it, so at least half the UNL held each agreed body.
//! (Requiring a node to hold a body before voting for it was tried and
//! stalled the network: under a steady stream some node always lacks one.)
//! A node missing bodies asks its UNL peers in turn, with a stage's
//! patience each, and checks every body against its hash. Ledgers run in
//! order, so a ledger waiting for bodies holds back the ones after it.

use super::message::PeerMessage;
use super::Action;
use crate::crypto::{Hash, PubKey};
use crate::wire::MAX_FRAME_BYTES;

/// Most hashes asked for, or bodies sent, in one message.
pub const MAX_BODIES_PER_MESSAGE: usize = 4096;

#[derive(Debug, Default)]
pub struct BodyFetch {
    inflight: Option<(PubKey, u64)>,
    attempt: usize,
}

impl BodyFetch {
    pub fn deadline(&self) -> Option<u64> {
        self.inflight.map(|(_, d)| d)
    }

    /// Asks the next of the peers for what the first ledger to run lacks,
    /// unless a request is still in time. `want` gives both (missing
    /// hashes, peers), and is only called when a request may go: this runs
    /// after every event.
    pub fn tick(
        &mut self,
        now: u64,
        patience: u64,
        want: impl FnOnce() -> (Vec<Hash>, Vec<PubKey>),
    ) -> Option<Action> {
        if let Some((_, deadline)) = self.inflight {
            if now < deadline {
                return None;
            }
            self.inflight = None;
            self.attempt += 1;
        }
        let (missing, peers) = want();
        if missing.is_empty() || peers.is_empty() {
            return None;
        }
        let peer = peers[self.attempt % peers.len()];
        let hashes: Vec<Hash> = missing.into_iter().take(MAX_BODIES_PER_MESSAGE).collect();
        self.inflight = Some((peer, now + patience));
        Some(Action::Send {
            to: peer,
            bytes: PeerMessage::BodyRequest(hashes).encode(),
        })
    }

    /// `from` answered: if it was the peer asked, the next request may go.
    pub fn answered(&mut self, from: &PubKey) {
        if self.inflight.is_some_and(|(p, _)| p == *from) {
            self.inflight = None;
        }
    }
}

/// Answers a body request with the bodies `lookup` finds, within one
/// frame: the encoded answer, or `None` if none was found.
pub fn serve<'a>(
    hashes: &[Hash],
    lookup: impl Fn(&Hash) -> Option<&'a Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut budget = MAX_FRAME_BYTES - 1024;
    let mut bodies = Vec::new();
    for h in hashes.iter().take(MAX_BODIES_PER_MESSAGE) {
        if let Some(b) = lookup(h) {
            if b.len() + 16 > budget {
                break;
            }
            budget -= b.len() + 16;
            bodies.push(b.clone());
        }
    }
    (!bodies.is_empty()).then(|| PeerMessage::BodyResponse(bodies).encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_peers_in_turn_with_patience() {
        let mut f = BodyFetch::default();
        let peers = [PubKey([1; 32]), PubKey([2; 32])];
        let want = || (vec![Hash([9; 32])], peers.to_vec());
        let Some(Action::Send { to, .. }) = f.tick(0, 50, want) else {
            panic!("expected a request");
        };
        assert_eq!(to, peers[0]);
        assert!(f.tick(49, 50, want).is_none(), "still in time");
        let Some(Action::Send { to, .. }) = f.tick(50, 50, want) else {
            panic!("expected a retry");
        };
        assert_eq!(to, peers[1], "the retry goes to the next peer");
        f.answered(&peers[1]);
        let nothing = || (vec![], peers.to_vec());
        assert!(f.tick(51, 50, nothing).is_none(), "nothing missing");
    }

    #[test]
    fn serves_what_it_has() {
        let held = vec![1u8, 2, 3];
        let have = Hash([1; 32]);
        let got = serve(&[Hash([0; 32]), have], |h| (*h == have).then_some(&held));
        let msg = PeerMessage::decode(&got.expect("one body found")).unwrap();
        assert_eq!(msg, PeerMessage::BodyResponse(vec![held.clone()]));
        assert!(serve(&[Hash([0; 32])], |_| None).is_none());
    }
}
