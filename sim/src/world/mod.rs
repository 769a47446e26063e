//! Everything the simulated nodes share, behind one lock: each node's slot
//! (key, role, clock, disk and contract directory, whether it is up), the
//! link model (`link.rs`) and connections (`links/`), users' routes
//! (`users.rs`), `mutate` windows, the checker it feeds and the trace.
//! Node tasks die on a crash; the world, like disks and wires, does not.

use crate::check::outputs::{InputInfo, Source};
use crate::check::violation::{Kind, Violation};
use crate::check::Checker;
use crate::scenario::twins::Twins;
use crate::scenario::{HandshakeKind, Latency, NetworkSettings, Role, Scenario};
use crate::world::disk::ContractDisk;
use crate::world::links::{Conns, Wire};
use crate::world::log::Log;
use crate::world::mutate::MutationFault;
use crate::world::trace::Trace;
use hotpocket_node::consensus::input_hash;
use hotpocket_node::consensus::{ConsensusConfig, Event, RarePath, Stats, VoteStatus};
use hotpocket_node::contract::{RunResult, SignedInput, UserInput};
use hotpocket_node::crypto::{Hash, Keypair, PubKey, Verified};
use hotpocket_node::ledger::LedgerRecord;
use madsim::runtime::NodeHandle;
use madsim::time::{Duration, Instant};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use users::{Attack, ByzUserStats, Overheard, SimUser, UserMsg};

pub mod disk;
pub mod entropy;
mod link;
pub mod links;
pub mod log;
pub mod mutate;
pub mod nodes;
pub mod report;
pub mod trace;
mod tree;
pub mod users;
use tokio::sync::mpsc::UnboundedSender;

pub use crate::scenario::clock::EPOCH_MS;

/// What reaches a node's inbox: the machine it came from, and the wire
/// frame (whose sender the node learns only from its connection).
pub type PeerFrame = (usize, Wire);

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub blocked: u64,
    pub duplicated: u64,
    pub to_dead_node: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct DiskState {
    /// The node's chain holds these very records (`Store::append`).
    synced: Vec<Arc<LedgerRecord>>,
    unsynced: Vec<Arc<LedgerRecord>>,
}

struct NodeSlot {
    key: Keypair,
    role: Role,
    clock_offset_ms: i64,
    clock_drift_ppm: i64,
    inbox: Option<UnboundedSender<PeerFrame>>,
    users: Option<UnboundedSender<UserMsg>>,
    disk: DiskState,
    /// The contract's state directory, which survives a crash like `disk`.
    contract: ContractDisk,
    alive: bool,
    crashes: u32,
    /// Armed by a `crash_mid_write` fault: the next ledger write kills it.
    crash_at_write: bool,
    stats: Stats,
    status: Option<VoteStatus>,
}

struct Inner {
    nodes: Vec<NodeSlot>,
    users: Vec<SimUser>,
    index: BTreeMap<PubKey, usize>,
    unl: Vec<PubKey>,
    network: NetworkSettings,
    links: BTreeMap<(usize, usize), (Option<Latency>, Option<f64>)>,
    /// Directed pairs that cannot talk.
    blocked: BTreeSet<(usize, usize)>,
    /// Links that lose node party line chunks only.
    npl_blocked: BTreeSet<(usize, usize)>,
    /// Cuts of chosen rounds' (and stages') proposals only.
    scoped: Vec<link::ScopedCut>,
    /// The protocol's round length: a scenario counts rounds from the run's
    /// first (`scenario::clock`).
    roundtime_ms: u64,
    rng: ChaCha8Rng,
    checker: Checker,
    trace: Trace,
    net: NetStats,
    inputs_submitted: u64,
    inputs_dropped: u64,
    /// What byzantine users did and what the nodes answered.
    byz_users: ByzUserStats,
    /// What byzantine users may learn of honest users (only kept when
    /// there are byzantine users).
    overheard: Option<Overheard>,
    /// Print every protocol event as it happens (`run --events`).
    print_events: bool,
    /// Every message and mark, for `run --picture`.
    log: Option<Log>,
    /// Open `mutate` windows: (node, peers, until ms, the fault).
    mutations: Vec<(usize, Vec<usize>, u64, MutationFault)>,
    /// Twins: the schedule, the second copy's slot and the round length.
    twins: Option<(Twins, usize, u64)>,
    /// Every connection opened, with its two ends.
    conns: Conns,
    handshake: HandshakeKind,
    /// Rare paths an honest node took (`Event::Reached`).
    reached: BTreeSet<RarePath>,
}

