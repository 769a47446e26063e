//! Catching up contract state from peers instead of running every ledger.
//!
//! A node whose contract is more than `state_sync_gap` ledgers behind its
//! lcl (after a long partition, or a restart with an old state), or whose
//! run left another state than the certified one, fetches the newest state
//! its chain certifies: a ledger's verdicts carry the state hashes of
//! earlier runs, signed by the close threshold of the UNL. The driver reads the
//! local tree, [`StateFetch`] walks the differences hash by hash, asking
//! the peers that are past that ledger a few requests at a time, and the
//! verified patch goes to the contract host, which swaps it in atomically.
//! Then the node runs the ledgers after it as usual.

use super::book::ProposalBook;
use super::chain::Chain;
use super::message::PeerMessage;
use super::{Action, ConsensusConfig, Event, Job, RarePath, Stats};
use crate::contract::{ExecResult, StateNode};
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
    /// The contract state is not what the chain says: sync before the
    /// next run, however small the gap.
    forced: Option<Forced>,
    /// Requests served per peer in the current round.
    served: super::served::Served,
}

/// Why a sync must come before the next run, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Forced {
    /// A run differed from the certified state (copies may diverge).
    Mismatch,
    /// A rollback failed: the state is a later run's.
    Rollback,
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

/// What the sync reads of the rest of the node.
pub struct View<'a> {
    pub cfg: &'a ConsensusConfig,
    pub me: PubKey,
    pub chain: &'a Chain,
    pub book: &'a ProposalBook,
    pub now: u64,
    /// The node's current round.
    pub round: u64,
}

