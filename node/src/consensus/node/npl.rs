//! The node's side of the party line: runs opening, what our contract
//! writes, and what peers send. The rules and their state are in
//! `npl::PartyLine`; this only turns what it says into actions.

use crate::consensus::message::PeerMessage;
use crate::consensus::{Action, ConsensusConfig};
use crate::crypto::{KeyRing, Keypair, PubKey};
use crate::npl::{ChunkVerdict, CutOff, NplEnvelope, PartyLine};

/// The contract's session for ledger `seq` is open: what peers sent for it
/// before it started goes in first.
pub(super) fn run_started(npl: &mut PartyLine, seq: u64) -> Vec<Action> {
    let records = npl.run_started(seq);
    (records.into_iter())
        .map(|bytes| Action::ToContract { seq, bytes })
        .collect()
}

/// Our contract wrote `bytes` while running ledger `seq`: signed and sent
/// to the UNL, and heard by our own contract too, as every other node's is
/// (a multisig contract then treats its own signature like the others').
pub(super) fn from_contract(
    npl: &mut PartyLine,
    key: &Keypair,
    seq: u64,
    bytes: &[u8],
) -> Vec<Action> {
    let out = match npl.send(key, seq, bytes) {
        Ok(out) => out,
        Err(e) => {
            tracing::debug!(seq, error = %e, "contract NPL output dropped");
            return vec![];
        }
    };
    if let Some(c) = &out.cut_off {
        log_cut_off("our own contract", c);
    }
    let mut actions = Vec::new();
    for env in out.envelopes {
        let bytes = PeerMessage::Npl(Box::new(env)).encode();
        actions.push(Action::Broadcast { bytes });
    }
    for bytes in out.records {
        actions.push(Action::ToContract { seq, bytes });
    }
    actions
}

/// A chunk from peer `from` (a UNL member): delivered to the run in
/// progress when its turn comes, and relayed where the mesh may not reach.
pub(super) fn from_peer(
    npl: &mut PartyLine,
    cfg: &ConsensusConfig,
    ring: &KeyRing,
    from: PubKey,
    env: NplEnvelope,
) -> Vec<Action> {
    let got = npl.receive(&cfg.unl, ring, from, env);
    if let ChunkVerdict::CutOff(c) = &got.verdict {
        log_cut_off(&from.short(), c);
    }
    let mut actions = Vec::new();
    if let Some(seq) = npl.running() {
        for bytes in got.records {
            actions.push(Action::ToContract { seq, bytes });
        }
    }
    if let Some(relay) = got.relay {
        let bytes = PeerMessage::Npl(Box::new(relay.env)).encode();
        for to in relay.to {
            let bytes = bytes.clone();
            actions.push(Action::Send { to, bytes });
        }
    }
    actions
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
