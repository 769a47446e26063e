//! Shrinking a failing run: delta debugging over the scenario
//! until no single step keeps the failure. A step is kept when the run,
//! with the same seed, still shows a violation of the same [`Kind`]. Deterministic: the same
//! scenario and seed always shrink to the same file. Bounded by a number
//! of runs rather than by time, so that stays true on any machine.
//!
//! The steps, roughly from the biggest cut to the smallest: the liveness
//! expectations (for a safety violation) and the run's tail after it;
//! timeline events, halves first (ddmin); twins; byzantine nodes made
//! honest; byzantine user tables; the highest-numbered node; message loss,
//! duplication and reordering; latency narrowed to its minimum; link
//! overrides; clock offsets and drift; workloads, then fewer users and
//! sparser inputs; `[[node]]` entries left at the defaults. Until a whole
//! round of steps keeps nothing.

use crate::check::violation::{Kind, Violation};
use crate::runner::run;
use crate::scenario::latency::Latency;
use crate::scenario::{Expectation, Fault, Role, Scenario};

pub struct Shrunk {
    pub scenario: Scenario,
    /// The violation the shrunk run shows (same kind as the original's
    /// first).
    pub violation: Violation,
    /// Runs made, the original included.
    pub runs: u64,
    /// Whether the run budget ended the search before a fixpoint.
    pub exhausted: bool,
}

/// Shrinks `start` (a concrete scenario: no `[fuzz]` or `[swarm]` table)
/// while its run with `seed` keeps a violation of the kind of its first
/// one, making at most `max_runs` runs. `None` if the run passes.
pub fn shrink(start: &Scenario, seed: u64, max_runs: u64) -> Option<Shrunk> {
    let first = run(start, seed).violations.into_iter().next()?;
    let mut s = Search {
        target: first.kind,
        seed,
        best: start.clone(),
        violation: first,
        runs: 1,
        max_runs,
    };
    loop {
        let before = s.fingerprint();
        if s.violation.at_ms.is_some() {
            s.try_each(|b| {
                let mut c = b.clone();
                c.expectations.clear();
                vec![c]
            });
        }
        s.cut_tail();
        s.drop_events();
        s.try_each(|b| {
            let mut c = b.clone();
            c.twins = None;
            if b.twins.is_some() {
                vec![c]
            } else {
                vec![]
            }
        });
        s.try_each(make_honest);
        s.try_each(|b| removals(b, |c| &mut c.byzantine_users));
        s.try_each(drop_last_node);
        s.try_each(calm_network);
        s.try_each(|b| removals(b, |c| &mut c.links));
        s.try_each(still_clocks);
        s.try_each(|b| removals(b, |c| &mut c.workload));
        s.try_each(lighter_workload);
        s.try_each(|b| {
            // `[[node]]` entries that say only what the defaults say.
            let mut c = b.clone();
            c.node_settings.retain(|n| {
                n.role != Role::Honest || n.clock_offset_ms != 0 || n.clock_drift_ppm != 0
            });
            vec![c]
        });
        if s.fingerprint() == before || s.out_of_runs() {
            return Some(Shrunk {
                exhausted: s.out_of_runs(),
                scenario: s.best,
                violation: s.violation,
                runs: s.runs,
            });
        }
    }
}

struct Search {
    target: Kind,
    seed: u64,
    best: Scenario,
    violation: Violation,
    runs: u64,
    max_runs: u64,
}

impl Search {
    fn out_of_runs(&self) -> bool {
        self.runs >= self.max_runs
    }

    /// A fingerprint of the current best, to tell whether a round of
    /// steps kept anything.
    fn fingerprint(&self) -> String {
        fingerprint(&self.best)
    }

    /// Runs `c`; keeps it if it fails alike.
    fn attempt(&mut self, c: Scenario) -> bool {
        // A step that changes nothing would be kept for ever.
        if self.out_of_runs() || c.validate().is_err() || fingerprint(&c) == self.fingerprint() {
            return false;
        }
        self.runs += 1;
        let found = run(&c, self.seed)
            .violations
            .into_iter()
            .find(|v| v.kind == self.target);
        match found {
            Some(v) => {
                self.best = c;
                self.violation = v;
                true
            }
            None => false,
        }
    }

    /// Tries `step`'s candidates in order; after keeping one, asks the
    /// step again from the same position (a removal shifts what follows).
    fn try_each(&mut self, step: impl Fn(&Scenario) -> Vec<Scenario>) {
        let mut at = 0;
        loop {
            let candidates = step(&self.best);
            let Some(i) = (at..candidates.len()).find(|&i| {
                let c = candidates[i].clone();
                self.attempt(c)
            }) else {
                return;
            };
            at = i;
        }
    }

    /// Ends a safety failure's run two rounds after the violation, halving
    /// what is left after it while the failure stays.
    fn cut_tail(&mut self) {
        let Some(t) = self.violation.at_ms else {
            return;
        };
        let floor = t + 2 * self.best.consensus.roundtime_ms;
        while self.best.duration_ms > floor {
            let mut c = self.best.clone();
            c.duration_ms = floor + (self.best.duration_ms - floor) / 2;
            if c.duration_ms == self.best.duration_ms || !self.attempt(c) {
                return;
            }
        }
    }

    /// ddmin over the timeline: removes chunks of events, halves first.
    fn drop_events(&mut self) {
        let mut size = self.best.timeline.len().div_ceil(2);
        while size > 0 {
            let mut start = 0;
            while start < self.best.timeline.len() {
                let mut c = self.best.clone();
                let end = (start + size).min(c.timeline.len());
                c.timeline.drain(start..end);
                if !self.attempt(c) {
                    start += size;
                }
            }
            size /= 2;
        }
    }
}