/// What the sync wants done, in order, besides counting.
#[derive(Debug)]
pub enum Effect {
    Do(Action),
    /// Runs up to this seq will not happen: the fetched state replaces them.
    SkipRuns(u64),
    /// Runs `from..=to` are due again (a sync gave up on skipping them).
    RestoreRuns {
        from: u64,
        to: u64,
    },
    /// The state certified as ledger `seq`'s run is installed.
    Installed {
        seq: u64,
        result: ExecResult,
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

    /// The oldest ledger a sync under way may still read from the chain:
    /// its target (whose verdict a rollback checks again) and the runs it
    /// skipped (due again if it gives up).
    pub fn oldest_needed(&self) -> Option<u64> {
        match &self.phase {
            Phase::Idle => None,
            Phase::Reading { from, seq, .. } | Phase::Installing { from, seq, .. } => {
                Some((*from).min(*seq))
            }
            Phase::Fetching { from, fetch } => Some((*from).min(fetch.seq)),
        }
    }

    /// Makes the next run wait for a state sync, whatever the gap. A
    /// stronger reason is never weakened by a later one.
    pub fn force(&mut self, why: Forced) {
        self.forced = self.forced.max(Some(why));
    }

    /// Whether runs must wait for a sync that has not installed yet: the
    /// state is wrong.
    pub fn forced(&self) -> bool {
        self.forced.is_some()
    }

    /// Called before runs are handed out: starts a state sync if the
    /// contract is too far behind (or forced). `first_waiting` is the
    /// first ledger still to run.
    pub fn maybe_start(&mut self, v: &View, first_waiting: Option<u64>, fx: &mut Vec<Effect>) {
        let gap = v.cfg.state_sync_gap;
        let forced = self.forced.is_some();
        if (gap == 0 && !forced) || self.active() || v.now < self.retry_at {
            return;
        }
        // Forced with nothing waiting (a run found diverged after the
        // contract caught up): the runs after the fetched state are
        // queued again once it is installed.
        let from = match first_waiting {
            Some(f) => f,
            None if forced => v.chain.lcl().seq + 1,
            None => return,
        };
        let Some((seq, result)) = v.chain.certified_target() else {
            return;
        };
        // The runs after the target need their ledgers, and the memory
        // may have let them go (a forced sync takes any certified state):
        // wait for a newer one.
        if seq < v.chain.base() {
            return;
        }
        // `from - 1` is what the contract holds once queued runs are done.
        // Forced, any certified state will do, even one older than the
        // runs done: the runs after it are done again once it is in.
        let far = seq >= from && seq - (from - 1) > gap;
        if !(far || forced) {
            return;
        }
        tracing::debug!(from, seq, "skipping runs for a state sync");
        if self.forced == Some(Forced::Mismatch) {
            fx.push(Effect::Do(Action::Notify(Event::Reached(
                RarePath::MismatchSync,
            ))));
        }
        fx.push(Effect::SkipRuns(seq));
        self.phase = Phase::Reading { from, seq, result };
        self.reads += 1;
        fx.push(Effect::Do(Action::Contract(Job::ReadState {
            id: self.reads,
        })));
        fx.push(Effect::Do(Action::Notify(Event::StateSyncStarted {
            seq,
            behind: (seq + 1).saturating_sub(from),
        })));
    }

    pub fn on_local_state(&mut self, v: &View, id: u64, tree: StateNode, fx: &mut Vec<Effect>) {
        let Phase::Reading { from, seq, result } = self.phase else {
            return;
        };
        if id != self.reads {
            return; // read for a sync given up since
        }
        let fetch = Box::new(StateFetch::new(seq, result, &tree));
        self.phase = Phase::Fetching { from, fetch };
        self.inflight.clear();
        self.misses.clear();
        self.next_peer.clear();
        self.pinned.clear();
        self.progress_at = v.now;
        self.dirty = true;
        self.tick(v, fx);
    }

    /// Expires lost requests, moves the target on if it fell behind, and
    /// sends what the fetch needs next, or hands over the finished patch.
    pub fn tick(&mut self, v: &View, fx: &mut Vec<Effect>) {
        if !matches!(self.phase, Phase::Fetching { .. }) {
            return;
        }
        let Phase::Fetching { from, mut fetch } = std::mem::take(&mut self.phase) else {
            unreachable!("checked above");
        };
        let now = v.now;
        let expired: Vec<StateRequest> = self
            .inflight
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(r, _)| r.clone())
            .collect();
        for r in expired {
            self.inflight.remove(&r);
            self.miss(r);
            self.dirty = true;
        }
        let peers = peers_past(v, fetch.seq);
        if let Some((seq, result)) = v.chain.certified_target().filter(|(s, _)| *s > fetch.seq) {
            let stuck = self.misses.values().any(|&m| m >= peers.len().max(1));
            if stuck || seq - fetch.seq >= MAX_TARGET_LAG {
                tracing::debug!(
                    from = fetch.seq,
                    to = seq,
                    "state sync moves to a newer state"
                );
                fetch.retarget(seq, result);
                self.misses.clear();
                self.next_peer.clear();
                self.inflight.clear();
                self.dirty = true;
                fx.push(Effect::SkipRuns(seq));
            }
        }
        let stalled = now.saturating_sub(self.progress_at) > STALL_ROUNDS * v.cfg.roundtime_ms;
        if stalled || peers.is_empty() {
            self.inflight.clear();
            self.retry_at = now + STALL_ROUNDS * v.cfg.roundtime_ms;
            fx.push(Effect::Do(Action::Notify(Event::StateSyncAbandoned {
                seq: fetch.seq,
            })));
            fx.push(Effect::RestoreRuns {
                from,
                to: fetch.seq,
            });
            // A diverged run is worth a fetch, not a halt: runs go on, and
            // the next differing verdict forces a sync again. A failed
            // rollback keeps them waiting: the state is known to be wrong.
            if self.forced == Some(Forced::Mismatch) {
                self.forced = None;
            }
            return;
        }
        if !std::mem::take(&mut self.dirty) {
            self.phase = Phase::Fetching { from, fetch };
            return;
        }
        let reqs = match fetch.step() {
            Step::Want(reqs) => reqs,
            Step::Done(patch) => {
                let (seq, result, stats) = (patch.seq, patch.result, fetch.stats);
                tracing::debug!(seq, ?stats, "state fetched; installing");
                self.inflight.clear();
                self.phase = Phase::Installing {
                    from,
                    seq,
                    result,
                    stats,
                };
                fx.push(Effect::Do(Action::Contract(Job::InstallState(Box::new(
                    patch,
                )))));
                return;
            }
        };
        let peers = peers_past(v, fetch.seq);
        self.phase = Phase::Fetching { from, fetch };
        if peers.is_empty() {
            return;
        }
        // A whole round: a 512 KiB piece may take a while on a slow link,
        // and the other requests in flight go on meanwhile.
        let patience = v.cfg.roundtime_ms;
        for r in reqs {
            if self.inflight.len() >= WINDOW {
                break;
            }
            if self.inflight.contains_key(&r) {
                continue;
            }
            let pin = match &r {
                StateRequest::Chunk { digest, .. } => self.pinned.get(digest).copied(),
                StateRequest::Dir(_) => None,
            };
            let turn = pin.unwrap_or_else(|| self.next_peer.get(&r).copied().unwrap_or(self.sent));
            let peer = peers[turn % peers.len()];
            self.sent += 1;
            self.next_peer.insert(r.clone(), turn + 1);
            let bytes = PeerMessage::StateRequest(r.clone()).encode();
            fx.push(Effect::Do(Action::Send { to: peer, bytes }));
            self.inflight.insert(r, (peer, now + patience));
        }
    }

    /// A request came back empty or not at all: the next try goes to
    /// another peer (a pinned file's next try, to the next pinned peer).
    fn miss(&mut self, r: StateRequest) {
        if let StateRequest::Chunk { digest, .. } = &r {
            if let Some(p) = self.pinned.get_mut(digest) {
                *p += 1;
            }
        }
        *self.misses.entry(r).or_default() += 1;
    }

