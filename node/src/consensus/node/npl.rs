//! The node's side of the party line: runs opening and
//! closing, what our contract writes, and what peers send. The rules are
//! in `npl::PartyLine`; this only moves bytes between it and the driver.

use super::Node;
use crate::consensus::message::PeerMessage;
use crate::consensus::Action;
use crate::crypto::PubKey;
use crate::npl::{ChunkVerdict, CutOff, NplEnvelope};

impl Node {
    /// The contract's session for ledger `seq` is open: what peers sent
    /// for it before it started goes in first.
    pub(super) fn npl_run_started(&mut self, seq: u64) {
        for bytes in self.npl.run_started(seq) {
            self.out.push(Action::ToContract { seq, bytes });
        }
    }

    /// Our contract wrote `bytes` while running ledger `seq`: signed and
    /// sent to the UNL, and heard by our own contract too, as every other
    /// node's is (a multisig contract then treats its own signature like
    /// the others').
    pub(super) fn npl_from_contract(&mut self, seq: u64, bytes: &[u8]) {
        let out = match self.npl.send(&self.key, seq, bytes) {
            Ok(out) => out,
            Err(e) => {
                tracing::debug!(seq, error = %e, "contract NPL output dropped");
                return;
            }
        };
        if let Some(c) = &out.cut_off {
            log_cut_off("our own contract", c);
        }
        for env in out.envelopes {
            let bytes = PeerMessage::Npl(Box::new(env)).encode();
            self.out.push(Action::Broadcast { bytes });
        }
        for bytes in out.records {
            self.out.push(Action::ToContract { seq, bytes });
        }
    }

    /// A chunk from peer `from` (a UNL member): delivered to the run in
    /// progress when its turn comes, and relayed where the mesh may not
    /// reach.
    pub(super) fn npl_from_peer(&mut self, from: PubKey, env: NplEnvelope) {
        let got = self.npl.receive(&self.cfg.unl, &self.ring, from, env);
        if let ChunkVerdict::CutOff(c) = &got.verdict {
            log_cut_off(&from.short(), c);
        }
        if let Some(seq) = self.npl.running() {
            for bytes in got.records {
                self.out.push(Action::ToContract { seq, bytes });
            }
        }
        if let Some(relay) = got.relay {
            let bytes = PeerMessage::Npl(Box::new(relay.env)).encode();
            for to in relay.to {
                let bytes = bytes.clone();
                self.out.push(Action::Send { to, bytes });
            }
        }
    }
}

fn log_cut_off(via: &str, c: &CutOff) {
    tracing::warn!(
        via,
        author = %c.author.short(),
        seq = c.seq,
        reason = ?c.reason,
        "NPL author over its limits: cut off for this run"
    );
}
