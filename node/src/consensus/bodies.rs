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
use super::node::{Action, Node};
use crate::contract::input_hash;
use crate::crypto::{Hash, PubKey};
use crate::wire::MAX_FRAME_BYTES;
use std::collections::BTreeSet;

/// Most hashes asked for, or bodies sent, in one message.
const MAX_BODIES_PER_MESSAGE: usize = 4096;

#[derive(Debug, Default)]
pub struct BodyFetch {
    /// Appended ledgers not yet handed to the contract, in seq order.
    pub(super) waiting: BTreeSet<u64>,
    inflight: Option<(PubKey, u64)>,
    attempt: usize,
}

impl BodyFetch {
    pub fn deadline(&self) -> Option<u64> {
        self.inflight.map(|(_, d)| d)
    }
}

impl Node {
    fn missing_bodies(&self, seq: u64) -> Vec<Hash> {
        let r = &self.chain[seq as usize];
        r.ledger
            .inputs
            .iter()
            .filter(|h| !r.bodies.contains_key(h))
            .copied()
            .collect()
    }

    /// Ledger `seq` (already appended) runs as soon as it and every ledger
    /// before it have all their bodies; `bodies_tick`, at the end of every
    /// event, hands it over or asks for what is missing.
    pub(super) fn schedule_run(&mut self, seq: u64) {
        self.bodies.waiting.insert(seq);
    }

    fn run_ready(&mut self) {
        if self.state.active() {
            return; // the contract state is being replaced
        }
        while let Some(&seq) = self.bodies.waiting.first() {
            if !self.missing_bodies(seq).is_empty() {
                return;
            }
            self.bodies.waiting.pop_first();
            let record = self.chain[seq as usize].clone();
            self.out.push(Action::Execute(Box::new(record)));
        }
    }

    /// After a rollback: ledgers above the new lcl will never run.
    pub(super) fn forget_runs_above(&mut self, seq: u64) {
        self.bodies.waiting.retain(|s| *s <= seq);
    }

    /// Asks the next UNL peer for what the first waiting ledger lacks.
    pub(super) fn bodies_tick(&mut self, now: u64) {
        self.deliver_certified();
        self.maybe_start_state_sync(now);
        self.run_ready();
        if let Some((_, deadline)) = self.bodies.inflight {
            if now < deadline {
                return;
            }
            self.bodies.inflight = None;
            self.bodies.attempt += 1;
        }
        let Some(&seq) = self.bodies.waiting.first() else {
            return;
        };
        let missing = self.missing_bodies(seq);
        if missing.is_empty() {
            return;
        }
        let me = self.key.public();
        let peers: Vec<PubKey> = self.cfg.unl.iter().filter(|k| **k != me).copied().collect();
        if peers.is_empty() {
            return;
        }
        let peer = peers[self.bodies.attempt % peers.len()];
        let hashes: Vec<Hash> = missing.into_iter().take(MAX_BODIES_PER_MESSAGE).collect();
        self.out.push(Action::Send {
            to: peer,
            bytes: PeerMessage::BodyRequest(hashes).encode(),
        });
        self.bodies.inflight = Some((peer, now + self.patience()));
    }

    pub(super) fn serve_bodies(&mut self, from: PubKey, hashes: Vec<Hash>) {
        if !self.cfg.in_unl(&from) {
            self.stats.dropped_not_unl += 1;
            return;
        }
        if !self.may_serve(from) {
            return;
        }
        let mut budget = MAX_FRAME_BYTES - 1024;
        let mut bodies = Vec::new();
        for h in hashes.iter().take(MAX_BODIES_PER_MESSAGE) {
            let body = match self.pool.get(h) {
                Some((b, _)) => Some(b),
                None => self
                    .included
                    .get(h)
                    .and_then(|seq| self.chain.get(*seq as usize))
                    .and_then(|r| r.bodies.get(h)),
            };
            if let Some(b) = body {
                if b.len() + 16 > budget {
                    break;
                }
                budget -= b.len() + 16;
                bodies.push(b.clone());
            }
        }
        if !bodies.is_empty() {
            self.out.push(Action::Send {
                to: from,
                bytes: PeerMessage::BodyResponse(bodies).encode(),
            });
        }
    }

    pub(super) fn on_bodies(&mut self, now: u64, from: PubKey, bodies: Vec<Vec<u8>>) {
        let mut useful = false;
        for body in bodies.into_iter().take(MAX_BODIES_PER_MESSAGE) {
            let h = input_hash(&body);
            // Only bodies a waiting ledger names are kept: the hash check
            // is all the trust a body needs.
            let owner = self.bodies.waiting.iter().copied().find(|s| {
                self.chain[*s as usize]
                    .ledger
                    .inputs
                    .binary_search(&h)
                    .is_ok()
            });
            if let Some(seq) = owner {
                if self.chain[seq as usize].bodies.insert(h, body).is_none() {
                    self.stats.bodies_fetched += 1;
                }
                useful = true;
            }
        }
        if !useful {
            self.stats.dropped_duplicate += 1;
        }
        if self.bodies.inflight.is_some_and(|(p, _)| p == from) {
            self.bodies.inflight = None;
        }
        self.bodies_tick(now);
    }
}
