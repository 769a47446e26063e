//! The node's figures for an operator: a Prometheus endpoint
//! (`metrics` in hp.cfg) serving OpenMetrics text, made by the
//! Prometheus project's client library from the node's typed events, its
//! counters (`Stats`), and what the peer and user sides see.

use crate::consensus::{CloseVia, Event, Stats, VoteStatus};
use crate::env::Observer;
use crate::real::peers::PeerWatch;
use crate::real::users_ws::UsersWatch;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

mod http;

pub use http::serve;

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;
/// Histograms of a contract run's phases.
pub type RunSeconds = Family<Labels, Histogram, fn() -> Histogram>;

/// How a counter's value is read from `Stats`.
type Field = fn(&Stats) -> u64;
/// A counter of `Stats`: (name, help, label, field).
type StatRow = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
    Field,
);

/// The `Stats` counters exported, each with its help text; rows sharing a
/// name are one family told apart by the label.
const STAT_COUNTERS: &[StatRow] = &[
    (
        "proposals_accepted",
        "Proposals taken into the proposal book",
        None,
        |s| s.proposals_accepted,
    ),
    (
        "peer_messages_dropped",
        "Peer messages dropped, by reason",
        Some(("reason", "not_unl")),
        |s| s.dropped_not_unl,
    ),
    (
        "peer_messages_dropped",
        "",
        Some(("reason", "bad_signature")),
        |s| s.dropped_bad_signature,
    ),
    (
        "peer_messages_dropped",
        "",
        Some(("reason", "stale")),
        |s| s.dropped_stale,
    ),
    (
        "peer_messages_dropped",
        "",
        Some(("reason", "malformed")),
        |s| s.dropped_malformed,
    ),
    (
        "peer_messages_dropped",
        "",
        Some(("reason", "duplicate")),
        |s| s.dropped_duplicate,
    ),
    (
        "equivocations",
        "Second, different proposals from one peer for one stage",
        None,
        |s| s.equivocations,
    ),
    (
        "inputs_rejected",
        "Input bodies the node refused (malformed, expired, replayed, over budget)",
        None,
        |s| s.inputs_rejected,
    ),
    (
        "history_requests",
        "History requests: served to peers, and answers adopted or rejected",
        Some(("what", "served")),
        |s| s.history_served,
    ),
    ("history_requests", "", Some(("what", "adopted")), |s| {
        s.history_adopted
    }),
    ("history_requests", "", Some(("what", "rejected")), |s| {
        s.history_rejected
    }),
    (
        "bodies_fetched",
        "Input bodies fetched from peers",
        None,
        |s| s.bodies_fetched,
    ),
    (
        "requests_refused",
        "History, body and state requests refused: the peer asked too often",
        None,
        |s| s.requests_refused,
    ),
    (
        "state_syncs",
        "Contract states fetched and installed instead of running ledgers",
        None,
        |s| s.state_syncs,
    ),
    (
        "state_sync_bytes",
        "Bytes of contract state fetched",
        None,
        |s| s.state_bytes_fetched,
    ),
    (
        "state_sync_rejected",
        "State sync answers that failed verification",
        None,
        |s| s.state_rejected,
    ),
    (
        "state_served",
        "State requests answered for peers",
        None,
        |s| s.state_served,
    ),
    (
        "npl_chunks",
        "Node party line chunks, by what became of them",
        Some(("what", "sent")),
        |s| s.npl.chunks_sent,
    ),
    ("npl_chunks", "", Some(("what", "delivered")), |s| {
        s.npl.chunks_delivered
    }),
    ("npl_chunks", "", Some(("what", "relayed")), |s| {
        s.npl.relayed
    }),
    ("npl_chunks", "", Some(("what", "dropped_stale")), |s| {
        s.npl.dropped_stale
    }),
    (
        "npl_chunks",
        "",
        Some(("what", "dropped_bad_signature")),
        |s| s.npl.dropped_bad_signature,
    ),
    ("npl_chunks", "", Some(("what", "dropped_not_unl")), |s| {
        s.npl.dropped_not_unl
    }),
    ("npl_chunks", "", Some(("what", "dropped_duplicate")), |s| {
        s.npl.dropped_duplicate
    }),
    ("npl_chunks", "", Some(("what", "dropped_cut_off")), |s| {
        s.npl.dropped_cut_off
    }),
    (
        "npl_chunks",
        "",
        Some(("what", "dropped_over_buffer")),
        |s| s.npl.dropped_over_buffer,
    ),
    (
        "npl_chunks",
        "",
        Some(("what", "dropped_undelivered")),
        |s| s.npl.dropped_undelivered,
    ),
    (
        "npl_equivocations",
        "Second, different, signed NPL chunks for one slot",
        None,
        |s| s.npl.equivocations,
    ),
    (
        "npl_cut_off",
        "Times an NPL author was cut off for a run",
        None,
        |s| s.npl.cut_off,
    ),
];

