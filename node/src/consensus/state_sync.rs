//! Catching up contract state from peers instead of running every ledger.
//!
//! A node whose contract is more than `state_sync_gap` ledgers behind its
//! lcl (after a long partition, or a restart with an old state) fetches the
//! state the lcl certifies: ledger N carries the state hash of running
//! N-1, signed by the close threshold of the UNL. The driver reads the
//! local tree, [`StateFetch`] walks the differences hash by hash, asking
//! the peers that are past that ledger a few requests at a time, and the
//! verified patch goes to the contract host, which swaps it in atomically.
//! Then the node runs the ledgers after it as usual.

use super::message::PeerMessage;
use super::node::{Action, Event, Node};
use crate::contract::ExecResult;
use crate::contract::StateNode;
use crate::crypto::PubKey;
use crate::sync::state_transfer::{
    FetchError, FetchStats, StateFetch, StateRequest, StateResponse, Step, CHUNK_BYTES,
};
use std::collections::BTreeMap;

/// Requests in flight at once, over all peers.
const WINDOW: usize = 8;
/// State requests served to one peer per round: 32 pieces of 512 KiB is
/// 16 MiB a round, plenty for a node catching up.
const MAX_STATE_REQUESTS_PER_ROUND: u32 = 32;
/// Ledgers the target may fall behind the newest certified state before
/// the fetch moves on to that, even if peers still answer.
const MAX_TARGET_LAG: u64 = 4;
/// Rounds without a newly verified listing or file before a fetch is
/// given up (nobody holds the state, or it cannot be listed): the node
/// then runs the ledgers itself, and tries a fetch again this many rounds
/// later if it is still far behind.
const STALL_ROUNDS: u64 = 20;

#[derive(Default)]
pub struct StateSync {
    phase: Phase,
    inflight: BTreeMap<StateRequest, (PubKey, u64)>,
    /// Times each request came back missing, wrong or not at all.
    misses: BTreeMap<StateRequest, usize>,
    /// Where a request goes if it is sent again: the peer after the one
    /// that had it last, so every peer gets its turn whatever their number.
    next_peer: BTreeMap<StateRequest, usize>,
    /// Requests sent, so first tries spread over the peers.
    sent: usize,
    /// After a failed or abandoned sync, when to try again.
    retry_at: u64,
    /// When the fetch last verified something (or started).
    progress_at: u64,
    /// Numbers `ReadState` requests, so a tree read for an abandoned
    /// sync is never used for a later one.
    reads: u64,
    /// Files whose digest failed once: all their pieces then come from
    /// one peer (the next one after each failure), as which piece was bad
    /// cannot be told.
    pinned: BTreeMap<[u8; 32], usize>,
    /// Something changed since the last walk of the target tree (an
    /// answer, a timeout, a new target): walking it on every message
    /// would cost a pass over the differing tree each time.
    dirty: bool,
    /// Requests served per peer in the current round.
    served: super::node::Served,
}

#[derive(Default)]
enum Phase {
    #[default]
    Idle,
    /// Waiting for the driver to read the local tree. `from` is the first
    /// ledger whose run is skipped.
    Reading {
        from: u64,
        seq: u64,
        result: ExecResult,
    },
    Fetching {
        from: u64,
        fetch: Box<StateFetch>,
    },
    Installing {
        from: u64,
        seq: u64,
        result: ExecResult,
        stats: FetchStats,
    },
}

impl StateSync {
    pub fn deadline(&self) -> Option<u64> {
        self.inflight.values().map(|(_, d)| *d).min()
    }

    /// Whether runs must wait: the contract state is being replaced.
    pub fn active(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }
}

impl Node {
    /// The newest state the chain certifies: the lcl's predecessor's run.
    fn certified_target(&self) -> Option<(u64, ExecResult)> {
        let lcl = self.chain.last()?;
        let seq = lcl.ledger.seq.checked_sub(1)?;
        let result = ExecResult {
            state: lcl.ledger.state,
            output: lcl.ledger.output,
        };
        Some((seq, result))
    }

    /// Called before runs are handed out: starts a state sync if the
    /// contract is too far behind.
    pub(super) fn maybe_start_state_sync(&mut self, now: u64) {
        let gap = self.cfg.state_sync_gap;
        if gap == 0 || self.state.active() || now < self.state.retry_at {
            return;
        }
        let Some(&from) = self.bodies.waiting.first() else {
            return;
        };
        let Some((seq, result)) = self.certified_target() else {
            return;
        };
        // `from - 1` is what the contract holds once queued runs are done.
        if seq < from || seq - (from - 1) <= gap {
            return;
        }
        tracing::debug!(from, seq, "skipping runs for a state sync");
        self.forget_runs_upto(seq);
        self.state.phase = Phase::Reading { from, seq, result };
        self.state.reads += 1;
        self.out.push(Action::ReadState {
            id: self.state.reads,
        });
        self.out.push(Action::Notify(Event::StateSyncStarted {
            seq,
            behind: seq + 1 - from,
        }));
    }

