//! Swarm testing, after TigerBeetle's `options_swarm`: one seed draws the
//! whole world (node count, which nodes are byzantine and how, consensus
//! settings, network, workload, partitions, crashes and ByzzFuzz mutation
//! windows) within the ranges a scenario's `[swarm]` table gives, and what
//! the run must satisfy follows from what was drawn:
//! - safety always, with byzantine nodes up to one below the bound the
//!   README claims (a fork needs `2 * needed(close) - n` double-voters);
//! - liveness only when the honest nodes alone reach the close threshold:
//!   then every honest node must close ledgers after the last fault ends.

use super::draws::{self, Window};
use super::{pick_u, stream, Stream};
use crate::scenario::clock::scoped_end_ms;
use crate::scenario::twins::Twins;
use crate::scenario::{
    ByzantineUsers, ConsensusSettings, Expectation, Fault, NodeSettings, Ranges, Role, Scenario,
    Schedule, TimelineEvent, Workload,
};
use hotpocket_node::consensus::threshold;
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

/// Every role that plays against consensus with the key-value contract
/// (and `twin`, drawn apart: one run in six, at most one a run).
const ROLES: [Role; 19] = [
    Role::Equivocator,
    Role::Forger,
    Role::Replayer,
    Role::Silent,
    Role::HistoryLiar,
    Role::StateLiar,
    Role::BeaconWithholder,
    Role::BeaconEquivocator,
    Role::BeaconLiar,
    Role::BeaconForger,
    Role::Mutator,
    Role::Colluder,
    Role::VoteForger,
    Role::Sybil,
    Role::HistoryForger,
    Role::ProofForger,
    Role::HistorySkipper,
    Role::BodySwapper,
    Role::Relay,
];

/// Byzantine nodes at which two conflicting final ledgers become possible:
/// two close quorums of `needed` among `n` share `2 * needed - n` nodes,
/// all of whom must double-vote.
pub fn safety_bound(n: usize, close_pct: u64) -> usize {
    (2 * threshold(n, close_pct)).saturating_sub(n)
}

fn pick(rng: &mut ChaCha8Rng, r: Option<[u64; 2]>, default: [u64; 2]) -> u64 {
    pick_u(rng, r.unwrap_or(default))
}

/// What the consensus draw fixes that the other draws depend on.
struct Timing {
    roundtime: u64,
    close: u64,
    /// The highest stage or close threshold: the honest nodes must reach
    /// it alone for liveness.
    top_pct: u64,
    /// The widest a link, reordering or clock gap may be in a timely run,
    /// and whether the run keeps to it (the timing the protocol assumes).
    window: Window,
}

/// Who is byzantine, and how.
struct Byzantine {
    bound: usize,
    count: usize,
    roles: Vec<(usize, Role)>,
    twin: Option<usize>,
}

