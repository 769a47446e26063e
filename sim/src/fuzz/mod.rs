//! Fuzzing: one seed picks both the run's randomness and, within the ranges
//! a scenario's `[fuzz]` table declares, its fault parameters. The concrete
//! scenario a seed produced can be written out and re-run with `run`.

pub mod swarm;

pub use crate::scenario::FuzzRanges;
use crate::scenario::{Expectation, Fault, Latency, NodeSettings, Role, Scenario, TimelineEvent};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

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

/// The concrete scenario fuzz seed `seed` runs. Without a `[fuzz]` table,
/// only the seed varies.
pub fn fuzzed(base: &Scenario, seed: u64) -> Scenario {
    let mut s = match &base.swarm {
        Some(r) => crate::fuzz::swarm::draw(base, r, seed),
        None => base.clone(),
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
    let Some(f) = base.fuzz.clone() else {
        return s;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6675_7a7a);
    let n = &mut s.network;
    if let Some(r) = f.loss_pct {
        n.loss_pct = pick_f(&mut rng, r);
    }
    if let Some(r) = f.duplicate_pct {
        n.duplicate_pct = pick_f(&mut rng, r);
    }
    if let Some(r) = f.reorder_pct {
        n.reorder_pct = pick_f(&mut rng, r);
    }
    if f.latency_min_ms.is_some() || f.latency_max_ms.is_some() {
        let min = f.latency_min_ms.map_or(5, |r| pick_u(&mut rng, r));
        let max = f
            .latency_max_ms
            .map_or(min + 25, |r| pick_u(&mut rng, r))
            .max(min);
        n.latency_ms = Latency::Uniform { min, max };
    }
    if f.clock_offset_ms.is_some() || f.clock_drift_ppm.is_some() {
        for id in 0..s.nodes {
            let offset = f.clock_offset_ms.map_or(0, |r| pick_i(&mut rng, r));
            let drift = f.clock_drift_ppm.map_or(0, |r| pick_i(&mut rng, r));
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
    if let Some(j) = f.timeline_jitter_ms {
        // Each event moves by up to ±j, but never before the one it followed,
        // so a restart never comes before its crash.
        let mut floor = 0;
        for ev in s.timeline.iter_mut() {
            let delta = pick_i(&mut rng, [-(j as i64), j as i64]);
            ev.at_ms = (ev.at_ms as i64 + delta).max(floor as i64) as u64;
            floor = ev.at_ms;
        }
    }
    if let Some(r) = f.random_crashes {
        // Not a node the timeline crashes already: a random restart would
        // cut its planned absence short.
        let planned: Vec<usize> = s
            .timeline
            .iter()
            .filter_map(|e| match e.fault {
                Fault::Crash { node } | Fault::CrashMidWrite { node } => Some(node),
                _ => None,
            })
            .collect();
        let honest: Vec<usize> = s
            .honest()
            .into_iter()
            .filter(|n| !planned.contains(n))
            .filter(|n| f.random_crash_nodes.as_ref().is_none_or(|c| c.contains(n)))
            .collect();
        let crashes = if honest.is_empty() {
            0
        } else {
            pick_u(&mut rng, r)
        };
        let window = s.duration_ms * 7 / 10;
        add_crashes(&mut s, &mut rng, crashes, &honest, window);
    }
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

/// Adds `count` crash-and-restart pairs of nodes from `candidates`, each
/// at a random time before `window_ms` and down 0.2 to 5 s; half of them
/// in the middle of the node's next ledger write.
pub(crate) fn add_crashes(
    s: &mut Scenario,
    rng: &mut ChaCha8Rng,
    count: u64,
    candidates: &[usize],
    window_ms: u64,
) {
    if candidates.is_empty() {
        return;
    }
    for _ in 0..count {
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
