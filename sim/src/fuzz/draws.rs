//! The draws `[fuzz]` and `[swarm]` share: the network, the clocks,
//! random crashes and timeline jitter. Each reads the same knob the same
//! way; under `[swarm]` (a `Window` given) an unset knob is drawn from its
//! default, under `[fuzz]` it keeps the scenario's value.

use super::{pick_f, pick_i, pick_u};
use crate::scenario::{Fault, Latency, NodeSettings, Ranges, Role, Scenario, TimelineEvent};
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

/// What the swarm's drawn timing lets links and clocks take: the
/// shortest stage's slack, and whether the run keeps inside it.
#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub ms: u64,
    pub timely: bool,
}

/// Latency, loss, duplication and reordering.
pub(crate) fn network(rng: &mut ChaCha8Rng, r: &Ranges, s: &mut Scenario, world: Option<Window>) {
    let n = &mut s.network;
    let or = |knob: Option<[f64; 2]>, default: [f64; 2]| knob.or(world.map(|_| default));
    if let Some(range) = or(r.loss_pct, [0.0, 3.0]) {
        n.loss_pct = pick_f(rng, range);
    }
    if let Some(range) = or(r.duplicate_pct, [0.0, 2.0]) {
        n.duplicate_pct = pick_f(rng, range);
    }
    if let Some(range) = or(r.reorder_pct, [0.0, 10.0]) {
        n.reorder_pct = pick_f(rng, range);
    }
    let min_range = r.latency_min_ms.or(world.map(|_| [1, 10]));
    if min_range.is_some() || r.latency_max_ms.is_some() {
        let min = min_range.map_or(5, |x| pick_u(rng, x));
        let max = match (r.latency_max_ms, world) {
            (Some(x), _) => pick_u(rng, x).max(min),
            // Timely runs give the slowest link 2/5 of the window.
            (None, Some(w)) => {
                let top = if w.timely { w.ms * 2 / 5 } else { w.ms * 2 };
                pick_u(rng, [min, top.max(min)])
            }
            (None, None) => min + 25,
        };
        n.latency_ms = Latency::Uniform { min, max };
    }
    if let Some(w) = world {
        n.reorder_extra_ms = if w.timely { w.ms / 5 } else { w.ms / 2 }.max(1);
    }
}

/// Each node's clock offset and drift; a node without settings gets
/// honest ones.
pub(crate) fn clocks(rng: &mut ChaCha8Rng, r: &Ranges, s: &mut Scenario, world: Option<Window>) {
    let skew = world.map(|w| (if w.timely { w.ms / 10 } else { w.ms / 2 }) as i64);
    let offset = r.clock_offset_ms.or(skew.map(|k| [-k, k]));
    let drift = r.clock_drift_ppm.or(world.map(|_| [-100, 100]));
    if offset.is_none() && drift.is_none() {
        return;
    }
    for id in 0..s.nodes {
        let offset = offset.map_or(0, |x| pick_i(rng, x));
        let drift = drift.map_or(0, |x| pick_i(rng, x));
        match s.node_settings.iter_mut().find(|x| x.id == id) {
            Some(x) => {
                x.clock_offset_ms = offset;
                x.clock_drift_ppm = drift;
            }
            None => s.node_settings.push(NodeSettings {
                id,
                role: Role::Honest,
                clock_offset_ms: offset,
                clock_drift_ppm: drift,
            }),
        }
    }
    s.node_settings.sort_by_key(|x| x.id);
}

/// Adds crash-and-restart pairs of honest nodes (from `crash_nodes` when
/// set) that the timeline does not crash already: a random restart would
/// cut a planned absence short. Each starts before `window_ms` and lasts
/// 0.2 to 5 s; half crash in the middle of the node's next ledger write.
pub(crate) fn crashes(
    rng: &mut ChaCha8Rng,
    r: &Ranges,
    s: &mut Scenario,
    default: Option<[u64; 2]>,
    window_ms: u64,
) {
    let Some(range) = r.crashes.or(default) else {
        return;
    };
    let planned: Vec<usize> = (s.timeline.iter())
        .filter_map(|e| match e.fault {
            Fault::Crash { node } | Fault::CrashMidWrite { node } => Some(node),
            _ => None,
        })
        .collect();
    let candidates: Vec<usize> = (s.honest().into_iter())
        .filter(|n| !planned.contains(n))
        .filter(|n| r.crash_nodes.as_ref().is_none_or(|c| c.contains(n)))
        .collect();
    if candidates.is_empty() {
        return;
    }
    for _ in 0..pick_u(rng, range) {
        let node = candidates[(rng.next_u64() % candidates.len() as u64) as usize];
        let at = rng.next_u64() % window_ms.max(1);
        let down = pick_u(rng, [200, 5000]);
        let fault = if rng.next_u64().is_multiple_of(2) {
            Fault::Crash { node }
        } else {
            Fault::CrashMidWrite { node }
        };
        s.timeline.push(TimelineEvent { at_ms: at, fault });
        s.timeline.push(TimelineEvent {
            at_ms: at + down,
            fault: Fault::Restart { node },
        });
    }
    s.timeline.sort_by_key(|e| e.at_ms);
}

/// Moves each timeline event by up to ±`timeline_jitter_ms`, but never
/// before the one it followed, so a restart never comes before its crash.
pub(crate) fn jitter(rng: &mut ChaCha8Rng, r: &Ranges, s: &mut Scenario) {
    let Some(j) = r.timeline_jitter_ms else {
        return;
    };
    let mut floor = 0;
    for ev in s.timeline.iter_mut() {
        // A cut scoped to rounds is armed before them; moved, it could
        // miss its first round.
        if matches!(
            ev.fault,
            Fault::Block {
                rounds: Some(_),
                ..
            }
        ) {
            continue;
        }
        let delta = pick_i(rng, [-(j as i64), j as i64]);
        ev.at_ms = (ev.at_ms as i64 + delta).max(floor as i64) as u64;
        floor = ev.at_ms;
    }
    // Stable: only the unmoved scoped cuts change places.
    s.timeline.sort_by_key(|e| e.at_ms);
}