/// The concrete scenario swarm seed `seed` draws from `base`, subsystem
/// by subsystem, each from its own stream of the seed.
pub fn draw(base: &Scenario, r: &Ranges, seed: u64) -> Scenario {
    let mut s = base.clone();
    let world = &mut stream(seed, Stream::World);
    let n = pick(world, r.nodes, [4, 10]).max(1) as usize;
    s.nodes = n;
    s.unl = None;
    let timing = consensus(world, r, &mut s);
    let rounds = pick(world, r.rounds, [40, 60]);
    let roundtime = timing.roundtime;
    s.duration_ms = rounds * roundtime;
    let byz = byzantine(&mut stream(seed, Stream::Byzantine), r, n, &timing);
    s.node_settings = (0..n)
        .map(|id| NodeSettings {
            id,
            role: (byz.roles.iter().find(|x| x.0 == id)).map_or(Role::Honest, |x| x.1),
            clock_offset_ms: 0,
            clock_drift_ppm: 0,
        })
        .collect();
    let window = Some(timing.window);
    draws::clocks(&mut stream(seed, Stream::Clocks), r, &mut s, window);
    if timing.window.timely {
        // Two clocks drifting apart over the run open up to twice this.
        let cap = (timing.window.ms * 1_000_000 / (20 * s.duration_ms).max(1)) as i64;
        for ns in &mut s.node_settings {
            ns.clock_drift_ppm = ns.clock_drift_ppm.clamp(-cap, cap);
        }
    }
    draws::network(&mut stream(seed, Stream::Network), r, &mut s, window);
    s.links.clear();
    let fault_end = rounds * r.fault_pct.unwrap_or(50).min(90) / 100 * roundtime;
    users(&mut stream(seed, Stream::Users), r, &mut s, roundtime);
    s.timeline.clear();
    partitions(
        &mut stream(seed, Stream::Partitions),
        r,
        &mut s,
        roundtime,
        fault_end,
    );
    s.twins = (byz.twin).map(|node| twins(&mut stream(seed, Stream::Twins), &s, node, fault_end));
    mutations(
        &mut stream(seed, Stream::Mutations),
        r,
        &mut s,
        &byz,
        fault_end,
    );
    // A lone closer that voted on its ledger may not leave it until the
    // others finalise another (the rollback rule): a run keeps its
    // liveness check only with an honest node to spare per lone close
    // (swarm seed 4157: 4 nodes, one byzantine, the lone closer needed
    // for 3 of 4). Runs without a liveness check take any number.
    let thr = threshold(n, timing.top_pct);
    let spare = match timing.window.timely && n - byz.count >= thr {
        true => n - byz.count - thr,
        false => usize::MAX,
    };
    let cuts = &mut stream(seed, Stream::Cuts);
    let lone_closes = super::cuts::draw(cuts, r, &mut s, fault_end, spare);
    draws::jitter(&mut stream(seed, Stream::Jitter), r, &mut s);
    // Windows of ledgers in memory from the least allowed to the default:
    // catch-up then reads from the peers' disks.
    let memory = [4, 8, 64][(stream(seed, Stream::Memory).next_u64() % 3) as usize];
    s.consensus.memory_ledgers = Some(memory);
    let crash_window = fault_end.saturating_sub(4000);
    let crashes = &mut stream(seed, Stream::Crashes);
    draws::crashes(crashes, r, &mut s, Some([0, 2]), crash_window);
    let honest = (n - byz.count).saturating_sub(lone_closes);
    let live = timing.window.timely && honest >= thr;
    expect(&mut s, &byz, &timing, live);
    describe(&mut s, &byz, &timing, live);
    s.swarm = None;
    s
}

fn consensus(rng: &mut ChaCha8Rng, r: &Ranges, s: &mut Scenario) -> Timing {
    let roundtime = pick(rng, r.roundtime_ms, [300, 1000]) / 10 * 10;
    let slice = pick(rng, r.stage_slice_pct, [15, 30]);
    let close = pick(rng, r.close_threshold_pct, [60, 90]);
    let t1 = pick_u(rng, [40, 60]);
    let t2 = pick_u(rng, [t1.max(55), 75]);
    let t3 = pick_u(rng, [t2.max(65).min(close), close]);
    s.consensus = ConsensusSettings {
        roundtime_ms: roundtime,
        stage_slice_pct: slice,
        stage_thresholds_pct: [t1, t2, t3],
        close_threshold_pct: close,
        ..s.consensus.clone()
    };
    // The shortest stage: stage 0 gets what stages 1-3 leave. The protocol
    // assumes clocks and links keep inside it (`timing_spread_ms`): timely
    // runs give the slowest link 2/5 of it, reordering 1/5, offsets 1/5
    // and drift 1/10. One run in four breaks that (latency up to twice
    // it, clocks half of it apart), and then only safety is checked.
    // Rounded down here, so never above `latency::shortest_stage_ms`.
    let stage0_ms = roundtime * (100 - 3 * slice) / 100;
    let ms = (roundtime * slice / 100).min(stage0_ms).max(1);
    let timely = !rng.next_u64().is_multiple_of(4);
    Timing {
        roundtime,
        close,
        top_pct: t1.max(t2).max(t3).max(close),
        window: Window { ms, timely },
    }
}

