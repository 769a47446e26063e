//! Runs one scenario with one seed on a fresh madsim runtime: makes the
//! world, boots (and reboots) the nodes in their surroundings, sends the
//! users' inputs, applies the timeline, and asks the world for the report.

use crate::adversary::{Byzantine, Relay};
use crate::check::violation::{Kind, Violation};
use crate::env::contract::SimContract;
use crate::env::users::byzantine::spawn_attackers;
use crate::env::users::signed::SignedCheck;
use crate::env::users::SimUsers;
use crate::env::{SimClock, SimNet, SimObserver, SimStore};
use crate::scenario::{ContractSettings, Fault, Role, Scenario};
use crate::world::entropy::SimEntropy;
use crate::world::links::Links;
use crate::world::nodes::Boot;
use crate::world::{unl_of, Setup, World};
use hotpocket_multisig_contract::DEFAULT_TIMEOUT_MS;
use hotpocket_node::consensus::{ConsensusConfig, SentProposals};
use hotpocket_node::crypto::{Keypair, PubKey, Verified};
use hotpocket_node::driver::{self, Env};
use hotpocket_node::users::hp::{HpNode, View};
use hotpocket_node::users::{Intake, SessionLimits};
use madsim::runtime::{Handle, NodeHandle, Runtime};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::sync::Arc;

pub use crate::world::report::{BeaconSummary, NodeReport, Report};

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
    let public: Vec<PubKey> = keys.iter().map(Keypair::public).collect();
    let cfg = s.consensus.config(unl_of(&s, &public));
    let setup = Setup {
        cfg: &cfg,
        verified: &verified,
        print_events,
        picture,
    };
    let world = World::new(&s, seed, keys, user_keys, wire, setup);

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
            for (k, t) in w.schedule.times() {
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
    let mut report = world.report(&s, seed);
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

/// Applies `fault` to the world, and kills, restarts or pauses node tasks.
fn apply(handle: &Handle, world: &Arc<World>, nodes: &[NodeHandle], fault: Fault) {
    world.apply(&fault);
    match fault {
        Fault::Crash { node } => handle.kill(nodes[node].id()),
        Fault::Restart { node } => handle.restart(nodes[node].id()),
        Fault::Pause { node } => handle.pause(nodes[node].id()),
        Fault::Resume { node } => handle.resume(nodes[node].id()),
        _ => {}
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
    let Boot {
        key,
        role,
        unl,
        boots,
        handshake,
    } = world.boot(i, tx, utx);
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
        prototype_sessions: cfg.vouched_inputs,
        ..SessionLimits::default()
    };
    let mut intake = Intake::new(limits.clone(), SimEntropy::for_boot(seed, i, boots));
    // Signed inputs only: users speak hpcore's protocol.
    if !cfg.vouched_inputs {
        let node = HpNode {
            key: key.clone(),
            contract_id: "sim-contract".into(),
            contract_version: "1.0".into(),
            unl: unl.clone(),
        };
        intake = intake.serving_hp(node, View::starting(cfg.roundtime_ms, false));
    }
    let users = SimUsers {
        world: world.clone(),
        node: i,
        rx: urx,
        sessions: Default::default(),
        honest_limits: SessionLimits {
            max_messages_per_minute: 1_000_000,
            ..limits.clone()
        },
        intake,
        pending: Default::default(),
        refusing: false,
        signed: SignedCheck::new(&cfg, key.verified()),
        hp: Default::default(),
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
    let keys = world.keys();
    let coalition = world.playing(role).into_iter().map(|(_, k)| k).collect();
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
        // A node killed mid-write stops here, dead until restarted.
        world.stopped(i, e.to_string());
    }
}
