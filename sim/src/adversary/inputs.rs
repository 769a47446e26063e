//! The input forger: a UNL member that tries to get inputs into ledgers in
//! users' names. On a network that takes signed inputs only, every one
//! must fail: honest nodes pool and vote for an input only once its user's
//! signature holds (`contract::admissible`), and a ledger never holds a
//! body twice. With that check off (`planted_bug = "unchecked_inputs"`)
//! forged inputs land, and the check that every input in a ledger came
//! from a user's session says so.
//!
//! With each proposal it sends, it offers bodies of one kind, and names
//! them in the proposal, validly signed by itself:
//! - a vouched input in a user's name (the prototype's kind, which such a
//!   network takes from no one);
//! - a signed input whose signature is its own, not the user's;
//! - a signed input it saw, its container changed (another nonce, another
//!   command), the user's signature kept;
//! - a signed input it saw, replayed as it was.
//!
//! And it holds back a third of its own users' signed inputs (their
//! bodies, and their hashes in its proposals) for three rounds, then
//! sends them: each then comes after later inputs of the same user have
//! run, unless nodes refuse a nonce below one of the user's that already
//! ran.

use super::Byzantine;
use hotpocket_node::consensus::PeerMessage;
use hotpocket_node::contract::{input_hash, SignedInput, UserInput};
use hotpocket_node::crypto::{Hash, PubKey};
use rand_core::RngCore;
use std::collections::BTreeSet;

/// Signed inputs kept for forging and replaying.
const KEPT: usize = 64;

/// Rounds a held input waits before it is sent.
const HOLD_ROUNDS: u64 = 3;

/// One of its users' inputs held back.
struct Held {
    hash: Hash,
    body: Vec<u8>,
    /// The round it was held in (`None` until a proposal says which).
    since: Option<u64>,
    /// Peers it was sent to once released.
    sent: BTreeSet<usize>,
}

#[derive(Default)]
pub struct Overheard {
    signed: Vec<SignedInput>,
    held: Vec<Held>,
    /// The round of the latest proposal it sent.
    round: u64,
}

impl Byzantine {
    /// Keeps the signed inputs peers send it.
    pub(super) fn overhear_inputs(&mut self, frame: &[u8]) {
        let Ok(PeerMessage::Inputs(bodies)) = PeerMessage::decode(frame) else {
            return;
        };
        for signed in bodies.iter().filter_map(|b| SignedInput::decode(b)) {
            let kept = &mut self.overheard.signed;
            if kept.len() == KEPT {
                kept.remove(0);
            }
            kept.push(signed);
        }
    }

    /// One forged or replayed body.
    fn forged_body(&mut self) -> Vec<u8> {
        let seen = &self.overheard.signed;
        let pick = (!seen.is_empty())
            .then(|| seen[(self.rng.next_u64() % seen.len() as u64) as usize].clone());
        // A user's key: one seen, or any.
        let user = pick.as_ref().map_or_else(
            || {
                let mut k = [0u8; 32];
                self.rng.fill_bytes(&mut k);
                PubKey(k)
            },
            |s| s.user,
        );
        match (self.rng.next_u64() % 4, pick) {
            (1, _) => {
                let container = format!(
                    r#"{{"input":"set forged {}","nonce":{},"max_ledger_seq_no":{}}}"#,
                    self.rng.next_u64() % 1000,
                    self.rng.next_u64() >> 12,
                    u64::MAX >> 12
                );
                let sig = self.key.sign_raw(container.as_bytes());
                SignedInput {
                    user,
                    container,
                    sig,
                }
                .encode()
            }
            (2, Some(mut s)) => {
                s.container = s.container.replacen("\"nonce\":", "\"nonce\":1", 1);
                s.encode()
            }
            (3, Some(s)) => s.encode(),
            _ => UserInput {
                user,
                nonce: self.rng.next_u64() >> 12,
                payload: b"set forged 1\n".to_vec(),
            }
            .encode(),
        }
    }

    /// Its users' inputs going out, less the ones it holds back.
    fn hold_inputs(&mut self, to: usize, bodies: Vec<Vec<u8>>) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        for body in bodies {
            let hash = input_hash(&body);
            let o = &mut self.overheard;
            if let Some(h) = o.held.iter().find(|h| h.hash == hash) {
                if h.since.is_some_and(|r| o.round < r + HOLD_ROUNDS) || h.since.is_none() {
                    continue;
                }
            } else if SignedInput::decode(&body).is_some() && hash.0[0].is_multiple_of(3) {
                o.held.push(Held {
                    hash,
                    body,
                    since: None,
                    sent: BTreeSet::new(),
                });
                continue;
            }
            out.push(body);
        }
        if out.is_empty() {
            return vec![];
        }
        vec![(to, PeerMessage::Inputs(out).encode())]
    }

    /// Held inputs due to `to` now, as one message.
    fn release_held(&mut self, to: usize) -> Option<Vec<u8>> {
        let o = &mut self.overheard;
        let round = o.round;
        let mut due = Vec::new();
        for h in &mut o.held {
            let since = *h.since.get_or_insert(round);
            if round >= since + HOLD_ROUNDS && h.sent.insert(to) {
                due.push(h.body.clone());
            }
        }
        o.held
            .retain(|h| h.since.is_none_or(|r| round < r + 5 * HOLD_ROUNDS));
        (!due.is_empty()).then(|| PeerMessage::Inputs(due).encode())
    }

    /// A proposal naming forged bodies too and not the held ones, re-signed,
    /// after the bodies (and the held ones now due).
    pub(super) fn forge_inputs(&mut self, to: usize, bytes: Vec<u8>) -> Vec<(usize, Vec<u8>)> {
        let mut sp = match PeerMessage::decode(&bytes) {
            Ok(PeerMessage::Proposal(sp)) => sp,
            Ok(PeerMessage::Inputs(bodies)) => return self.hold_inputs(to, bodies),
            _ => return vec![(to, bytes)],
        };
        self.overheard.round = sp.proposal.round;
        let released = self.release_held(to);
        let holding: BTreeSet<Hash> = (self.overheard.held.iter())
            .filter(|h| !h.sent.contains(&to))
            .map(|h| h.hash)
            .collect();
        let bodies: Vec<Vec<u8>> = (0..1 + self.rng.next_u64() % 3)
            .map(|_| self.forged_body())
            .collect();
        let inputs = &mut sp.proposal.inputs;
        inputs.retain(|h| !holding.contains(h));
        inputs.extend(bodies.iter().map(|b| input_hash(b)));
        inputs.sort();
        inputs.dedup();
        let sp = sp.proposal.sign(&self.key);
        let mut out: Vec<(usize, Vec<u8>)> = released.map(|m| (to, m)).into_iter().collect();
        out.push((to, PeerMessage::Inputs(bodies).encode()));
        out.push((to, PeerMessage::Proposal(Box::new(sp)).encode()));
        out
    }
}
