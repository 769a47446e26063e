//! Link delay distributions: what a scenario says and how a delay is drawn.

use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

/// A one-way link delay distribution, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub enum Latency {
    Fixed {
        ms: u64,
    },
    Uniform {
        min: u64,
        max: u64,
    },
    /// Uniform in `min..=max`, except `tail_pct` percent of messages that
    /// take up to `tail_max`: a congested or long-haul link.
    Tail {
        min: u64,
        max: u64,
        tail_pct: f64,
        tail_max: u64,
    },
}

/// Parts per million, for integer probability draws.
pub fn ppm(pct: f64) -> u64 {
    (pct * 10_000.0).round().clamp(0.0, 1_000_000.0) as u64
}

pub(crate) fn sample(rng: &mut ChaCha8Rng, l: Latency) -> u64 {
    let between = |rng: &mut ChaCha8Rng, lo: u64, hi: u64| lo + rng.next_u64() % (hi - lo + 1);
    match l {
        Latency::Fixed { ms } => ms,
        Latency::Uniform { min, max } => between(rng, min, max),
        Latency::Tail {
            min,
            max,
            tail_pct,
            tail_max,
        } => {
            if rng.next_u64() % 1_000_000 < ppm(tail_pct) {
                between(rng, max, tail_max.max(max))
            } else {
                between(rng, min, max)
            }
        }
    }
}

impl Latency {
    /// The longest a message can take.
    pub fn max_ms(&self) -> u64 {
        match *self {
            Latency::Fixed { ms } => ms,
            Latency::Uniform { max, .. } => max,
            Latency::Tail { max, tail_max, .. } => max.max(tail_max),
        }
    }
}

/// How far apart two nodes' views of one moment can be in a run of `s`:
/// the slowest link (reordering included) plus the widest clock gap the
/// offsets and drifts open over the run. The protocol assumes this stays
/// inside the shortest stage; where it does not, a node up and in time
/// may still miss a stage, and only safety is owed.
pub fn timing_spread_ms(s: &crate::scenario::Scenario) -> u64 {
    let links = s.links.iter().filter_map(|l| l.latency_ms);
    let slowest = links
        .chain([s.network.latency_ms])
        .map(|l| l.max_ms())
        .max()
        .unwrap_or(0);
    let reorder = if s.network.reorder_pct > 0.0 {
        s.network.reorder_extra_ms
    } else {
        0
    };
    let drift_ms = |ppm: i64| ppm.unsigned_abs() * s.duration_ms / 1_000_000;
    let ahead =
        |n: &crate::scenario::NodeSettings| n.clock_offset_ms + drift_ms(n.clock_drift_ppm) as i64;
    let behind =
        |n: &crate::scenario::NodeSettings| n.clock_offset_ms - drift_ms(n.clock_drift_ppm) as i64;
    let most = s.node_settings.iter().map(ahead).max().unwrap_or(0).max(0);
    let least = s.node_settings.iter().map(behind).min().unwrap_or(0).min(0);
    slowest + reorder + (most - least) as u64
}

/// The shortest stage, as the protocol's timing lays the round out: stages
/// 1-3 get `stage_slice_pct` each, stage 0 the rest.
pub fn shortest_stage_ms(roundtime_ms: u64, stage_slice_pct: u64) -> u64 {
    let stage = roundtime_ms * stage_slice_pct / 100;
    stage.min(roundtime_ms.saturating_sub(3 * stage))
}

/// Whether a run of `s` keeps the timing the protocol assumes: its
/// `timing_spread_ms` fits in the shortest stage.
pub fn timely(s: &crate::scenario::Scenario) -> bool {
    let c = &s.consensus;
    timing_spread_ms(s) <= shortest_stage_ms(c.roundtime_ms, c.stage_slice_pct)
}
