//! What the node serves its peers: history, from the ledgers in memory or,
//! older, from the store, and input bodies; each peer a few requests a
//! round.

use super::Node;
use crate::consensus::{bodies, catchup, Action};
use crate::crypto::{Hash, PubKey};
use crate::ledger::LedgerRecord;

/// History or body requests served to one peer per round. An honest node
/// asks once per stage at most.
const MAX_REQUESTS_PER_ROUND: u32 = 8;

impl Node {
    pub(super) fn serve_history(&mut self, to: PubKey, from_seq: u64, count: u64) {
        if !self.may_serve(to) {
            return;
        }
        let count = count.min(self.cfg.history_batch);
        let Some(start) = from_seq.checked_sub(self.chain.base()) else {
            // Older than the ledgers in memory: the store has them.
            let read = Action::ReadHistory {
                to,
                from_seq,
                count,
            };
            return self.out.push(read);
        };
        let window = self.chain.records().iter().skip(start as usize);
        let answer = catchup::serve(window.map(|r| &**r), count);
        self.send_history(to, answer);
    }

    /// The store read the ledgers a `ReadHistory` asked for.
    pub(super) fn serve_stored(&mut self, to: PubKey, records: &[LedgerRecord]) {
        let answer = catchup::serve(records, self.cfg.history_batch);
        self.send_history(to, answer);
    }

    fn send_history(&mut self, to: PubKey, answer: Option<Vec<u8>>) {
        if let Some(bytes) = answer {
            self.stats.history_served += 1;
            self.out.push(Action::Send { to, bytes });
        }
    }

    pub(super) fn serve_bodies(&mut self, to: PubKey, hashes: &[Hash]) {
        if !self.may_serve(to) {
            return;
        }
        let (pool, chain) = (&self.pool, &self.chain);
        let found = bodies::serve(hashes, |h| pool.get(h).or_else(|| chain.body(h)));
        if let Some(bytes) = found {
            self.out.push(Action::Send { to, bytes });
        }
    }

    /// Whether `peer` may have one more history or body request served this
    /// round; counts it if so.
    fn may_serve(&mut self, peer: PubKey) -> bool {
        let ok = self.served.take(peer, self.round(), MAX_REQUESTS_PER_ROUND);
        if !ok {
            self.stats.requests_refused += 1;
        }
        ok
    }
}