/// Every metric the node exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    lcl_seq: Gauge,
    round: Gauge,
    pooled: Gauge,
    synced: Gauge,
    intake_open: Gauge,
    contract_behind: Gauge,
    closes: Counters,
    inputs_closed: Counter,
    rollbacks: Counters,
    forks_seen: Counter,
    mismatches: Counters,
    withheld: Counters,
    state_sync: Counters,
    rare_paths: Counters,
    beacon: Gauges,
    /// `STAT_COUNTERS`' counters, and the value each had at the last tick.
    from_stats: Vec<(Counter, Field)>,
    last_stats: Stats,
    peers_connected: Gauge,
    peer_sessions: Counters,
    users_connected: Gauge,
    users_queued_bytes: Gauge,
    user_messages: Counters,
    /// Seconds of each contract run, by phase.
    pub run_seconds: RunSeconds,
    peers: Option<PeerWatch>,
    users: Option<UsersWatch>,
    /// The watches' counters as last exported.
    last_peer: [u64; 3],
    last_user: [u64; 3],
}

fn label(k: &'static str, v: impl Into<String>) -> Labels {
    vec![(k, v.into())]
}

fn run_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Raises `c` to `now`, given it stood at `last`.
fn advance(c: &Counter, last: u64, now: u64) {
    c.inc_by(now.saturating_sub(last));
}

