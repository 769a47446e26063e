//! What the node serves its peers: history and input bodies, from the
//! ledgers in memory or, older, from the store; each peer a few requests
//! a round.

use super::Node;
use crate::consensus::{bodies, catchup, Action, Wanted};
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
            let read = Action::ReadStored {
                to,
                from_seq,
                count,
                want: Wanted::History,
            };
            return self.out.push(read);
        };
        let window = self.chain.records().iter().skip(start as usize);
        let answer = catchup::serve(window.map(|r| &**r), count);
        self.send_history(to, answer);
    }

    /// The store read the ledgers a `ReadStored` asked for.
    pub(super) fn serve_stored(&mut self, to: PubKey, records: &[LedgerRecord], want: Wanted) {
        match want {
            Wanted::History => {
                let answer = catchup::serve(records, self.cfg.history_batch);
                self.send_history(to, answer);
            }
            Wanted::Bodies(hashes) => {
                let lookup = |h: &Hash| records.iter().find_map(|r| r.bodies.get(h));
                if let Some(bytes) = bodies::serve(&hashes, lookup) {
                    self.out.push(Action::Send { to, bytes });
                }
            }
        }
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
            return self.out.push(Action::Send { to, bytes });
        }
        // A peer whose contract lags further behind than our memory asks
        // for a ledger's bodies (one ledger's a request): the store has it.
        let seq = hashes.iter().find_map(|h| chain.included_in(h));
        if let Some(seq) = seq.filter(|s| *s < chain.base()) {
            self.out.push(Action::ReadStored {
                to,
                from_seq: seq,
                count: 1,
                want: Wanted::Bodies(hashes.to_vec()),
            });
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
