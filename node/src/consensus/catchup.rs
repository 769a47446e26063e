//! Catching up history from peers that are ahead.
//!
//! A node learns that it is behind from signed proposals naming a higher lcl.
//! It asks one such peer at a time for a bounded batch, gives it a stage to
//! answer, then moves on to the next peer; every fetched ledger is checked by
//! [`crate::sync::verify_record`] before it joins the chain.

use super::message::PeerMessage;
use super::{Action, ConsensusConfig};
use crate::crypto::{KeyRing, PubKey};
use crate::ledger::{ChainError, LedgerId, LedgerRecord};
use crate::sync::history::verify_record_signed;
use crate::sync::SyncError;
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

/// What a history answer holds, checked against our lcl.
#[derive(Debug)]
pub enum Answer {
    /// The ledgers that extend our chain, in order (maybe none), and why
    /// the rest was refused, if it was.
    Extends {
        ledgers: Vec<LedgerRecord>,
        refused: Option<SyncError>,
    },
    /// A ledger proven on top of another parent at our lcl's seq: the UNL
    /// finalised that parent, not our lcl. `signers` checked the proof.
    OtherParent {
        /// The parent the proof names: a ledger at our lcl's seq.
        parent: LedgerId,
        signers: usize,
        /// Why the answer is refused if our lcl cannot be rolled back.
        refused: SyncError,
    },
}

impl Catchup {
    pub fn deadline(&self) -> Option<u64> {
        self.inflight.as_ref().map(|f| f.deadline)
    }

    /// Asks the next of the peers `ahead` for the ledgers after `my_seq`,
    /// unless a request is still in time. `ahead` is only read when a
    /// request may go.
    pub fn tick(
        &mut self,
        cfg: &ConsensusConfig,
        now: u64,
        my_seq: u64,
        ahead: impl FnOnce() -> Vec<PubKey>,
    ) -> Option<Action> {
        if let Some(f) = &self.inflight {
            if now < f.deadline {
                return None;
            }
            self.inflight = None;
            self.attempt += 1;
        }
        let ahead = ahead();
        if ahead.is_empty() {
            return None;
        }
        let peer = ahead[self.attempt % ahead.len()];
        let bytes = PeerMessage::HistoryRequest {
            from_seq: my_seq + 1,
            count: cfg.history_batch,
        }
        .encode();
        self.inflight = Some(Inflight {
            peer,
            deadline: now + patience(cfg),
        });
        self.asked.insert(peer, now);
        let horizon = now.saturating_sub(cfg.roundtime_ms * 2);
        self.asked.retain(|_, at| *at >= horizon);
        Some(Action::Send { to: peer, bytes })
    }

    /// Whether an answer from `from` was asked for; if it is the one in
    /// flight, the next request may go at once.
    pub fn answered(&mut self, from: &PubKey) -> bool {
        if !self.asked.contains_key(from) {
            return false;
        }
        if self.inflight.as_ref().is_some_and(|f| f.peer == *from) {
            self.inflight = None;
        }
        true
    }

    /// The answer did not help: the next request goes to the next peer.
    pub fn failed(&mut self) {
        self.attempt += 1;
    }
}

/// How long a peer gets to answer a history or body request: one stage
/// is several round trips on any sane link, while waiting a whole round
/// for a lost request cost a ledger under loss.
pub fn patience(cfg: &ConsensusConfig) -> u64 {
    cfg.stage_ms().max(50)
}

