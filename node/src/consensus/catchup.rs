//! Catching up history from peers that are ahead.
//!
//! A node learns that it is behind from signed proposals naming a higher lcl.
//! It asks one such peer at a time for a bounded batch, gives it a stage to
//! answer, then moves on to the next peer; every fetched ledger is checked by
//! [`crate::sync::verify_record`] before it joins the chain.

use super::message::PeerMessage;
use super::node::{Action, CloseVia, Event, Node};
use crate::crypto::PubKey;
use crate::ledger::{ChainError, LedgerId, LedgerRecord};
use crate::sync::{verify_record, SyncError};
use crate::wire::MAX_FRAME_BYTES;
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct Catchup {
    inflight: Option<Inflight>,
    /// Peers asked lately and when; a slow but honest answer from one of
    /// them is still welcome after we moved on to the next peer.
    asked: BTreeMap<PubKey, u64>,
    /// Rotates the peer asked, so one silent or lying peer cannot stall us.
    attempt: usize,
}

#[derive(Debug)]
struct Inflight {
    peer: PubKey,
    deadline: u64,
}

impl Catchup {
    pub fn deadline(&self) -> Option<u64> {
        self.inflight.as_ref().map(|f| f.deadline)
    }
}

impl Node {
    /// How long a peer gets to answer a history or body request: one stage
    /// is several round trips on any sane link, while waiting a whole round
    /// for a lost request cost a ledger under loss.
    pub(super) fn patience(&self) -> u64 {
        self.cfg.stage_ms().max(50)
    }

    /// Starts or retries a history request if a recent proposal showed a
    /// peer ahead of us.
    pub(super) fn catchup_tick(&mut self, now: u64) {
        if let Some(f) = &self.sync.inflight {
            if now < f.deadline {
                return;
            }
            self.sync.inflight = None;
            self.sync.attempt += 1;
        }
        let me = self.key.public();
        let my_seq = self.lcl().seq;
        let round = self.slot.map_or(0, |s| s.round);
        let skew = self.cfg.max_round_skew;
        let ahead: Vec<PubKey> = self
            .peer_lcl
            .iter()
            .filter(|(k, (id, r))| **k != me && id.seq > my_seq && r + skew >= round)
            .map(|(k, _)| *k)
            .collect();
        if ahead.is_empty() {
            return;
        }
        let peer = ahead[self.sync.attempt % ahead.len()];
        let bytes = PeerMessage::HistoryRequest {
            from_seq: my_seq + 1,
            count: self.cfg.history_batch,
        }
        .encode();
        self.out.push(Action::Send { to: peer, bytes });
        self.sync.inflight = Some(Inflight {
            peer,
            deadline: now + self.patience(),
        });
        self.sync.asked.insert(peer, now);
        let horizon = now.saturating_sub(self.cfg.roundtime_ms * 2);
        self.sync.asked.retain(|_, at| *at >= horizon);
    }

    pub(super) fn serve_history(&mut self, from: PubKey, from_seq: u64, count: u64) {
        if !self.cfg.in_unl(&from) {
            self.stats.dropped_not_unl += 1;
            return;
        }
        if !self.may_serve(from) {
            return;
        }
        let count = count.min(self.cfg.history_batch) as usize;
        let start = from_seq.min(self.chain.len() as u64) as usize;
        // Measured, not estimated: a proof repeats the ledger's input list
        // once per signer, so sizes vary a lot.
        let mut budget = MAX_FRAME_BYTES - 1024;
        let mut records: Vec<LedgerRecord> = Vec::new();
        for r in self.chain[start..].iter().take(count) {
            let size = postcard::experimental::serialized_size(r).unwrap_or(usize::MAX);
            if size > budget {
                break;
            }
            budget -= size;
            records.push(r.clone());
        }
        if records.is_empty() {
            return;
        }
        self.stats.history_served += 1;
        let bytes = PeerMessage::HistoryResponse(records).encode();
        self.out.push(Action::Send { to: from, bytes });
    }

    pub(super) fn on_history(&mut self, now: u64, from: PubKey, records: Vec<LedgerRecord>) {
        if !self.sync.asked.contains_key(&from) {
            self.stats.dropped_duplicate += 1; // unsolicited
            return;
        }
        if self.sync.inflight.as_ref().is_some_and(|f| f.peer == from) {
            self.sync.inflight = None;
        }
        let mut adopted = Vec::new();
        for rec in records {
            if rec.ledger.seq <= self.lcl().seq {
                continue;
            }
            let mut result = verify_record(
                &self.cfg.unl,
                self.cfg.needed(self.cfg.close_threshold_pct),
                &self.ring,
                &self.lcl(),
                &rec,
            );
            if let Err(SyncError::Chain(ChainError::Prev { .. })) = result {
                // A proven ledger on top of another parent at our seq means
                // the UNL finalised that parent, not our lcl.
                let parent = LedgerId {
                    seq: rec.ledger.seq - 1,
                    hash: rec.ledger.prev,
                };
                // Only before anything from this answer was adopted: a batch
                // that extends our chain and then proves another parent
                // contradicts itself, and is rejected below.
                if adopted.is_empty()
                    && parent.seq == self.lcl().seq
                    && verify_record(
                        &self.cfg.unl,
                        self.cfg.needed(self.cfg.close_threshold_pct),
                        &self.ring,
                        &parent,
                        &rec,
                    )
                    .is_ok()
                    && self.rollback(true)
                {
                    self.stats.signature_checks += rec.proof.len() as u64;
                    break; // ask again from the seq we now lack
                }
                result = verify_record(
                    &self.cfg.unl,
                    self.cfg.needed(self.cfg.close_threshold_pct),
                    &self.ring,
                    &self.lcl(),
                    &rec,
                );
            }
            match result {
                Ok(()) => {
                    self.stats.signature_checks += rec.proof.len() as u64;
                    let rec = self.append(rec).clone();
                    adopted.push(rec);
                }
                Err(e) => {
                    self.stats.history_rejected += 1;
                    self.sync.attempt += 1;
                    tracing::warn!(peer = ?from, error = %e, "rejecting history");
                    self.out.push(Action::Notify(Event::HistoryRejected {
                        peer: from,
                        reason: e.to_string(),
                    }));
                    break;
                }
            }
        }
        if adopted.is_empty() {
            if !matches!(
                self.out.last(),
                Some(Action::Notify(Event::RolledBack { .. }))
            ) {
                self.sync.attempt += 1;
            }
        } else {
            self.stats.history_adopted += adopted.len() as u64;
            for r in &adopted {
                self.out.push(Action::Persist(Box::new(r.clone())));
            }
            self.out.push(Action::Sync);
            for r in &adopted {
                self.out.push(Action::Notify(Event::LedgerClosed {
                    ledger: r.ledger.clone(),
                    hash: r.hash,
                    via: CloseVia::History,
                }));
            }
            for r in adopted {
                self.schedule_run(r.ledger.seq);
            }
        }
        self.catchup_tick(now);
    }
}
