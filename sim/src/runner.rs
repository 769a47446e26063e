//! Runs one scenario with one seed on a fresh madsim runtime.

use crate::adversary::{Byzantine, Relay};
use crate::check::expectations::Judged;
use crate::check::violation::{Kind, Violation};
use crate::env::contract::SimContract;
use crate::env::users::byzantine::spawn_attackers;
use crate::env::users::SimUsers;
use crate::env::{SimClock, SimNet, SimObserver, SimStore};
use crate::scenario::{ContractKind, ContractSettings, Fault, Role, Scenario};
use crate::world::entropy::SimEntropy;
use crate::world::links::Links;
use crate::world::log::Log;
use crate::world::mutate::MutationFault;
use crate::world::users::ByzUserStats;
use crate::world::{NetStats, World};
use hotpocket_multisig_contract::DEFAULT_TIMEOUT_MS;
use hotpocket_node::consensus::{ConsensusConfig, FrameStats, SentProposals, Stats, VoteStatus};
use hotpocket_node::crypto::{Hash, Keypair, Verified, VerifiedStats};
use hotpocket_node::driver::{self, Env};
use hotpocket_node::npl::NplLimits;
use hotpocket_node::users::{Intake, SessionLimits};
use madsim::runtime::{Handle, NodeHandle, Runtime};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Debug, Serialize)]
pub struct NodeReport {
    pub id: usize,
    pub role: Role,
    pub seq: u64,
    pub lcl: String,
    pub status: Option<VoteStatus>,
    pub stats: Stats,
    /// Runs of this node that differed from the certified result, and runs
    /// whose outputs it withheld.
    pub diverged: u64,
    pub withheld: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub trace_hash: String,
    pub trace_events: u64,
    pub passed: bool,
    pub violations: Vec<Violation>,
    pub nodes: Vec<NodeReport>,
    pub simulated_ms: u64,
    pub net: NetStats,
    pub inputs_submitted: u64,
    pub inputs_dropped: u64,
    /// Inputs nodes took from users, and how many of those were answered:
    /// their output reached the user.
    pub inputs_taken: u64,
    pub inputs_answered: u64,
    /// Closes that a node later rolled back (never final ones).
    pub rolled_back: u64,
    pub beacon: BeaconSummary,
    pub byzantine_users: ByzUserStats,
    /// Every message and mark of the run, when it was asked for.
    #[serde(skip)]
    pub log: Option<Log>,
    /// Signature checks answered from the shared memory, and checked in
    /// full, and proposal frames found in memory or decoded: for the bench,
    /// not the report.
    #[serde(skip)]
    pub verified: VerifiedStats,
    #[serde(skip)]
    pub frames: FrameStats,
}

/// The random beacon over the run's final ledgers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BeaconSummary {
    /// Final ledgers with an outcome, and how many of them are random.
    pub outcomes: u64,
    pub random: u64,
    /// Per node: final ledgers recording it absent, and convicting it.
    pub absent: BTreeMap<usize, u64>,
    pub fraud: BTreeMap<usize, u64>,
    /// Honest nodes recorded absent while away or behind (any ledger
    /// closed, final or not).
    pub excused: u64,
    /// Commits of honest nodes, up and in time, that missed the ledger.
    pub commits_missed: u64,
    /// Each random value, by seq: for the statistics, not the report.
    #[serde(skip)]
    pub values: Vec<Hash>,
}

/// Node keys come from the seed, so a seed names one whole world; `salt`
/// keeps user keys apart from node keys.
pub fn derive_keys(seed: u64, salt: u64, n: usize) -> Vec<Keypair> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b65_7973 ^ salt);
    (0..n)
        .map(|_| {
            let mut s = [0u8; 32];
            rng.fill_bytes(&mut s);
            Keypair::from_seed(s)
        })
        .collect()
}

pub fn run(scenario: &Scenario, seed: u64) -> Report {
    run_with(scenario, seed, false, false)
}

/// Like [`run`], printing every protocol event to stdout if `print_events`,
/// and keeping every message and mark for a picture (`Report::log`) if
/// `picture`.
pub fn run_with(scenario: &Scenario, seed: u64, print_events: bool, picture: bool) -> Report {
    let rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    let s = scenario.clone();
    // A panic in protocol code is a bug the run found: reported as a
    // violation, so a campaign goes on and the shrinker can keep it.
    let run =
        std::panic::AssertUnwindSafe(|| rt.block_on(simulate(s, seed, print_events, picture)));
    std::panic::catch_unwind(run).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|m| m.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        Report {
            scenario: scenario.name.clone(),
            seed,
            violations: vec![Violation::at_end(
                Kind::Panic,
                format!("a node panicked: {msg}"),
            )],
            ..Report::default()
        }
    })
}