fn byzantine(rng: &mut ChaCha8Rng, r: &Ranges, n: usize, timing: &Timing) -> Byzantine {
    let bound = safety_bound(n, timing.close);
    let most = (bound.saturating_sub(1)).min(n - 1) as u64;
    // Half the runs keep enough honest nodes for liveness; the others may
    // go right up to the bound, where only safety is left to check.
    // Any stage's threshold held by byzantine votes lets them split the
    // honest nodes on every input, round after round (coalition seeds 398,
    // 403, 627 stalled so): liveness needs the honest nodes to reach each.
    let live_most = most.min((n - threshold(n, timing.top_pct)) as u64);
    let top = if rng.next_u64().is_multiple_of(2) {
        live_most
    } else {
        most
    };
    let [lo, hi] = r.byzantine.unwrap_or([0, top]);
    let b = pick_u(rng, [lo.min(most), hi.min(most)]) as usize;
    let roles = r.roles.clone().unwrap_or(ROLES.to_vec());
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let mut byz: Vec<(usize, Role)> = order[..b]
        .iter()
        .map(|&id| (id, roles[(rng.next_u64() % roles.len() as u64) as usize]))
        .collect();
    byz.sort_by_key(|x| x.0);
    // One run in six (when allowed) makes its first byzantine node a twin:
    // Twins sampled over the swarm's sizes, beyond what `twins.toml`
    // enumerates. A run has one twin; further twin draws equivocate.
    let twins_ok = r.roles.as_ref().is_none_or(|x| x.contains(&Role::Twin));
    if twins_ok && !byz.is_empty() && rng.next_u64().is_multiple_of(6) {
        byz[0].1 = Role::Twin;
    }
    let twin = byz.iter().find(|x| x.1 == Role::Twin).map(|x| x.0);
    for x in byz
        .iter_mut()
        .filter(|x| x.1 == Role::Twin && Some(x.0) != twin)
    {
        x.1 = Role::Equivocator;
    }
    Byzantine {
        bound,
        count: b,
        roles: byz,
        twin,
    }
}

/// Honest users on every node; one run in four adds byzantine users.
fn users(rng: &mut ChaCha8Rng, r: &Ranges, s: &mut Scenario, roundtime: u64) {
    let everyone = |every_ms, start_ms| Schedule {
        nodes: vec![],
        users: None,
        every_ms,
        start_ms,
        stop_ms: s.duration_ms.saturating_sub(2 * roundtime),
    };
    let schedule = everyone(pick(rng, r.every_ms, [20, 200]).max(1), 500);
    let attackers =
        (rng.next_u64().is_multiple_of(4)).then(|| everyone(pick_u(rng, [50, 400]), 300));
    s.workload = vec![Workload {
        schedule,
        size: 64,
        keys: 100,
        unknown: Default::default(),
    }];
    s.byzantine_users = (attackers.into_iter())
        .map(|schedule| ByzantineUsers {
            schedule,
            attacks: vec![],
            unknown: Default::default(),
        })
        .collect();
}

/// Random two-way partitions, one after another, all over by `fault_end`.
fn partitions(rng: &mut ChaCha8Rng, r: &Ranges, s: &mut Scenario, roundtime: u64, fault_end: u64) {
    let n = s.nodes;
    let mut at = 2 * roundtime;
    for _ in 0..pick(rng, r.partitions, [0, 2]) {
        let start = at + pick_u(rng, [0, 4]) * roundtime;
        let len = pick(rng, r.partition_rounds, [1, 6]) * roundtime;
        if start + len > fault_end {
            break;
        }
        let side: Vec<bool> = (0..n).map(|_| rng.next_u64().is_multiple_of(2)).collect();
        let (a, b): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| side[i]);
        if !a.is_empty() && !b.is_empty() {
            s.timeline
                .push(ev(start, Fault::Partition { groups: vec![a, b] }));
            s.timeline.push(ev(start + len, Fault::Heal));
        }
        at = start + len + roundtime;
    }
}

