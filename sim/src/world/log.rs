//! What a picture is drawn from: every message with its fate, and the
//! marks (closes, rollbacks, faults) on the nodes' lanes. Kept only when a
//! run asks for it (`run --picture`); recording reads the run and never
//! feeds back into it, so trace hashes stay the same.

use crate::scenario::Fault;
use hotpocket_node::consensus::{CloseVia, Event, PeerMessage};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Still on the wire when the run ended.
    InFlight,
    Delivered(u64),
    /// Lost to the link's loss rate at send time.
    Lost,
    /// Dropped by a partition or block (at send, or in flight).
    Blocked(u64),
    /// Arrived at a node that was down.
    Dead(u64),
}

#[derive(Clone, Debug)]
pub struct Msg {
    pub from: usize,
    pub to: usize,
    pub sent: u64,
    pub fate: Fate,
    /// Colour class: "s0".."s3" (proposals by stage), "history", "bodies",
    /// "state", "npl", "other".
    pub kind: &'static str,
    /// The decoded content, for hovering.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkKind {
    Close,
    Rollback,
    /// A state install, a fork seen, a divergence: worth a glance.
    Note,
    /// A timeline fault; `node` is `None` for network-wide ones.
    Fault,
}

#[derive(Clone, Debug)]
pub struct Mark {
    pub t: u64,
    pub node: Option<usize>,
    pub kind: MarkKind,
    pub text: String,
    /// When a fault with a known end ends (a cut scoped to rounds).
    pub until: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct Log {
    pub msgs: Vec<Msg>,
    pub marks: Vec<Mark>,
}

impl Log {
    /// A message leaves `from` for `to` at `t`; returns its index, by which
    /// its fate is told later.
    pub fn sent(&mut self, t: u64, from: usize, to: usize, bytes: &[u8]) -> usize {
        let (kind, detail) = describe(bytes);
        self.msgs.push(Msg {
            from,
            to,
            sent: t,
            fate: Fate::InFlight,
            kind,
            detail,
        });
        self.msgs.len() - 1
    }

    pub fn fate(&mut self, id: usize, fate: Fate) {
        if let Some(m) = self.msgs.get_mut(id) {
            m.fate = fate;
        }
    }

    pub fn event(&mut self, t: u64, node: usize, ev: &Event) {
        let (kind, text) = match ev {
            Event::LedgerClosed { ledger, hash, via } => (
                MarkKind::Close,
                format!(
                    "closed seq {} {} ({} inputs){}",
                    ledger.seq,
                    short(&hash.to_string()),
                    ledger.inputs.len(),
                    if *via == CloseVia::Consensus {
                        ""
                    } else {
                        " from history"
                    }
                ),
            ),
            Event::RolledBack { from, to, .. } => (
                MarkKind::Rollback,
                format!("rolled back seq {} to {}", from.seq, to.seq),
            ),
            Event::ForkSeen { seq, .. } => (MarkKind::Note, format!("saw a fork at seq {seq}")),
            Event::StateSynced { seq, .. } => {
                (MarkKind::Note, format!("installed the state of {seq}"))
            }
            Event::StateMismatch { seq } => (MarkKind::Note, format!("its run of {seq} differs")),
            Event::Started { lcl } => (MarkKind::Note, format!("started at seq {}", lcl.seq)),
            _ => return,
        };
        self.marks.push(Mark {
            t,
            node: Some(node),
            kind,
            text,
            until: None,
        });
    }

    /// A timeline fault, marked on its node's lane (or across all), its
    /// text led by its action ("partition", "heal", "crash" ...).
    pub fn fault(&mut self, t: u64, fault: &Fault, until: Option<u64>) {
        let node = match fault {
            Fault::Crash { node }
            | Fault::CrashMidWrite { node }
            | Fault::Restart { node }
            | Fault::Pause { node }
            | Fault::Resume { node }
            | Fault::Clock { node, .. }
            | Fault::Mutate { node, .. } => Some(*node),
            _ => None,
        };
        let v = serde_json::to_value(fault).unwrap_or_default();
        let action = v["action"].as_str().unwrap_or("fault").to_string();
        self.marks.push(Mark {
            t,
            node,
            kind: MarkKind::Fault,
            text: format!("{action} {v}"),
            until,
        });
    }
}

/// Records a message in `log` if there is one, with its fate if known
/// already; returns its index.
pub fn record(
    log: &mut Option<Log>,
    t: u64,
    from: usize,
    to: usize,
    bytes: &[u8],
    fate: Option<Fate>,
) -> Option<usize> {
    let log = log.as_mut()?;
    let id = log.sent(t, from, to, bytes);
    if let Some(f) = fate {
        log.fate(id, f);
    }
    Some(id)
}

fn short(h: &str) -> &str {
    &h[..h.len().min(8)]
}

/// A message's colour class and a one-line decoding of it.
pub fn describe(bytes: &[u8]) -> (&'static str, String) {
    let Ok(m) = PeerMessage::decode(bytes) else {
        return ("other", format!("undecodable, {} bytes", bytes.len()));
    };
    match m {
        PeerMessage::Proposal(sp) => {
            let p = &sp.proposal;
            let kind = ["s0", "s1", "s2", "s3"]
                .get(p.stage as usize)
                .copied()
                .unwrap_or("other");
            let detail = format!(
                "proposal round {} stage {} on lcl {} {}, {} inputs, {} verdicts, time {}",
                p.round,
                p.stage,
                p.lcl.seq,
                short(&p.lcl.hash.to_string()),
                p.inputs.len(),
                p.results.len(),
                p.time
            );
            (kind, detail)
        }
        PeerMessage::Inputs(b) => ("bodies", format!("{} input bodies", b.len())),
        PeerMessage::BodyRequest(h) => ("bodies", format!("asks for {} bodies", h.len())),
        PeerMessage::BodyResponse(b) => ("bodies", format!("{} bodies", b.len())),
        PeerMessage::HistoryRequest { from_seq, count } => (
            "history",
            format!("asks for {count} ledgers from seq {from_seq}"),
        ),
        PeerMessage::HistoryResponse(r) => (
            "history",
            match (r.first(), r.last()) {
                (Some(a), Some(b)) => format!(
                    "{} ledgers, seq {}..={}",
                    r.len(),
                    a.ledger.seq,
                    b.ledger.seq
                ),
                _ => "no ledgers".into(),
            },
        ),
        PeerMessage::StateRequest(q) => ("state", format!("state request {q:?}")),
        PeerMessage::StateResponse(_) => ("state", "state response".into()),
        PeerMessage::Npl(e) => ("npl", format!("npl chunk, {} hops", e.hops)),
        PeerMessage::OutputSig(s) => ("other", format!("output signature, seq {}", s.seq)),
    }
}