    pub fn on_response(
        &mut self,
        v: &View,
        from: PubKey,
        resp: StateResponse,
        stats: &mut Stats,
        fx: &mut Vec<Effect>,
    ) {
        let asked = match &resp {
            StateResponse::Dir { hash, .. } => Some(StateRequest::Dir(*hash)),
            StateResponse::Missing(r) => Some(r.clone()),
            StateResponse::Chunk { digest, offset, .. } => {
                self.inflight.keys().find(|r| {
                    matches!(r, StateRequest::Chunk { digest: d, offset: o, .. } if d == digest && o == offset)
                }).cloned()
            }
        };
        // Only answers to requests in flight, from the peer asked.
        let Some(asked) = asked.filter(|a| self.inflight.get(a).is_some_and(|(p, _)| *p == from))
        else {
            stats.dropped_duplicate += 1;
            return;
        };
        if !matches!(self.phase, Phase::Fetching { .. }) {
            return; // requests are in flight only while fetching
        }
        let Phase::Fetching {
            from: first,
            mut fetch,
        } = std::mem::take(&mut self.phase)
        else {
            unreachable!("checked above");
        };
        self.inflight.remove(&asked);
        let result = match resp {
            StateResponse::Missing(_) => Err(None),
            resp => fetch.on_response(&asked, resp).map_err(Some),
        };
        match result {
            Ok(()) => self.progress_at = v.now,
            Err(e) => {
                if let Some(e) = &e {
                    stats.state_rejected += 1;
                    tracing::warn!(peer = ?from, error = %e, "rejecting a state sync answer");
                }
                if let (Some(FetchError::FileDigest), StateRequest::Chunk { digest, .. }) =
                    (&e, &asked)
                {
                    // The file starts over, all of it from one peer (the
                    // next one each time it fails: see `miss`).
                    let next = self.sent;
                    self.pinned.entry(*digest).or_insert(next);
                }
                self.miss(asked);
            }
        }
        self.phase = Phase::Fetching { from: first, fetch };
        self.dirty = true;
        self.tick(v, fx);
    }

    pub fn on_installed(
        &mut self,
        v: &View,
        seq: u64,
        error: Option<String>,
        stats: &mut Stats,
        fx: &mut Vec<Effect>,
    ) {
        let Phase::Installing {
            from,
            seq: want,
            result,
            stats: fetched,
        } = self.phase
        else {
            return;
        };
        if seq != want {
            return;
        }
        self.phase = Phase::Idle;
        if let Some(e) = error {
            tracing::error!(seq, error = %e, "could not install the fetched state; will retry");
            self.retry_at = v.now + v.cfg.roundtime_ms;
            fx.push(Effect::RestoreRuns { from, to: seq });
            return;
        }
        self.forced = None;
        stats.state_syncs += 1;
        stats.state_bytes_fetched += fetched.bytes;
        stats.state_files_fetched += fetched.files;
        fx.push(Effect::Do(Action::Notify(Event::StateSynced {
            seq,
            state: result.state,
            fetched,
        })));
        fx.push(Effect::Installed { seq, result });
    }

    /// After a rollback: a sync whose target only the dropped ledger
    /// certified starts over later, and the skipped runs are due again.
    pub fn abort_above(&mut self, chain: &Chain, fx: &mut Vec<Effect>) {
        let to = chain.lcl().seq;
        let (from, seq, result) = match &self.phase {
            Phase::Idle => return,
            Phase::Reading {
                from, seq, result, ..
            }
            | Phase::Installing {
                from, seq, result, ..
            } => (*from, *seq, *result),
            Phase::Fetching { from, fetch } => (*from, fetch.seq, fetch.result),
        };
        let certified = chain.verdict(seq) == Some(Some(result));
        if certified || matches!(self.phase, Phase::Installing { .. }) {
            return; // an install in flight goes through
        }
        self.phase = Phase::Idle;
        self.inflight.clear();
        fx.push(Effect::RestoreRuns { from, to });
    }

    /// A peer asks for part of our state: the driver answers from the host.
    pub fn serve(
        &mut self,
        v: &View,
        from: PubKey,
        req: StateRequest,
        stats: &mut Stats,
        fx: &mut Vec<Effect>,
    ) {
        if !v.cfg.in_unl(&from) {
            stats.dropped_not_unl += 1;
            return;
        }
        if matches!(req, StateRequest::Chunk { len, .. } if len > CHUNK_BYTES) {
            stats.dropped_malformed += 1;
            return;
        }
        if !self
            .served
            .take(from, v.round, MAX_STATE_REQUESTS_PER_ROUND)
        {
            // Said at once, so the asker tries elsewhere instead of waiting.
            stats.requests_refused += 1;
            let bytes = PeerMessage::StateResponse(StateResponse::Missing(req)).encode();
            fx.push(Effect::Do(Action::Send { to: from, bytes }));
            return;
        }
        stats.state_served += 1;
        fx.push(Effect::Do(Action::Contract(Job::ServeState {
            to: from,
            req,
        })));
    }
}

/// UNL peers that closed the ledger certifying `target`, so they ran it;
/// every other peer if none is known to have.
fn peers_past(v: &View, target: u64) -> Vec<PubKey> {
    let others = v.cfg.peers_of(&v.me);
    let ahead: Vec<PubKey> = others
        .iter()
        .filter(|k| v.book.seen_past(k, target))
        .copied()
        .collect();
    if ahead.is_empty() {
        others
    } else {
        ahead
    }
}