pub struct World {
    inner: Mutex<Inner>,
    start: Instant,
    /// The madsim node that carries messages in flight, so they outlive a
    /// crashed sender like packets on a wire. Taken out at the end of a run:
    /// it holds the runtime, whose node closures hold this world, and that
    /// cycle would leak every finished run.
    wire: Mutex<Option<NodeHandle>>,
}

impl World {
    pub fn new(
        scenario: &Scenario,
        seed: u64,
        keys: Vec<Keypair>,
        user_keys: Vec<Keypair>,
        wire: NodeHandle,
        setup: Setup,
    ) -> Arc<World> {
        // Honest users first, then byzantine ones: `user_keys` holds both.
        let honest_users = scenario.users().into_iter().map(|u| (u, false));
        let byz_users = scenario.byzantine_users().into_iter().map(|u| (u, true));
        let users = honest_users
            .chain(byz_users)
            .zip(user_keys)
            .map(|(((_, node), byzantine), key)| SimUser {
                key,
                node,
                byzantine,
                seen: None,
            })
            .collect();
        let overheard = (!scenario.byzantine_users.is_empty()).then(Overheard::default);
        let nodes: Vec<NodeSlot> = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                // Slots past the scenario's nodes are second copies of twins.
                let of = scenario.twins.as_ref().filter(|_| i >= scenario.nodes);
                let id = of.map_or(i, |t| t.node);
                let s = scenario.node_settings.iter().find(|n| n.id == id);
                NodeSlot {
                    key,
                    role: scenario.role(id),
                    clock_offset_ms: s.map_or(0, |s| s.clock_offset_ms),
                    clock_drift_ppm: s.map_or(0, |s| s.clock_drift_ppm),
                    inbox: None,
                    users: None,
                    disk: DiskState::default(),
                    contract: ContractDisk::default(),
                    alive: true,
                    crashes: 0,
                    crash_at_write: false,
                    stats: Stats::default(),
                    status: None,
                }
            })
            .collect();
        // A twin's key names its first copy.
        let index = nodes
            .iter()
            .take(scenario.nodes)
            .enumerate()
            .map(|(i, n)| (n.key.public(), i))
            .collect();
        let unl = unl_of(scenario, &keys_of(&nodes));
        let checker = Checker::new(scenario, &unl, &keys_of(&nodes), setup.cfg, setup.verified);
        let links = scenario
            .links
            .iter()
            .map(|l| ((l.from, l.to), (l.latency_ms, l.loss_pct)))
            .collect();
        Arc::new(World {
            inner: Mutex::new(Inner {
                nodes,
                users,
                index,
                unl,
                network: scenario.network.clone(),
                links,
                blocked: BTreeSet::new(),
                npl_blocked: BTreeSet::new(),
                scoped: Vec::new(),
                roundtime_ms: scenario.consensus.roundtime_ms,
                rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_7477_6f72_6b21),
                checker,
                trace: Trace::new(seed),
                net: NetStats::default(),
                inputs_submitted: 0,
                inputs_dropped: 0,
                byz_users: ByzUserStats::default(),
                overheard,
                print_events: setup.print_events,
                log: setup.picture.then(Log::default),
                mutations: Vec::new(),
                twins: (scenario.twins.clone())
                    .map(|t| (t, scenario.nodes, scenario.consensus.roundtime_ms.max(1))),
                conns: Conns::default(),
                handshake: scenario.handshake,
                reached: BTreeSet::new(),
            }),
            start: sim_now(),
            wire: Mutex::new(Some(wire)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Single-threaded simulation: a poisoned lock means a panic already
        // failed the run, so just keep going to report it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulated milliseconds since the start.
    pub fn now(&self) -> u64 {
        sim_now().duration_since(self.start).as_millis() as u64
    }

    pub fn instant_at(&self, sim_ms: u64) -> Instant {
        self.start + Duration::from_millis(sim_ms)
    }

    /// Node `i`'s local unix-ms clock at simulated time `t`.
    fn local_time(inner: &Inner, i: usize, t: u64) -> u64 {
        let n = &inner.nodes[i];
        let t = t as i128;
        let local = EPOCH_MS as i128
            + t
            + n.clock_offset_ms as i128
            + t * n.clock_drift_ppm as i128 / 1_000_000;
        local.max(0) as u64
    }

    /// The earliest simulated time at which node `i`'s clock shows `local`.
    fn sim_time_for(inner: &Inner, i: usize, local: u64) -> u64 {
        let n = &inner.nodes[i];
        let target = local as i128 - EPOCH_MS as i128 - n.clock_offset_ms as i128;
        let t = (target * 1_000_000).div_euclid(1_000_000 + n.clock_drift_ppm as i128);
        let mut t = t.max(0) as u64;
        while World::local_time(inner, i, t) < local {
            t += 1;
        }
        t
    }

    fn record(&self, inner: &mut Inner, node: usize, what: &[u8]) {
        let t = self.now();
        inner.trace.record(t, node, what);
    }

    fn trace_hash(&self) -> Hash {
        self.lock().trace.hash()
    }

    /// A node's event: traced always, checked only for honest nodes.
    pub fn notify(&self, node: usize, ev: &Event) {
        let mut g = self.lock();
        // Counted, not traced: marking a path must not change the trace.
        if let Event::Reached(path) = ev {
            if g.nodes[node].role == Role::Honest {
                g.reached.insert(*path);
            }
            return;
        }
        let encoded = g.trace.event_json(ev);
        self.record(&mut g, node, &encoded);
        match ev {
            // A node starts out synced; it reports only changes.
            Event::Started { .. } => g.nodes[node].status = Some(VoteStatus::Synced),
            Event::Status(s) => g.nodes[node].status = Some(*s),
            _ => {}
        }
        let honest = g.nodes[node].role == Role::Honest;
        let t = self.now();
        if g.print_events {
            println!(
                "{t:>8}ms node {node:>2} {}",
                String::from_utf8_lossy(&encoded)
            );
        }
        if let Some(log) = g.log.as_mut() {
            log.event(t, node, ev);
        }
        g.checker.on_event(t, node, ev, honest);
    }

    /// Node `i` started running ledger `seq`'s NPL contract.
    pub fn npl_run_opened(&self, i: usize, seq: u64) {
        self.lock().checker.npl.run_opened(i, seq);
    }

    /// Node `i`'s contract wrote `bytes` on its NPL in its run of `seq`.
    pub fn npl_written(&self, i: usize, seq: u64, bytes: &[u8]) {
        let mut g = self.lock();
        let mut tag = vec![b'n'];
        tag.extend_from_slice(&seq.to_le_bytes());
        tag.extend_from_slice(bytes);
        self.record(&mut g, i, &tag);
        g.checker.npl.written(i, seq, bytes);
    }

    /// Node `i`'s contract, running `seq`, was handed NPL record `record`.
    pub fn npl_heard(&self, i: usize, seq: u64, record: &[u8]) {
        let t = self.now();
        let mut g = self.lock();
        let inner = &mut *g;
        let honest = |n: usize| inner.nodes[n].role == Role::Honest;
        let author = |hex: &str| {
            let key = PubKey::from_hex(hex).ok()?;
            let n = *inner.index.get(&key)?;
            inner.unl.contains(&key).then(|| (n, honest(n)))
        };
        let mut found = Vec::new();
        inner.checker.npl.heard(i, seq, record, author, &mut found);
        if honest(i) {
            inner.checker.violate_all(t, Kind::Npl, i, found);
        }
    }

    /// A violation `node`'s simulated surroundings found, outside the
    /// event checkers.
    pub fn violation(&self, kind: Kind, node: usize, what: String) {
        let v = Violation::at(self.now(), kind, what).by(node);
        self.lock().checker.violate(v);
    }

    /// Node `node` handed a run's outputs with the UNL's signatures: with
    /// as many as hpcore's client asks (`full`), or fewer.
    pub fn outputs_signed(&self, full: bool) {
        self.lock().checker.outputs.signed_runs[usize::from(!full)] += 1;
    }

    /// Ends the run: nothing is sent after this.
    fn shut_down(&self) {
        self.wire.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// User `u` sends `payload` (setting `key`) to its node, if it is up.
    pub fn submit(&self, u: usize, key: String, payload: Vec<u8>) {
        let mut g = self.lock();
        let i = g.users[u].node;
        if let Some(o) = &mut g.overheard {
            o.keys.insert(u, key.clone());
        }
        let msg = UserMsg::Input {
            user: u,
            key,
            payload,
        };
        let ok = match &g.nodes[i].users {
            Some(tx) if g.nodes[i].alive => tx.send(msg).is_ok(),
            _ => false,
        };
        if ok {
            g.inputs_submitted += 1;
        } else {
            g.inputs_dropped += 1;
        }
    }

    /// Byzantine user `u` tries `attack` on its node, if it is up.
    pub fn attack(&self, u: usize, attack: Attack) {
        let mut g = self.lock();
        let i = g.users[u].node;
        let ok = match &g.nodes[i].users {
            Some(tx) if g.nodes[i].alive => tx.send(UserMsg::Attack { user: u, attack }).is_ok(),
            _ => false,
        };
        if !ok {
            g.byz_users.not_delivered += 1;
        }
    }

    /// Node `i` took user `u`'s input as `body` into consensus; `source`
    /// says whether the user was honest and the node right to take it.
    pub fn input_taken(&self, i: usize, u: usize, key: String, body: &[u8], source: Source) {
        let at_ms = self.now();
        let h = input_hash(body);
        let mut g = self.lock();
        self.record(&mut g, i, &h.0);
        let owner = g.users[u].key.public();
        let signed = SignedInput::decode(body);
        let claimed = match &signed {
            Some(signed) => Some(signed.user),
            None => UserInput::decode(body).map(|b| b.user),
        };
        if let Some(c) = signed.and_then(|s| s.open().ok()) {
            g.checker.outputs.nonces.insert(h, c.nonce);
        }
        let info = InputInfo {
            user: u,
            node: i,
            key,
            at_ms,
            source,
        };
        let mut found = Vec::new();
        g.checker.outputs.taken(h, info, claimed, owner, &mut found);
        let found = found
            .into_iter()
            .map(|v| format!("node {i}: {v}"))
            .collect();
        g.checker.violate_all(at_ms, Kind::Outputs, i, found);
    }

    /// Node `i` sent user `u` an hpcore `status` for its input `h`.
    pub fn input_status(&self, i: usize, u: usize, h: Hash, status: &str) {
        let at_ms = self.now();
        let mut g = self.lock();
        let mut found = Vec::new();
        g.checker.outputs.on_status(i, u, h, status, &mut found);
        g.checker.violate_all(at_ms, Kind::Outputs, i, found);
    }

    /// Node `i` delivered ledger `seq`'s outputs to its users `to`.
    pub fn outputs_delivered(
        &self,
        i: usize,
        seq: u64,
        run: &RunResult,
        to: Vec<(usize, Vec<u8>)>,
    ) {
        let t = self.now();
        let mut g = self.lock();
        for (u, bytes) in &to {
            let mut tag = vec![b'o'];
            tag.extend_from_slice(&seq.to_le_bytes());
            tag.extend_from_slice(&(*u as u64).to_le_bytes());
            tag.extend_from_slice(bytes);
            self.record(&mut g, i, &tag);
        }
        let honest = g.nodes[i].role == Role::Honest;
        let durable = g.nodes[i]
            .disk
            .synced
            .iter()
            .rev()
            .flat_map(|r| &r.ledger.verdicts)
            .any(|v| v.seq == seq && v.result.map(|c| c.output) == Some(run.output_hash()));
        if honest && !durable {
            g.checker.violate(Violation::at(
                t,
                Kind::Durability,
                format!("node {i} delivered ledger {seq}'s outputs before the ledger certifying them was on disk"),
            ).by(i));
        }
        g.checker.on_delivered(t, i, seq, run, &to, honest);
    }

    /// Node `i` told its users `told` that their outputs of ledger `seq`
    /// were not certified there.
    pub fn outputs_withheld(&self, i: usize, seq: u64, told: Vec<usize>) {
        let mut g = self.lock();
        for u in told {
            let mut tag = vec![b'w'];
            tag.extend_from_slice(&seq.to_le_bytes());
            tag.extend_from_slice(&(u as u64).to_le_bytes());
            self.record(&mut g, i, &tag);
        }
    }

    /// Marks node `i` dead and loses what its disk had not synced.
    pub fn crash(&self, i: usize) {
        let mut g = self.lock();
        let n = &mut g.nodes[i];
        n.alive = false;
        n.crash_at_write = false;
        n.crashes += 1;
        n.inbox = None;
        n.users = None;
        n.disk.unsynced.clear();
        self.record(&mut g, i, b"crash");
    }
}

/// How a run watches itself, fixed when the world is made.
pub struct Setup<'a> {
    pub cfg: &'a ConsensusConfig,
    /// The signature memory the nodes share, which the beacon checker
    /// shares too.
    pub verified: &'a Verified,
    /// Print every protocol event as it happens (`run --events`).
    pub print_events: bool,
    /// Keep every message and mark, for `run --picture`.
    pub picture: bool,
}

/// The UNL's keys, sorted as the node keeps them.
pub fn unl_of(scenario: &Scenario, keys: &[PubKey]) -> Vec<PubKey> {
    let mut unl: Vec<PubKey> = scenario.unl().iter().map(|&i| keys[i]).collect();
    unl.sort();
    unl
}

fn keys_of(nodes: &[NodeSlot]) -> Vec<PubKey> {
    nodes.iter().map(|n| n.key.public()).collect()
}

/// Simulated time: madsim's `Instant` is std's type, but inside a madsim
/// runtime its clock is the simulation's, never the wall clock.
#[allow(clippy::disallowed_methods)]
fn sim_now() -> Instant {
    Instant::now()
}
