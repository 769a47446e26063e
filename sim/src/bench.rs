//! `hotpocket-sim bench`: simulated time per wall-clock time, and what a
//! node-round costs, on one core.
// It times the simulator against the wall clock, which nothing else may.
#![allow(clippy::disallowed_methods)]

use crate::runner::{run, Report};
use crate::scenario::{Scenario, ScenarioError};
use hotpocket_node::crypto::{KeyRing, Keypair};
use std::time::{Duration, Instant};

/// What to time.
pub struct Bench {
    pub scenario: Scenario,
    pub seconds: u64,
    /// Overrides the scenario's node count (users follow: one per node).
    pub nodes: Option<usize>,
    pub runs: usize,
    pub seed: u64,
}

/// The runs' figures.
pub struct Measured {
    pub scenario: Scenario,
    pub walls: Vec<Duration>,
    /// The first run's report (every run is the same seed, so the same).
    pub report: Report,
    /// Peak resident memory of the process, in KiB.
    pub peak_rss_kib: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("--seconds must be positive")]
    NoTime,
    #[error("--runs must be positive")]
    NoRuns,
    #[error("--nodes must be at least 1")]
    NoNodes,
    #[error("with --nodes: {0}")]
    Invalid(#[from] ScenarioError),
}

impl Bench {
    /// The scenario as timed: no faults, no checks that could cut it short.
    fn scenario(&self) -> Result<Scenario, BenchError> {
        let mut s = self.scenario.clone();
        if self.seconds == 0 {
            return Err(BenchError::NoTime);
        }
        if self.runs == 0 {
            return Err(BenchError::NoRuns);
        }
        s.duration_ms = self.seconds * 1000;
        s.expectations.clear();
        s.timeline.clear();
        if let Some(n) = self.nodes {
            if n == 0 {
                return Err(BenchError::NoNodes);
            }
            s.nodes = n;
        }
        for w in &mut s.workload {
            w.schedule.stop_ms = s.duration_ms;
        }
        // A scenario that names nodes --nodes leaves out is refused here,
        // not found as a panic in the run.
        s.validate()?;
        Ok(s)
    }

    pub fn time(&self) -> Result<Measured, BenchError> {
        let s = self.scenario()?;
        let mut walls = Vec::with_capacity(self.runs);
        let mut first = None;
        for _ in 0..self.runs {
            let started = Instant::now();
            let r = run(&s, self.seed);
            walls.push(started.elapsed());
            first.get_or_insert(r);
        }
        Ok(Measured {
            scenario: s,
            walls,
            report: first.expect("at least one run"),
            peak_rss_kib: peak_rss_kib(),
        })
    }
}

/// The process's peak resident set (Linux reports KiB).
fn peak_rss_kib() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss.max(0) as u64
}

impl Measured {
    pub fn rounds(&self) -> u64 {
        (self.scenario.duration_ms / self.scenario.consensus.roundtime_ms).max(1)
    }

    /// Sorted walls: min, median, max.
    pub fn spread(&self) -> (Duration, Duration, Duration) {
        let mut w = self.walls.clone();
        w.sort();
        (w[0], w[w.len() / 2], w[w.len() - 1])
    }

    pub fn speed(&self, wall: Duration) -> f64 {
        self.scenario.duration_ms as f64 / 1000.0 / wall.as_secs_f64()
    }

    /// The report, in lines.
    pub fn lines(&self) -> Vec<String> {
        let s = &self.scenario;
        let r = &self.report;
        let rounds = self.rounds();
        let n = s.nodes as u64;
        let (min, median, max) = self.spread();
        let node_rounds = (rounds * n) as f64;
        let checks: u64 = r.nodes.iter().map(|n| n.stats.signature_checks).sum();
        let ledgers = r.nodes.iter().map(|n| n.seq).min().unwrap_or(0);
        let v = r.verified;
        let (verify, sign) = crypto_costs();
        let crypto = verify * v.misses as f64 + sign * v.signed as f64;
        vec![
            format!(
                "scenario {} ({} nodes, roundtime {} ms), seed {}, {} run(s) of {} simulated s",
                s.name,
                s.nodes,
                s.consensus.roundtime_ms,
                r.seed,
                self.walls.len(),
                s.duration_ms / 1000
            ),
            format!(
                "wall min {:.3} s / median {:.3} s / max {:.3} s: {:.0}x / {:.0}x / {:.0}x real time",
                min.as_secs_f64(),
                median.as_secs_f64(),
                max.as_secs_f64(),
                self.speed(max),
                self.speed(median),
                self.speed(min),
            ),
            format!(
                "per round {:.2} ms, per node-round {:.0} us (median); peak memory {:.1} MiB",
                median.as_secs_f64() * 1e3 / rounds as f64,
                median.as_secs_f64() * 1e6 / node_rounds,
                self.peak_rss_kib as f64 / 1024.0
            ),
            format!("ledgers closed: {ledgers} of {rounds} rounds; passed: {}", r.passed),
            format!(
                "messages: {} sent ({:.0} a round), {} delivered",
                r.net.sent,
                r.net.sent as f64 / rounds as f64,
                r.net.delivered
            ),
            format!(
                "signatures: {} made; {} checks by nodes ({:.1} a node-round); with the beacon checker's, {} answered from the shared memory, {} checked in full",
                v.signed,
                checks,
                checks as f64 / node_rounds,
                v.hits,
                v.misses
            ),
            format!(
                "proposal frames: {} taken from the shared memory of sent frames, {} decoded",
                r.frames.hits, r.frames.misses
            ),
            format!(
                "one ed25519 check {:.1} us, one signature {:.1} us: the run's signing and full checks cost about {:.0} ms, {:.0}% of the median wall",
                verify * 1e6,
                sign * 1e6,
                crypto * 1e3,
                100.0 * crypto / median.as_secs_f64()
            ),
        ]
    }
}

/// What one check and one signature cost here, the way a node makes them
/// (UNL keys decompressed once; about a stage-0 proposal's bytes).
fn crypto_costs() -> (f64, f64) {
    let k = Keypair::from_seed([3; 32]);
    let ring = KeyRing::new(&[k.public()]);
    let msg = [7u8; 240];
    let sig = k.sign("bench", &msg);
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        let ok = ring.verify(&k.public(), "bench", &msg, &sig).is_ok();
        std::hint::black_box(ok);
    }
    let verify = t.elapsed().as_secs_f64() / n as f64;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(k.sign("bench", &msg));
    }
    (verify, t.elapsed().as_secs_f64() / n as f64)
}