/// The twin's schedule: three steps, each splitting the others into who
/// talks to which copy, over by `fault_end`.
fn twins(rng: &mut ChaCha8Rng, s: &Scenario, node: usize, fault_end: u64) -> Twins {
    let roundtime = s.consensus.roundtime_ms;
    let others: Vec<usize> = (0..s.nodes).filter(|&i| i != node).collect();
    let step_rounds = pick_u(rng, [1, 3]);
    let steps = 3;
    let last = (fault_end / roundtime)
        .saturating_sub(steps * step_rounds)
        .max(2);
    Twins {
        node,
        step_rounds,
        from_round: pick_u(rng, [2, last]),
        split: (0..steps)
            .map(|_| {
                (others.iter().copied())
                    .filter(|_| rng.next_u64().is_multiple_of(2))
                    .collect()
            })
            .collect(),
        search_steps: None,
        partition: false,
    }
}

/// Each mutator's one-round mutation windows, before `fault_end`.
fn mutations(rng: &mut ChaCha8Rng, r: &Ranges, s: &mut Scenario, byz: &Byzantine, fault_end: u64) {
    let (n, roundtime) = (s.nodes, s.consensus.roundtime_ms);
    for &(id, role) in &byz.roles {
        if role != Role::Mutator {
            continue;
        }
        for _ in 0..pick(rng, r.mutations, [1, 4]) {
            let round = pick_u(rng, [1, (fault_end / roundtime).max(2) - 1]);
            let to: Vec<usize> = (0..n)
                .filter(|&p| p != id && rng.next_u64().is_multiple_of(2))
                .collect();
            let any_scope = rng.next_u64() % 100 < r.any_scope_pct.unwrap_or(25);
            let fault = Fault::Mutate {
                node: id,
                to,
                // TOML integers are signed 64-bit.
                seed: rng.next_u64() >> 16,
                for_ms: roundtime,
                any_scope,
            };
            s.timeline.push(ev(round * roundtime, fault));
        }
    }
    s.timeline.sort_by_key(|e| e.at_ms);
}

/// What the run must satisfy, from what was drawn: liveness only when
/// `live`.
fn expect(s: &mut Scenario, byz: &Byzantine, timing: &Timing, live: bool) {
    let (n, b, roundtime) = (s.nodes, byz.count, timing.roundtime);
    let end = |e| end_of(e, roundtime);
    let quiet = (s.timeline.iter().map(end).max().unwrap_or(0)).max(twins_end(s));
    s.expectations.clear();
    if live {
        let from = quiet + 6 * roundtime;
        let left = s.duration_ms.saturating_sub(from) / roundtime;
        // With no honest node to spare at the top threshold, one lost
        // vote fails a round: it closes only if all h(h-1) last-stage
        // votes among the h honest nodes arrive, (1 - loss)^(h(h-1)) of
        // rounds. 7 of 7 at 3%: 28% (swarm seed 757: 8 ledgers in 39
        // rounds); 9 of 9 at 3%: 11% (seed 3971: 2 in 29, and 1 to 10
        // over seeds 1..30 of the same world). Owe a quarter of that, and
        // answers only to inputs sent while 8 closes are still to come.
        let h = n - b;
        let top = threshold(n, timing.top_pct);
        let closing = if h == top && s.network.loss_pct > 0.0 {
            (1.0 - s.network.loss_pct / 100.0).powi((h * (h - 1)) as i32)
        } else {
            1.0
        };
        let (ledgers, answer_rounds) = if closing < 1.0 {
            let owed = (left as f64 * closing / 4.0) as u64;
            (owed.max(1), ((8.0 / closing) as u64).max(20))
        } else {
            ((left / 4).max(2), 20)
        };
        s.expectations.push(Expectation::Progress {
            from_ms: from,
            ledgers,
        });
        s.expectations.push(Expectation::MaxLag { ledgers: 2 });
        // Results are certified by a majority as well: the honest nodes
        // alone must reach it for every input to come back.
        let sent_by_ms = s.duration_ms.saturating_sub(answer_rounds * roundtime);
        if n - b >= top.max(n / 2 + 1) && sent_by_ms > from {
            s.expectations.push(Expectation::AllAnswered {
                sent_by_ms,
                sent_from_ms: from,
            });
        }
    }
}

