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
            if rng.next_u64() % 1_000_000 < crate::world::ppm(tail_pct) {
                between(rng, max, tail_max.max(max))
            } else {
                between(rng, min, max)
            }
        }
    }
}