    pub(super) fn on_local_state(&mut self, now: u64, id: u64, tree: StateNode) {
        let Phase::Reading { from, seq, result } = self.state.phase else {
            return;
        };
        if id != self.state.reads {
            return; // read for a sync given up since
        }
        let fetch = Box::new(StateFetch::new(seq, result, &tree));
        self.state.phase = Phase::Fetching { from, fetch };
        self.state.inflight.clear();
        self.state.misses.clear();
        self.state.next_peer.clear();
        self.state.pinned.clear();
        self.state.progress_at = now;
        self.state.dirty = true;
        self.statesync_tick(now);
    }

    /// Expires lost requests, moves the target on if it fell behind, and
    /// sends what the fetch needs next, or hands over the finished patch.
    pub(super) fn statesync_tick(&mut self, now: u64) {
        if !matches!(self.state.phase, Phase::Fetching { .. }) {
            return;
        }
        let Phase::Fetching { from, mut fetch } = std::mem::take(&mut self.state.phase) else {
            unreachable!("checked above");
        };
        let expired: Vec<StateRequest> = self
            .state
            .inflight
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(r, _)| r.clone())
            .collect();
        for r in expired {
            self.state.inflight.remove(&r);
            self.state_miss(r);
            self.state.dirty = true;
        }
        let peers = self.state_peers(fetch.seq);
        if let Some((seq, result)) = self.certified_target().filter(|(s, _)| *s > fetch.seq) {
            let stuck = self.state.misses.values().any(|&m| m >= peers.len().max(1));
            if stuck || seq - fetch.seq >= MAX_TARGET_LAG {
                tracing::debug!(
                    from = fetch.seq,
                    to = seq,
                    "state sync moves to a newer state"
                );
                fetch.retarget(seq, result);
                self.state.misses.clear();
                self.state.next_peer.clear();
                self.state.inflight.clear();
                self.state.dirty = true;
                self.forget_runs_upto(seq);
            }
        }
        let stalled =
            now.saturating_sub(self.state.progress_at) > STALL_ROUNDS * self.cfg.roundtime_ms;
        if stalled || peers.is_empty() {
            self.state.inflight.clear();
            self.state.retry_at = now + STALL_ROUNDS * self.cfg.roundtime_ms;
            self.out
                .push(Action::Notify(Event::StateSyncAbandoned { seq: fetch.seq }));
            return self.restore_runs(from, fetch.seq);
        }
        if !std::mem::take(&mut self.state.dirty) {
            self.state.phase = Phase::Fetching { from, fetch };
            return;
        }
        let reqs = match fetch.step() {
            Step::Want(reqs) => reqs,
            Step::Done(patch) => {
                let (seq, result, stats) = (patch.seq, patch.result, fetch.stats);
                tracing::debug!(seq, ?stats, "state fetched; installing");
                self.state.inflight.clear();
                self.state.phase = Phase::Installing {
                    from,
                    seq,
                    result,
                    stats,
                };
                self.out.push(Action::InstallState(Box::new(patch)));
                return;
            }
        };
        let peers = self.state_peers(fetch.seq);
        self.state.phase = Phase::Fetching { from, fetch };
        if peers.is_empty() {
            return;
        }
        // A whole round: a 512 KiB piece may take a while on a slow link,
        // and the other requests in flight go on meanwhile.
        let patience = self.cfg.roundtime_ms;
        let st = &mut self.state;
        for r in reqs {
            if st.inflight.len() >= WINDOW {
                break;
            }
            if st.inflight.contains_key(&r) {
                continue;
            }
            let pin = match &r {
                StateRequest::Chunk { digest, .. } => st.pinned.get(digest).copied(),
                StateRequest::Dir(_) => None,
            };
            let turn = pin.unwrap_or_else(|| st.next_peer.get(&r).copied().unwrap_or(st.sent));
            let peer = peers[turn % peers.len()];
            st.sent += 1;
            st.next_peer.insert(r.clone(), turn + 1);
            let bytes = PeerMessage::StateRequest(r.clone()).encode();
            self.out.push(Action::Send { to: peer, bytes });
            st.inflight.insert(r, (peer, now + patience));
        }
    }

    /// A request came back empty or not at all: the next try goes to
    /// another peer (a pinned file's next try, to the next pinned peer).
    fn state_miss(&mut self, r: StateRequest) {
        if let StateRequest::Chunk { digest, .. } = &r {
            if let Some(p) = self.state.pinned.get_mut(digest) {
                *p += 1;
            }
        }
        *self.state.misses.entry(r).or_default() += 1;
    }

    /// UNL peers that closed the ledger certifying `target`, so they ran
    /// it; every other peer if none is known to have.
    fn state_peers(&self, target: u64) -> Vec<PubKey> {
        let me = self.key.public();
        let others: Vec<PubKey> = self.cfg.unl.iter().filter(|k| **k != me).copied().collect();
        let ahead: Vec<PubKey> = others
            .iter()
            .filter(|k| self.peer_lcl.get(*k).is_some_and(|(id, _)| id.seq > target))
            .copied()
            .collect();
        if ahead.is_empty() {
            others
        } else {
            ahead
        }
    }

    pub(super) fn on_state_response(&mut self, now: u64, from: PubKey, resp: StateResponse) {
        let asked = match &resp {
            StateResponse::Dir { hash, .. } => Some(StateRequest::Dir(*hash)),
            StateResponse::Missing(r) => Some(r.clone()),
            StateResponse::Chunk { digest, offset, .. } => {
                self.state.inflight.keys().find(|r| {
                    matches!(r, StateRequest::Chunk { digest: d, offset: o, .. } if d == digest && o == offset)
                }).cloned()
            }
        };
        // Only answers to requests in flight, from the peer asked.
        let Some(asked) =
            asked.filter(|a| self.state.inflight.get(a).is_some_and(|(p, _)| *p == from))
        else {
            self.stats.dropped_duplicate += 1;
            return;
        };
        if !matches!(self.state.phase, Phase::Fetching { .. }) {
            return; // requests are in flight only while fetching
        }
        let Phase::Fetching {
            from: first,
            mut fetch,
        } = std::mem::take(&mut self.state.phase)
        else {
            unreachable!("checked above");
        };
        self.state.inflight.remove(&asked);
        let result = match resp {
            StateResponse::Missing(_) => Err(None),
            resp => fetch.on_response(&asked, resp).map_err(Some),
        };
        match result {
            Ok(()) => self.state.progress_at = now,
            Err(e) => {
                if let Some(e) = &e {
                    self.stats.state_rejected += 1;
                    tracing::warn!(peer = ?from, error = %e, "rejecting a state sync answer");
                }
                if let (Some(FetchError::FileDigest), StateRequest::Chunk { digest, .. }) =
                    (&e, &asked)
                {
                    // The file starts over, all of it from one peer (the
                    // next one each time it fails: see `state_miss`).
                    let next = self.state.sent;
                    self.state.pinned.entry(*digest).or_insert(next);
                }
                self.state_miss(asked);
            }
        }
        self.state.phase = Phase::Fetching { from: first, fetch };
        self.state.dirty = true;
        self.statesync_tick(now);
    }

    pub(super) fn on_state_installed(&mut self, now: u64, seq: u64, error: Option<String>) {
        let Phase::Installing {
            from,
            seq: want,
            result,
            stats,
        } = self.state.phase
        else {
            return;
        };
        if seq != want {
            return;
        }
        self.state.phase = Phase::Idle;
        if let Some(e) = error {
            tracing::error!(seq, error = %e, "could not install the fetched state; will retry");
            self.state.retry_at = now + self.cfg.roundtime_ms;
            self.restore_runs(from, seq);
            return;
        }
        self.stats.state_syncs += 1;
        self.stats.state_bytes_fetched += stats.bytes;
        self.stats.state_files_fetched += stats.files;
        self.exec_history.insert(seq, result);
        self.out.push(Action::Notify(Event::StateSynced {
            seq,
            state: result.state,
            fetched: stats,
        }));
        if seq == self.lcl().seq {
            self.exec = Some(result);
            if let Some(slot) = self.slot {
                self.propose(slot);
            }
        }
    }

    /// After a rollback to `to`: a sync whose target a dropped ledger
    /// certified starts over later, and the skipped runs are due again.
    pub(super) fn abort_state_sync_above(&mut self, to: u64) {
        let (from, seq) = match &self.state.phase {
            Phase::Idle => return,
            Phase::Reading { from, seq, .. } | Phase::Installing { from, seq, .. } => (*from, *seq),
            Phase::Fetching { from, fetch } => (*from, fetch.seq),
        };
        if seq < to || matches!(self.state.phase, Phase::Installing { .. }) {
            return; // still certified; an install in flight goes through
        }
        self.state.phase = Phase::Idle;
        self.state.inflight.clear();
        self.restore_runs(from, to);
    }

    /// Runs up to `seq` will not happen: the fetched state replaces them.
    fn forget_runs_upto(&mut self, seq: u64) {
        self.bodies.waiting.retain(|s| *s > seq);
    }

    /// Runs `from..=to` are due again (a sync gave up on skipping them).
    fn restore_runs(&mut self, from: u64, to: u64) {
        for seq in from..=to.min(self.lcl().seq) {
            self.schedule_run(seq);
        }
    }

    /// A peer asks for part of our state: the driver answers from the host.
    pub(super) fn serve_state(&mut self, from: PubKey, req: StateRequest) {
        if !self.cfg.in_unl(&from) {
            self.stats.dropped_not_unl += 1;
            return;
        }
        if matches!(req, StateRequest::Chunk { len, .. } if len > CHUNK_BYTES) {
            self.stats.dropped_malformed += 1;
            return;
        }
        let round = self.slot.map_or(0, |s| s.round);
        if !self
            .state
            .served
            .take(from, round, MAX_STATE_REQUESTS_PER_ROUND)
        {
            // Said at once, so the asker tries elsewhere instead of waiting.
            self.stats.requests_refused += 1;
            let bytes = PeerMessage::StateResponse(StateResponse::Missing(req)).encode();
            self.out.push(Action::Send { to: from, bytes });
            return;
        }
        self.stats.state_served += 1;
        self.out.push(Action::ServeState { to: from, req });
    }
}