fn consensus_config(s: &Scenario, world: &World) -> ConsensusConfig {
    let c = &s.consensus;
    ConsensusConfig {
        roundtime_ms: c.roundtime_ms,
        stage_slice_pct: c.stage_slice_pct,
        stage_thresholds_pct: c.stage_thresholds_pct,
        close_threshold_pct: c.close_threshold_pct,
        planted_bug: c.planted_bug,
        npl: NplLimits {
            max_hops: c.npl_max_hops,
            ..NplLimits::default()
        },
        ..ConsensusConfig::new(world.lock().unl.clone())
    }
}

async fn simulate(s: Scenario, seed: u64, print_events: bool, picture: bool) -> Report {
    let handle = Handle::current();
    let wire = handle.create_node().name("wire").build();
    let mut user_keys = derive_keys(seed, 0x7573_6572_0000_0000, s.users().len());
    user_keys.extend(derive_keys(
        seed,
        0x6279_7a00_0000_0000,
        s.byzantine_users().len(),
    ));
    // One memory of signature checks for the whole world: a proposal is
    // verified once, not once per node that receives it, and not at all
    // when its signer's key put it there (see `Verified`).
    let verified = Verified::new();
    // And of the proposal frames nodes send: each is decoded once, by no
    // one (see `SentProposals`).
    let frames = SentProposals::new();
    let mut keys: Vec<Keypair> = derive_keys(seed, 0, s.nodes)
        .into_iter()
        .map(|k| k.sharing(&verified))
        .collect();
    if let Some(t) = &s.twins {
        keys.push(keys[t.node].clone());
    }
    let slots = keys.len();
    let world = World::new(&s, seed, keys, user_keys, wire);
    world.lock().print_events = print_events;
    world.lock().log = picture.then(Log::default);
    world.lock().checker.may_diverge = s.contract.kind == ContractKind::Multisig;
    world.lock().checker.outputs.kind = s.contract.kind;
    world.lock().checker.outputs.unsourced_ok = s.honest().len() < s.nodes;
    let cfg = consensus_config(&s, &world);
    {
        let mut g = world.lock();
        let keys: Vec<_> = g
            .nodes
            .iter()
            .take(s.nodes)
            .map(|n| n.key.public())
            .collect();
        let honest = (0..s.nodes).map(|i| s.honest().contains(&i)).collect();
        let unl = g.unl.clone();
        let b = &mut g.checker.beacon;
        let close = cfg.needed(cfg.close_threshold_pct);
        b.init(&unl, &keys, honest, cfg.roundtime_ms, cfg.stage_ms(), close);
        b.share(&verified);
        b.untimely = !crate::scenario::latency::timely(&s);
    }

    let nodes: Vec<NodeHandle> = (0..slots)
        .map(|i| {
            let (w, cfg, contract) = (world.clone(), cfg.clone(), s.contract.clone());
            let frames = frames.clone();
            handle
                .create_node()
                .name(format!("n{i}"))
                .init(move || {
                    let (w, cfg, contract) = (w.clone(), cfg.clone(), contract.clone());
                    node_main(w, i, cfg, seed, contract, frames.clone())
                })
                .build()
        })
        .collect();

    let users = s.users();
    for (wi, w) in s.workload.iter().enumerate() {
        let mine: Vec<usize> = (0..users.len()).filter(|&u| users[u].0 == wi).collect();
        let (world, w) = (world.clone(), w.clone());
        madsim::task::spawn(async move {
            let mut k = 0u64;
            let mut t = w.start_ms;
            while t < w.stop_ms {
                madsim::time::sleep_until(world.instant_at(t)).await;
                let u = mine[(k % mine.len() as u64) as usize];
                let n = k / mine.len() as u64;
                // Keys cycle (`keys`, 100 by default), so the state stays
                // bounded; a key seen twice in one ledger still checks out,
                // as the checker compares the answers as a multiset.
                let key = format!("w{wi}-u{u}-{}", n % w.keys.max(1));
                let mut msg = format!("set {key} ").into_bytes();
                // Values differ, as real data would: equal files would be
                // fetched once by a node syncing its state.
                let fill = format!("{k}.");
                let len = w.size.max(msg.len() + 2) - 1;
                while msg.len() < len {
                    let take = (len - msg.len()).min(fill.len());
                    msg.extend_from_slice(&fill.as_bytes()[..take]);
                }
                msg.push(b'\n');
                world.submit(u, key, msg);
                k += 1;
                t += w.every_ms;
            }
        });
    }

    spawn_attackers(&world, &s, seed);
    let mut timeline = s.timeline.clone();
    timeline.sort_by_key(|e| e.at_ms);
    for ev in timeline {
        if ev.at_ms >= s.duration_ms {
            break;
        }
        madsim::time::sleep_until(world.instant_at(ev.at_ms)).await;
        apply(&handle, &world, &nodes, ev.fault);
    }
    madsim::time::sleep_until(world.instant_at(s.duration_ms)).await;
    let mut report = report(&s, seed, &world);
    report.verified = verified.stats();
    report.frames = frames.stats();
    // madsim does not free tasks still pending when a runtime is dropped, so
    // end every node (and with it each task's hold on the world) first.
    for n in &nodes {
        handle.kill(n.id());
    }
    madsim::time::sleep(madsim::time::Duration::from_secs(1)).await;
    report
}

