//! A per-peer, per-round budget of requests served, so a UNL member cannot
//! make this node send large answers back to back.

use crate::crypto::PubKey;
use std::collections::BTreeMap;

/// Requests served to each peer, counted per round.
#[derive(Debug, Default)]
pub struct Served(BTreeMap<PubKey, (u64, u32)>);

impl Served {
    /// Counts one more request from `peer` in `round`, unless `cap` were
    /// served already; returns whether it may be served.
    pub fn take(&mut self, peer: PubKey, round: u64, cap: u32) -> bool {
        let entry = self.0.entry(peer).or_insert((round, 0));
        if entry.0 != round {
            *entry = (round, 0);
        }
        if entry.1 >= cap {
            return false;
        }
        entry.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_peer_per_round() {
        let mut s = Served::default();
        let (a, b) = (PubKey([1; 32]), PubKey([2; 32]));
        assert!(s.take(a, 1, 2) && s.take(a, 1, 2));
        assert!(!s.take(a, 1, 2));
        assert!(s.take(b, 1, 2), "another peer has its own budget");
        assert!(s.take(a, 2, 2), "a new round starts over");
    }
}