/// Checks a history answer against our lcl: each ledger must extend the
/// one before, with its close proof. Nothing is adopted here.
pub fn check_answer(
    cfg: &ConsensusConfig,
    ring: &KeyRing,
    lcl: LedgerId,
    records: Vec<LedgerRecord>,
) -> Answer {
    let mut needed = cfg.needed(cfg.close_threshold_pct);
    if super::planted!(cfg, WeakHistoryProof) {
        needed = 1;
    }
    let unchecked_bodies = super::planted!(cfg, UncheckedBodies);
    let no_link_check = super::planted!(cfg, NoLinkCheck);
    let sibling_as_proof = super::planted!(cfg, SiblingAsProof);
    let ring = (!super::planted!(cfg, NoProofSignatureCheck)).then_some(ring);
    let verify = |lcl: &LedgerId, rec: &LedgerRecord| {
        if no_link_check {
            // Checked against the parent it names, the link always holds.
            let named = LedgerId {
                seq: rec.ledger.seq - 1,
                hash: rec.ledger.prev,
            };
            return verify_record_signed(&cfg.unl, needed, ring, &named, rec);
        }
        if unchecked_bodies {
            let bare = LedgerRecord {
                bodies: Default::default(),
                ..rec.clone()
            };
            return verify_record_signed(&cfg.unl, needed, ring, lcl, &bare);
        }
        verify_record_signed(&cfg.unl, needed, ring, lcl, rec)
    };
    let mut tip = lcl;
    let mut ledgers: Vec<LedgerRecord> = Vec::new();
    for rec in records {
        if sibling_as_proof && ledgers.is_empty() {
            if let Some(wrong) = sibling_as_proof_of_loss(lcl, &rec, &verify) {
                return wrong;
            }
        }
        if rec.ledger.seq <= tip.seq {
            continue;
        }
        match verify(&tip, &rec) {
            Ok(()) => {
                tip = rec.id();
                ledgers.push(rec);
            }
            Err(e) => {
                let parent = LedgerId {
                    seq: rec.ledger.seq - 1,
                    hash: rec.ledger.prev,
                };
                // Only before anything from this answer extended the chain:
                // a batch that extends our chain and then proves another
                // parent contradicts itself, and is refused.
                if matches!(e, SyncError::Chain(ChainError::Prev { .. }))
                    && ledgers.is_empty()
                    && parent.seq == tip.seq
                    && verify(&parent, &rec).is_ok()
                {
                    return Answer::OtherParent {
                        parent,
                        signers: rec.proof.len(),
                        refused: e,
                    };
                }
                return Answer::Extends {
                    ledgers,
                    refused: Some(e),
                };
            }
        }
    }
    Answer::Extends {
        ledgers,
        refused: None,
    }
}

/// The planted bug `SiblingAsProof`: another ledger at our lcl's seq, with
/// its own close proof, taken for a proof that our lcl lost. Only a proof
/// of a ledger on top of it shows that (`Answer::OtherParent`).
fn sibling_as_proof_of_loss(
    lcl: LedgerId,
    rec: &LedgerRecord,
    verify: &dyn Fn(&LedgerId, &LedgerRecord) -> Result<(), SyncError>,
) -> Option<Answer> {
    let parent = LedgerId {
        seq: lcl.seq.checked_sub(1)?,
        hash: rec.ledger.prev,
    };
    if rec.ledger.seq != lcl.seq || rec.id() == lcl || verify(&parent, rec).is_err() {
        return None;
    }
    let refused = SyncError::Chain(ChainError::Prev {
        seq: rec.ledger.seq,
        named: rec.hash,
        actual: lcl.hash,
    });
    Some(Answer::OtherParent {
        parent: rec.id(),
        signers: rec.proof.len(),
        refused,
    })
}

/// Answers a history request with `records` (the ledgers from the asked
/// seq on, from memory or the store): at most `count` of them within one
/// frame: the encoded answer, or `None` if there are none.
pub fn serve<'a>(
    records: impl IntoIterator<Item = &'a LedgerRecord>,
    count: u64,
) -> Option<Vec<u8>> {
    let mut budget = MAX_FRAME_BYTES - 1024;
    let mut out: Vec<LedgerRecord> = Vec::new();
    for r in records.into_iter().take(count as usize) {
        let size = r.encoded_len();
        if size > budget {
            break;
        }
        budget -= size;
        out.push(r.clone());
    }
    if out.is_empty() {
        return None;
    }
    Some(PeerMessage::HistoryResponse(out).encode())
}