fn apply(handle: &Handle, world: &Arc<World>, nodes: &[NodeHandle], fault: Fault) {
    note_away(world, &fault);
    if let Some(log) = world.lock().log.as_mut() {
        log.fault(world.now(), &fault);
    }
    match fault {
        Fault::Partition { groups } => world.partition(&groups),
        Fault::Block { from, to, npl_only } => world.block(&from, &to, npl_only),
        Fault::Heal => world.heal(),
        Fault::Crash { node } => {
            world.crash(node);
            handle.kill(nodes[node].id());
        }
        Fault::CrashMidWrite { node } => world.lock().nodes[node].crash_at_write = true,
        Fault::Restart { node } => {
            world.crash(node);
            handle.restart(nodes[node].id());
        }
        Fault::Pause { node } => handle.pause(nodes[node].id()),
        Fault::Resume { node } => handle.resume(nodes[node].id()),
        Fault::Clock {
            node,
            offset_ms,
            drift_ppm,
        } => {
            let mut g = world.lock();
            g.nodes[node].clock_offset_ms = offset_ms;
            g.nodes[node].clock_drift_ppm = drift_ppm;
        }
        Fault::Network(n) => world.set_network(n),
        Fault::Mutate {
            node,
            to,
            seed,
            for_ms,
            any_scope,
        } => world.open_mutation(node, to, for_ms, MutationFault { seed, any_scope }),
    }
}

/// Tells the beacon checker who a fault keeps from taking part, so an
/// honest node recorded absent then is not a violation.
fn note_away(world: &Arc<World>, fault: &Fault) {
    let t = world.now();
    let mut g = world.lock();
    let b = &mut g.checker.beacon;
    match fault {
        Fault::Partition { groups } => b.partition(groups, t),
        Fault::Block { npl_only: true, .. } => {}
        Fault::Block { from, to, .. } => from.iter().chain(to).for_each(|&n| b.away(n, t)),
        Fault::Heal => b.all_back(t),
        Fault::Crash { node } | Fault::CrashMidWrite { node } | Fault::Pause { node } => {
            b.away(*node, t)
        }
        // Away only a moment: the grace covers its catching up.
        Fault::Restart { node } | Fault::Clock { node, .. } => {
            b.away(*node, t);
            b.back(*node, t);
        }
        Fault::Resume { node } => b.back(*node, t),
        Fault::Network(_) | Fault::Mutate { .. } => {}
    }
}

