//! The run's trace: every node event, message fate and fault, hashed in the
//! order they happen, so the hash fingerprints the whole execution.

use hotpocket_node::consensus::Event;
use hotpocket_node::crypto::{Hash, Hasher};
use std::collections::VecDeque;
use std::sync::Arc;

/// Ledger closes whose JSON is kept: every node reports each close, a few
/// seqs apart at most when some fall behind.
const CLOSES_KEPT: usize = 64;

pub struct Trace {
    hasher: Hasher,
    /// Entries hashed so far.
    pub(super) events: u64,
    /// Recent close events with their JSON: a close carries its whole
    /// ledger (at 16 nodes, 32 signed beacon entries), and encoding it
    /// again for each node that reports it cost more than the protocol's
    /// own tallies.
    closes: VecDeque<(Event, Arc<[u8]>)>,
}

impl Trace {
    pub fn new(seed: u64) -> Trace {
        let mut hasher = Hasher::new("hotpocket-sim/trace/v1");
        hasher.u64(seed);
        Trace {
            hasher,
            events: 0,
            closes: VecDeque::new(),
        }
    }

    /// Hashes `what`, which `node` did at `t`.
    pub fn record(&mut self, t: u64, node: usize, what: &[u8]) {
        self.hasher.u64(t).u64(node as u64).bytes(what);
        self.events += 1;
    }

    pub fn hash(&mut self) -> Hash {
        self.hasher.finish()
    }

    /// `ev` as JSON: the bytes the trace hashes for a node's event. An
    /// event equal to a recent close is that close's bytes.
    pub fn event_json(&mut self, ev: &Event) -> Arc<[u8]> {
        let encode =
            |ev: &Event| -> Arc<[u8]> { serde_json::to_vec(ev).expect("events serialize").into() };
        if !matches!(ev, Event::LedgerClosed { .. }) {
            return encode(ev);
        }
        if let Some((_, json)) = self.closes.iter().find(|(e, _)| e == ev) {
            return json.clone();
        }
        let json = encode(ev);
        if self.closes.len() == CLOSES_KEPT {
            self.closes.pop_front();
        }
        self.closes.push_back((ev.clone(), json.clone()));
        json
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpocket_node::consensus::{CloseVia, VoteStatus};
    use hotpocket_node::ledger::Ledger;

    fn close(seq: u64, time: u64, via: CloseVia) -> Event {
        let ledger = Ledger {
            seq,
            prev: Hash([1; 32]),
            time,
            inputs: vec![Hash([2; 32])],
            verdicts: vec![],
            beacon: Default::default(),
        };
        Event::LedgerClosed {
            hash: ledger.hash(),
            ledger,
            via,
        }
    }

    #[test]
    fn an_event_is_its_json_remembered_or_not() {
        let mut t = Trace::new(1);
        let events = [
            close(3, 10, CloseVia::Consensus),
            close(3, 10, CloseVia::Consensus),
            close(3, 10, CloseVia::History),
            close(3, 11, CloseVia::Consensus),
            Event::Status(VoteStatus::Synced),
            close(4, 10, CloseVia::Consensus),
            close(3, 10, CloseVia::Consensus),
        ];
        for ev in &events {
            assert_eq!(&*t.event_json(ev), &serde_json::to_vec(ev).unwrap()[..]);
        }
        // Four distinct closes kept; a status is not.
        assert_eq!(t.closes.len(), 4);
        for i in 0..CLOSES_KEPT as u64 + 10 {
            let ev = close(10 + i, 0, CloseVia::Consensus);
            assert_eq!(&*t.event_json(&ev), &serde_json::to_vec(&ev).unwrap()[..]);
        }
        assert_eq!(t.closes.len(), CLOSES_KEPT);
    }

    #[test]
    fn the_hash_covers_time_node_and_bytes() {
        let hash = |entries: &[(u64, usize, &[u8])]| {
            let mut t = Trace::new(1);
            for (at, node, what) in entries {
                t.record(*at, *node, what);
            }
            t.hash()
        };
        let base = hash(&[(1, 0, b"a"), (2, 1, b"b")]);
        assert_eq!(base, hash(&[(1, 0, b"a"), (2, 1, b"b")]));
        assert_ne!(base, hash(&[(1, 0, b"a"), (3, 1, b"b")]));
        assert_ne!(base, hash(&[(1, 0, b"a"), (2, 2, b"b")]));
        assert_ne!(base, hash(&[(1, 0, b"a"), (2, 1, b"c")]));
        assert_ne!(base, hash(&[(2, 1, b"b"), (1, 0, b"a")]));
    }
}
