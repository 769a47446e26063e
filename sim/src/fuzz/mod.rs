//! Fuzzing: one seed picks both the run's randomness and, within the ranges
//! a scenario's `[fuzz]` or `[swarm]` table declares (`scenario::Ranges`),
//! its world and faults. The concrete scenario a seed produced can be
//! written out and re-run with `run`.

mod cuts;
mod draws;
pub mod swarm;

use crate::scenario::{Expectation, Ranges, Scenario};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// The independent streams one seed splits into, one per subsystem, so
/// that a knob added to one subsystem leaves the others' draws alone.
#[derive(Clone, Copy)]
pub(crate) enum Stream {
    World = 1,
    Byzantine,
    Clocks,
    Network,
    Users,
    Partitions,
    Crashes,
    Twins,
    Mutations,
    Jitter,
    Cuts,
    Memory,
}

/// Subsystem `stream`'s randomness for `seed`: ChaCha's own stream
/// number, so no two subsystems ever share a word.
pub(crate) fn stream(seed: u64, stream: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream as u64);
    rng
}

fn pick_f(rng: &mut ChaCha8Rng, [lo, hi]: [f64; 2]) -> f64 {
    // Draw in hundredths so the chosen value prints exactly in TOML.
    let steps = ((hi - lo) * 100.0).round().max(0.0) as u64;
    lo + (rng.next_u64() % (steps + 1)) as f64 / 100.0
}

pub(crate) fn pick_u(rng: &mut ChaCha8Rng, [lo, hi]: [u64; 2]) -> u64 {
    lo + rng.next_u64() % (hi.saturating_sub(lo) + 1)
}

pub(crate) fn pick_i(rng: &mut ChaCha8Rng, [lo, hi]: [i64; 2]) -> i64 {
    lo + (rng.next_u64() % ((hi - lo).max(0) as u64 + 1)) as i64
}

/// The concrete scenario fuzz seed `seed` runs. Without a `[fuzz]` or
/// `[swarm]` table, only the seed (and a twins search) varies.
pub fn fuzzed(base: &Scenario, seed: u64) -> Scenario {
    let mut s = match (&base.swarm, &base.fuzz) {
        (Some(r), _) => swarm::draw(base, r, seed),
        (None, Some(r)) => perturbed(base, r, seed),
        (None, None) => base.clone(),
    };
    if let Some(t) = s.twins.as_mut().filter(|t| t.search_steps.is_some()) {
        t.split = t.enumerated(s.nodes, seed);
        t.search_steps = None;
        s.description = format!(
            "{} [twins schedule {seed} of {}: {:?}]",
            s.description,
            base.twins.as_ref().map_or(0, |b| b.space(s.nodes)),
            t.split
        );
    }
    s
}

/// `base` with the network, clocks and faults its `[fuzz]` table sets
/// drawn for `seed`, and its `reach_seq` owed what the draw leaves.
fn perturbed(base: &Scenario, r: &Ranges, seed: u64) -> Scenario {
    let mut s = base.clone();
    draws::network(&mut stream(seed, Stream::Network), r, &mut s, None);
    draws::clocks(&mut stream(seed, Stream::Clocks), r, &mut s, None);
    draws::jitter(&mut stream(seed, Stream::Jitter), r, &mut s);
    let window = s.duration_ms * 7 / 10;
    draws::crashes(&mut stream(seed, Stream::Crashes), r, &mut s, None, window);
    owe_reach_seq(&mut s);
    s.fuzz = None;
    s.description = format!("{} [fuzz seed {seed} of {}]", base.description, base.name);
    s
}

/// Lowers a `reach_seq` the draw put out of reach. Written for the base
/// scenario, it may not survive added loss or a moved timeline: with no
/// voter to spare (the best-connected group holds exactly the close
/// threshold), one lost stage-2 proposal among its h voters fails the
/// round for all, so a round closes with probability (1 - loss)^(h(h-1)).
/// A node that is judged at `by_ms` (up and hearing a quorum) catches up
/// to the closes; it is owed their expected number less four standard
/// deviations, never more than the scenario asked. Statistics of the
/// checker, not of the protocol: floating point decides nothing a node does.
fn owe_reach_seq(s: &mut Scenario) {
    let uptime = s.uptime();
    let rt = s.consensus.roundtime_ms.max(1);
    let keep = 1.0 - s.network.loss_pct / 100.0;
    for e in s.expectations.iter_mut() {
        let Expectation::ReachSeq { seq, by_ms, .. } = e else {
            continue;
        };
        let (mut mean, mut var) = (0.0f64, 0.0f64);
        // Round k runs from k * rt and closes at its end; round 0 is the
        // start-up round.
        for k in 1..(*by_ms / rt) {
            let h = uptime.best_voters(k * rt + rt / 2);
            let q = match h.cmp(&uptime.needed()) {
                std::cmp::Ordering::Less => 0.0,
                std::cmp::Ordering::Equal => keep.powi((h * (h - 1)) as i32),
                std::cmp::Ordering::Greater => 1.0,
            };
            mean += q;
            var += q * (1.0 - q);
        }
        let owed = (mean - 4.0 * var.sqrt()).floor().max(0.0) as u64;
        *seq = (*seq).min(owed);
    }
}

/// Parses `A..B` (B exclusive) or a single seed.
pub fn parse_seeds(text: &str) -> Result<std::ops::Range<u64>, String> {
    let err = || format!("expected seeds as A..B or N, got {text:?}");
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| err())?, b.parse().map_err(|_| err())?);
            if b <= a {
                return Err(format!("empty seed range {text}"));
            }
            Ok(a..b)
        }
        None => {
            let a: u64 = text.parse().map_err(|_| err())?;
            Ok(a..a + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse() {
        assert_eq!(parse_seeds("3..7"), Ok(3..7));
        assert_eq!(parse_seeds("5"), Ok(5..6));
        assert!(parse_seeds("7..3").is_err());
        assert!(parse_seeds("x").is_err());
    }
}