/// One node's life from boot (or reboot) until it is killed.
async fn node_main(
    world: Arc<World>,
    i: usize,
    cfg: ConsensusConfig,
    seed: u64,
    settings: ContractSettings,
    frames: SentProposals,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (utx, urx) = tokio::sync::mpsc::unbounded_channel();
    let (key, role, unl, boots, handshake) = {
        let mut g = world.lock();
        let n = &mut g.nodes[i];
        n.inbox = Some(tx);
        n.users = Some(utx);
        n.alive = true;
        let boots = n.crashes as u64;
        (n.key.clone(), n.role, g.unl.clone(), boots, g.handshake)
    };
    let mut store = SimStore {
        world: world.clone(),
        node: i,
    };
    // Its own stream, so a scenario without run times draws nothing.
    let salt = seed ^ 0x7275_6e73 ^ ((i as u64) << 40) ^ (boots << 20);
    let mut contract = SimContract {
        world: world.clone(),
        node: i,
        key: key.public(),
        unl: unl.clone(),
        run_ms: settings.run_ms,
        rng: ChaCha8Rng::seed_from_u64(salt),
        kind: settings.kind,
        npl_timeout_ms: settings.npl_timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
        contract_seed: key.contract_seed(),
        keys: Default::default(),
    };
    let limits = SessionLimits {
        roundtime_ms: cfg.roundtime_ms,
        ..SessionLimits::default()
    };
    let users = SimUsers {
        world: world.clone(),
        node: i,
        rx: urx,
        sessions: Default::default(),
        honest_limits: SessionLimits {
            max_messages_per_minute: 1_000_000,
            ..limits.clone()
        },
        intake: Intake::new(limits, SimEntropy::for_boot(seed, i, boots)),
        pending: Default::default(),
        refusing: false,
    };
    let roundtime = cfg.roundtime_ms;
    // The contract's state survived the crash, maybe ahead of the store
    // (a ledger it ran may not have been synced): boot rolls it back.
    let mut node = match driver::boot(cfg, key.clone(), &mut store, &mut contract) {
        Ok(n) => n,
        Err(e) => {
            let what = format!("node {i} could not start: {e}");
            world.violation(Kind::Stopped, i, what);
            return;
        }
    };
    node.share_frames(&frames);
    let (keys, coalition): (Vec<_>, Vec<_>) = {
        let g = world.lock();
        let keys = g.nodes.iter().map(|n| n.key.public()).collect();
        let same = g
            .nodes
            .iter()
            .filter(|n| n.role == role)
            .map(|n| n.key.clone());
        (keys, same.collect())
    };
    let links = Links::new(
        i,
        key.clone(),
        unl.clone(),
        handshake,
        SimEntropy::for_boot(seed ^ 0x6c69_6e6b, i, boots),
    );
    let mut byzantine = Byzantine::new(
        role,
        key,
        unl,
        roundtime,
        seed ^ (i as u64).wrapping_mul(0x9e37_79b9),
        seed,
    );
    if let Some(b) = byzantine.as_mut() {
        b.set_peers(keys, coalition);
    }
    let mut env = Env {
        clock: SimClock {
            world: world.clone(),
            node: i,
        },
        net: SimNet {
            world: world.clone(),
            node: i,
            rx,
            byzantine,
            links,
            relay: (role == Role::Relay).then(|| Relay::new(handshake, roundtime, seed ^ i as u64)),
        },
        users,
        store,
        contract,
        observer: SimObserver {
            world: world.clone(),
            node: i,
        },
    };
    env.net.start();
    if let Err(e) = driver::run(&mut node, &mut env).await {
        let mut g = world.lock();
        // A node killed mid-write stops here, dead until restarted.
        if g.nodes[i].alive {
            let v = Violation::at(world.now(), Kind::Stopped, format!("node {i} stopped: {e}"));
            g.checker.violate(v.by(i));
        }
    }
}

fn report(s: &Scenario, seed: u64, world: &Arc<World>) -> Report {
    world.shut_down();
    let trace_hash = world.trace_hash().to_string();
    let simulated_ms = world.now();
    let mut g = world.lock();
    let honest = s.honest();
    let steady: Vec<usize> = honest
        .iter()
        .copied()
        .filter(|&i| g.nodes[i].crashes == 0)
        .collect();
    let judged = Judged {
        honest: honest.clone(),
        steady,
        uptime: s.uptime(),
        end_ms: simulated_ms,
    };
    g.checker.check_expectations(&s.expectations, &judged);
    // With no byzantine node, a seen equivocation is an honest node that
    // signed one stage twice (a restart mid-round, say).
    if honest.len() == s.nodes {
        for i in 0..s.nodes {
            let n = g.nodes[i].stats.equivocations;
            if n > 0 {
                let what = format!("node {i} saw {n} equivocations, and every node is honest");
                g.checker
                    .violate(Violation::at_end(Kind::Equivocation, what).by(i));
            }
        }
    }
    let (inputs_taken, inputs_answered) = g.checker.outputs.summary();
    let nodes = (0..g.nodes.len())
        .map(|i| {
            let lcl = g.checker.lcl.get(&i).copied();
            let n = &g.nodes[i];
            NodeReport {
                id: i,
                role: n.role,
                seq: lcl.map_or(0, |l| l.seq),
                lcl: lcl.map_or_else(String::new, |l| l.hash.to_string()),
                status: n.status,
                stats: n.stats.clone(),
                diverged: g.checker.divergences.get(&i).copied().unwrap_or(0),
                withheld: g.checker.withheld.get(&i).copied().unwrap_or(0),
            }
        })
        .collect();
    Report {
        scenario: s.name.clone(),
        seed,
        trace_hash,
        trace_events: g.trace.events,
        passed: g.checker.violations.is_empty(),
        violations: g.checker.violations.clone(),
        nodes,
        simulated_ms,
        net: g.net,
        inputs_submitted: g.inputs_submitted,
        inputs_dropped: g.inputs_dropped,
        inputs_taken,
        inputs_answered,
        rolled_back: g.checker.rolled_back,
        byzantine_users: g.byz_users.clone(),
        log: g.log.take(),
        verified: VerifiedStats::default(),
        frames: FrameStats::default(),
        beacon: {
            let b = &g.checker.beacon;
            let values: Vec<Hash> = b.values.values().flatten().copied().collect();
            BeaconSummary {
                outcomes: b.values.len() as u64,
                random: values.len() as u64,
                absent: b.absent.clone(),
                fraud: b.fraud.clone(),
                excused: b.excused,
                commits_missed: b.commits_missed,
                values,
            }
        },
    }
}