fn describe(s: &mut Scenario, byz: &Byzantine, timing: &Timing, live: bool) {
    let c = &s.consensus;
    let [t1, t2, t3] = c.stage_thresholds_pct;
    let (n, b, bound) = (s.nodes, byz.count, byz.bound);
    let roles: Vec<String> = (byz.roles.iter())
        .map(|(id, role)| format!("n{id} {}", role_name(*role)))
        .collect();
    s.description = format!(
        "swarm: {n} nodes, {b} byzantine [{}] (safety bound {bound}), roundtime {} ms, \
         stage {}%, thresholds {t1}/{t2}/{t3}, close {}% ({} of {n}), {} faults, \
         {} byzantine user tables, {} ledgers in memory, \
         liveness {}",
        roles.join(", "),
        c.roundtime_ms,
        c.stage_slice_pct,
        c.close_threshold_pct,
        threshold(n, timing.close),
        s.timeline.len(),
        s.byzantine_users.len(),
        c.memory_ledgers.map_or("default".into(), |m| m.to_string()),
        match (live, timing.window.timely) {
            (true, _) => "expected",
            (false, true) => "not expected (too few honest)",
            (false, false) => "not expected (latency and clocks beyond the shortest stage)",
        },
    );
}

pub(super) fn ev(at_ms: u64, fault: Fault) -> TimelineEvent {
    TimelineEvent { at_ms, fault }
}

/// When the twins' split ends, if there are twins.
fn twins_end(s: &Scenario) -> u64 {
    s.twins.as_ref().map_or(0, |t| {
        (t.from_round + t.split.len() as u64 * t.step_rounds) * s.consensus.roundtime_ms
    })
}

/// When a timeline event's effect ends.
fn end_of(e: &TimelineEvent, roundtime: u64) -> u64 {
    match e.fault {
        Fault::Mutate { for_ms, .. } => e.at_ms + for_ms,
        ref f => (scoped_end_ms(f, roundtime)).map_or(e.at_ms, |end| end.max(e.at_ms)),
    }
}

pub fn role_name(role: Role) -> String {
    serde_json::to_value(role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_matches_the_readme_claim() {
        // 80% of 5 is 4; two quorums of 4 share 3 nodes: 3 of 5 = 60%.
        assert_eq!(safety_bound(5, 80), 3);
        assert_eq!(safety_bound(10, 80), 6);
        assert_eq!(safety_bound(4, 60), 2);
        assert_eq!(safety_bound(7, 51), 1);
    }

    #[test]
    fn draws_stay_below_the_bound_and_replay() {
        let base: Scenario =
            toml::from_str("name = \"s\"\nduration_ms = 1000\nnodes = 4\n[swarm]\n").unwrap();
        let r = base.swarm.clone().unwrap();
        let mut sizes = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let s = draw(&base, &r, seed);
            s.validate().unwrap();
            let b = s.nodes - s.honest().len();
            assert!(b < safety_bound(s.nodes, s.consensus.close_threshold_pct));
            sizes.insert(s.nodes);
            let again = draw(&base, &r, seed);
            assert_eq!(
                toml::to_string(&s).unwrap(),
                toml::to_string(&again).unwrap()
            );
        }
        assert_eq!(sizes.len(), 7, "every size from 4 to 10 drawn: {sizes:?}");
    }

    #[test]
    fn timely_draws_keep_links_and_clocks_inside_the_shortest_stage() {
        let base: Scenario =
            toml::from_str("name = \"s\"\nduration_ms = 1000\nnodes = 4\n[swarm]\n").unwrap();
        let r = base.swarm.clone().unwrap();
        let (mut timely, mut not) = (0, 0);
        for seed in 0..300 {
            let s = draw(&base, &r, seed);
            if s.description.contains("beyond the shortest stage") {
                not += 1;
            } else {
                assert!(
                    crate::scenario::latency::timely(&s),
                    "seed {seed}: {}",
                    s.description
                );
                timely += 1;
            }
        }
        assert!(timely > 150 && not > 30, "{timely} timely, {not} not");
    }
}