/// Raises each `what` of `family` to its count in `now`, given the counts
/// it stood at (`last`, then updated).
fn mirror(family: &Counters, whats: [&'static str; 3], last: &mut [u64; 3], now: [u64; 3]) {
    for (i, what) in whats.into_iter().enumerate() {
        advance(&family.get_or_create(&label("what", what)), last[i], now[i]);
    }
    *last = now;
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("hotpocket");
        macro_rules! reg {
            ($name:literal, $help:literal, $m:expr) => {{
                let m = $m;
                r.register($name, $help, m.clone());
                m
            }};
        }
        let mut families: BTreeMap<&str, Counters> = BTreeMap::new();
        let mut from_stats = Vec::new();
        for (name, help, lbl, of) in STAT_COUNTERS {
            let c = match lbl {
                None => {
                    let c = Counter::default();
                    r.register(*name, *help, c.clone());
                    c
                }
                Some((k, v)) => {
                    let fam = families.entry(*name).or_insert_with(|| {
                        let f = Counters::default();
                        r.register(*name, *help, f.clone());
                        f
                    });
                    fam.get_or_create(&label(k, *v)).clone()
                }
            };
            from_stats.push((c, *of));
        }
        Metrics {
            lcl_seq: reg!("lcl_seq", "Sequence number of the last closed ledger", Gauge::default()),
            round: reg!("round", "The round the node is in", Gauge::default()),
            pooled: reg!("inputs_pooled", "Input bodies in the pool, waiting for a ledger", Gauge::default()),
            synced: reg!("synced", "1 while enough of the UNL proposes on our last closed ledger", Gauge::default()),
            intake_open: reg!("intake_open", "1 while the node takes new user inputs", {
                // A node starts taking inputs; it says when it stops.
                let g = Gauge::default();
                g.set(1);
                g
            }),
            contract_behind: reg!("contract_behind_ledgers", "Ledgers the contract runs are behind the chain (while intake is closed)", Gauge::default()),
            closes: reg!("ledgers_closed", "Ledgers closed, by how: consensus or adopted history", Counters::default()),
            inputs_closed: reg!("inputs_closed", "User inputs in closed ledgers", Counter::default()),
            rollbacks: reg!("rollbacks", "Unfinal ledgers rolled back, by whether the UNL was proven on another ledger", Counters::default()),
            forks_seen: reg!("forks_seen", "Times the UNL closed another ledger at our seq", Counter::default()),
            mismatches: reg!("run_mismatches", "Our contract run's state or outputs differed from what the UNL certified", Counters::default()),
            withheld: reg!("outputs_withheld", "Runs whose outputs this node could not certify, by why", Counters::default()),
            state_sync: reg!("state_sync_events", "State sync started, abandoned and done", Counters::default()),
            rare_paths: reg!("rare_paths_reached", "Times the node took each of the protocol's rare paths", Counters::default()),
            beacon: reg!("beacon_ledgers", "Per UNL member: ledgers recorded absent from, or convicted of fraud in, the random beacon", Gauges::default()),
            peers_connected: reg!("peers_connected", "UNL peers this node has a link to", Gauge::default()),
            peer_sessions: reg!("peer_connections", "Inbound peer connections: proven, refused (handshake failed), over capacity", Counters::default()),
            users_connected: reg!("users_connected", "Authenticated user connections open", Gauge::default()),
            users_queued_bytes: reg!("user_input_bytes_queued", "Input bytes taken from users, not yet handed to consensus", Gauge::default()),
            user_messages: reg!("user_messages", "Inputs handed to consensus, outputs queued to users, connections closed as too slow", Counters::default()),
            run_seconds: reg!("contract_run_seconds", "Contract runs, by phase: snapshot of the state, the run, hashing the state", Family::new_with_constructor(run_histogram as fn() -> Histogram)),
            registry: r,
            from_stats,
            last_stats: Stats::default(),
            peers: None,
            users: None,
            last_peer: [0; 3],
            last_user: [0; 3],
        }
    }

    /// Reads the peer and user sides at every scrape.
    pub fn watch(&mut self, peers: PeerWatch, users: UsersWatch) {
        self.peers = Some(peers);
        self.users = Some(users);
    }

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::Started { lcl } => {
                self.lcl_seq.set(lcl.seq as i64);
                // The voter starts out synced and reports only changes.
                self.synced.set(1);
            }
            Event::LedgerClosed { ledger, via, .. } => {
                self.lcl_seq.set(ledger.seq as i64);
                let via = match via {
                    CloseVia::Consensus => "consensus",
                    CloseVia::History => "history",
                };
                self.closes.get_or_create(&label("via", via)).inc();
                self.inputs_closed.inc_by(ledger.inputs.len() as u64);
            }
            Event::Status(s) => {
                self.synced.set(i64::from(*s == VoteStatus::Synced));
            }
            Event::ForkSeen { .. } => {
                self.forks_seen.inc();
            }
            Event::RolledBack { to, proven, .. } => {
                self.lcl_seq.set(to.seq as i64);
                let p = if proven.is_some() { "yes" } else { "no" };
                self.rollbacks
                    .get_or_create(&label("proven_elsewhere", p))
                    .inc();
            }
            Event::StateMismatch { .. } => {
                self.mismatches.get_or_create(&label("of", "state")).inc();
            }
            Event::OutputMismatch { .. } => {
                self.mismatches.get_or_create(&label("of", "outputs")).inc();
            }
            Event::OutputsWithheld { why, .. } => {
                self.withheld
                    .get_or_create(&label("why", why.as_str()))
                    .inc();
            }
            Event::HistoryRejected { .. } => {}
            Event::StateSyncStarted { .. } => {
                self.state_sync
                    .get_or_create(&label("what", "started"))
                    .inc();
            }
            Event::StateSyncAbandoned { .. } => {
                self.state_sync
                    .get_or_create(&label("what", "abandoned"))
                    .inc();
            }
            Event::StateSynced { .. } => {
                self.state_sync
                    .get_or_create(&label("what", "installed"))
                    .inc();
            }
            Event::Intake { open, behind } => {
                self.intake_open.set(i64::from(*open));
                self.contract_behind
                    .set(if *open { 0 } else { *behind as i64 });
            }
            Event::Reached(path) => {
                self.rare_paths
                    .get_or_create(&label("path", path.name()))
                    .inc();
            }
        }
    }

    fn on_stats(&mut self, stats: &Stats) {
        for (c, of) in &self.from_stats {
            advance(c, of(&self.last_stats), of(stats));
        }
        self.round.set(stats.round as i64);
        self.pooled.set(stats.pooled as i64);
        self.beacon.clear();
        for (what, list) in [
            ("absent", &stats.beacon.absent),
            ("convicted", &stats.beacon.convicted),
        ] {
            for (node, ledgers) in list {
                let l = vec![("node", node.to_hex()), ("what", what.to_string())];
                self.beacon.get_or_create(&l).set(*ledgers as i64);
            }
        }
        self.last_stats = stats.clone();
    }

    /// The OpenMetrics text of every metric now.
    pub fn encode(&mut self) -> String {
        if let Some(p) = &self.peers {
            self.peers_connected.set(p.connected() as i64);
            let s = p.stats();
            mirror(
                &self.peer_sessions,
                ["proven", "refused", "over_capacity"],
                &mut self.last_peer,
                [s.inbound_sessions, s.refused, s.over_capacity],
            );
        }
        if let Some(u) = &self.users {
            self.users_connected.set(u.connections() as i64);
            self.users_queued_bytes.set(u.queued_bytes() as i64);
            mirror(
                &self.user_messages,
                ["inputs", "outputs", "closed_too_slow"],
                &mut self.last_user,
                [u.inputs(), u.outputs(), u.too_slow()],
            );
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// The node's observer in the real runtime: its events go to the log and
/// to the metrics.
pub struct MetricsObserver<O> {
    pub inner: O,
    /// None when the node serves no metrics: nothing is counted then.
    pub metrics: Option<Arc<Mutex<Metrics>>>,
}

impl<O: Observer> Observer for MetricsObserver<O> {
    // A scrape that panicked holding the lock leaves figures, not a
    // broken node: the driver goes on with them.
    fn notify(&mut self, event: &Event) {
        if let Some(m) = &self.metrics {
            m.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .on_event(event);
        }
        self.inner.notify(event);
    }
    fn stats(&mut self, stats: &Stats) {
        if let Some(m) = &self.metrics {
            m.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .on_stats(stats);
        }
        self.inner.stats(stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Hash;
    use crate::ledger_id::LedgerId;

    #[test]
    fn events_and_stats_become_metrics() {
        let mut m = Metrics::new();
        m.on_event(&Event::Started {
            lcl: LedgerId {
                seq: 7,
                hash: Hash::ZERO,
            },
        });
        m.on_event(&Event::Intake {
            open: false,
            behind: 3,
        });
        m.on_event(&Event::RolledBack {
            from: LedgerId {
                seq: 8,
                hash: Hash::ZERO,
            },
            to: LedgerId {
                seq: 7,
                hash: Hash::ZERO,
            },
            proven: None,
        });
        let mut s = Stats {
            history_adopted: 2,
            round: 41,
            pooled: 5,
            ..Stats::default()
        };
        s.npl.dropped_stale = 4;
        m.on_stats(&s);
        s.history_adopted = 3;
        m.on_stats(&s);
        let text = m.encode();
        for line in [
            "hotpocket_lcl_seq 7",
            "hotpocket_round 41",
            "hotpocket_inputs_pooled 5",
            "hotpocket_rollbacks_total{proven_elsewhere=\"no\"} 1",
            "hotpocket_history_requests_total{what=\"adopted\"} 3",
            "hotpocket_intake_open 0",
            // Never told otherwise, a started node is synced.
            "hotpocket_synced 1",
            "hotpocket_contract_behind_ledgers 3",
            "hotpocket_npl_chunks_total{what=\"dropped_stale\"} 4",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