fn fingerprint(s: &Scenario) -> String {
    toml::to_string(s).unwrap_or_default()
}

/// Each element of a list removed in turn.
fn removals<T>(b: &Scenario, list: impl Fn(&mut Scenario) -> &mut Vec<T>) -> Vec<Scenario> {
    let len = list(&mut b.clone()).len();
    (0..len)
        .map(|i| {
            let mut c = b.clone();
            list(&mut c).remove(i);
            c
        })
        .collect()
}

fn make_honest(b: &Scenario) -> Vec<Scenario> {
    (0..b.node_settings.len())
        .filter(|&i| b.node_settings[i].role != Role::Honest)
        .map(|i| {
            let mut c = b.clone();
            c.node_settings[i].role = Role::Honest;
            c
        })
        .collect()
}

/// The highest-numbered node removed, with everything that names it.
fn drop_last_node(b: &Scenario) -> Vec<Scenario> {
    if b.nodes <= 1 || b.twins.as_ref().is_some_and(|t| t.node + 1 >= b.nodes) {
        return vec![];
    }
    let gone = b.nodes - 1;
    let mut c = b.clone();
    c.nodes = gone;
    let keep = |v: &mut Vec<usize>| v.retain(|&i| i != gone);
    if let Some(u) = c.unl.as_mut() {
        keep(u);
    }
    c.node_settings.retain(|n| n.id != gone);
    c.links.retain(|l| l.from != gone && l.to != gone);
    c.workload.retain_mut(|w| {
        let named = !w.schedule.nodes.is_empty();
        keep(&mut w.schedule.nodes);
        !named || !w.schedule.nodes.is_empty()
    });
    c.byzantine_users.retain_mut(|g| {
        let named = !g.schedule.nodes.is_empty();
        keep(&mut g.schedule.nodes);
        !named || !g.schedule.nodes.is_empty()
    });
    if let Some(t) = c.twins.as_mut() {
        t.split.iter_mut().for_each(keep);
    }
    c.timeline.retain_mut(|e| match &mut e.fault {
        Fault::Partition { groups } => {
            groups.iter_mut().for_each(keep);
            groups.retain(|g| !g.is_empty());
            true
        }
        Fault::Block { from, to, .. } => {
            keep(from);
            keep(to);
            !from.is_empty() && !to.is_empty()
        }
        Fault::Mutate { node, to, .. } => {
            keep(to);
            *node != gone
        }
        Fault::Crash { node }
        | Fault::CrashMidWrite { node }
        | Fault::Restart { node }
        | Fault::Pause { node }
        | Fault::Resume { node }
        | Fault::Clock { node, .. } => *node != gone,
        Fault::Heal | Fault::Network(_) => true,
    });
    c.expectations.retain_mut(|e| match e {
        Expectation::ReachSeq { nodes, .. } => {
            let named = !nodes.is_empty();
            keep(nodes);
            !named || !nodes.is_empty()
        }
        Expectation::StateSynced { node, .. } => *node != gone,
        Expectation::Beacon {
            absent, convicted, ..
        } => {
            keep(absent);
            keep(convicted);
            true
        }
        _ => true,
    });
    vec![c]
}

/// Loss, duplication and reordering off, one at a time; then latency at
/// its minimum. Also inside `network` timeline events.
fn calm_network(b: &Scenario) -> Vec<Scenario> {
    let mut out = Vec::new();
    let mut each = |f: &dyn Fn(&mut crate::scenario::NetworkSettings) -> bool| {
        let mut c = b.clone();
        let mut changed = f(&mut c.network);
        for e in &mut c.timeline {
            if let Fault::Network(n) = &mut e.fault {
                changed |= f(n);
            }
        }
        if changed {
            out.push(c);
        }
    };
    each(&|n| std::mem::replace(&mut n.loss_pct, 0.0) != 0.0);
    each(&|n| std::mem::replace(&mut n.duplicate_pct, 0.0) != 0.0);
    each(&|n| std::mem::replace(&mut n.reorder_pct, 0.0) != 0.0);
    each(&|n| match n.latency_ms {
        Latency::Uniform { min, max } | Latency::Tail { min, max, .. } if max > min => {
            n.latency_ms = Latency::Fixed { ms: min };
            true
        }
        _ => false,
    });
    out
}

fn still_clocks(b: &Scenario) -> Vec<Scenario> {
    (0..b.node_settings.len())
        .filter(|&i| {
            let n = &b.node_settings[i];
            n.clock_offset_ms != 0 || n.clock_drift_ppm != 0
        })
        .map(|i| {
            let mut c = b.clone();
            c.node_settings[i].clock_offset_ms = 0;
            c.node_settings[i].clock_drift_ppm = 0;
            c
        })
        .collect()
}

/// One user per workload, then inputs half as often.
fn lighter_workload(b: &Scenario) -> Vec<Scenario> {
    let mut out = Vec::new();
    for i in 0..b.workload.len() {
        let w = &b.workload[i].schedule;
        if w.users != Some(1) {
            let mut c = b.clone();
            c.workload[i].schedule.users = Some(1);
            out.push(c);
        }
        if w.every_ms < b.duration_ms {
            let mut c = b.clone();
            c.workload[i].schedule.every_ms *= 2;
            out.push(c);
        }
    }
    out
}
