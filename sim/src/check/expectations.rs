//! The scenario's expectations, judged at the end of a run: each only
//! where the timeline lets a correct protocol meet it.

use crate::check::violation::{Kind, Violation};
use crate::check::Checker;
use crate::scenario::{Expectation, Uptime};

impl Checker {
    /// Judges the scenario's expectations at the end of a run that lasted
    /// until `end_ms`. `steady`: honest nodes that never crashed, whose
    /// users' inputs must all be answered when a scenario expects it.
    /// Progress is expected only of nodes that `uptime` says could make it
    /// (up, and hearing a quorum) at the time it is judged.
    pub fn check_expectations(&mut self, expectations: &[Expectation], judged: &Judged) {
        let Judged {
            honest,
            steady,
            uptime,
            end_ms,
        } = judged;
        let end_ms = *end_ms;
        let live = |detail: String| Violation::at_end(Kind::Liveness, detail);
        let expected = |detail: String| Violation::at_end(Kind::Expectation, detail);
        let mut found: Vec<Violation> = Vec::new();
        for e in expectations {
            match e {
                Expectation::AllAnswered {
                    sent_by_ms,
                    sent_from_ms,
                } => {
                    let able: Vec<usize> = (steady.iter().copied())
                        .filter(|&n| uptime.can_progress(n, end_ms))
                        .collect();
                    let mut unanswered = Vec::new();
                    let window = *sent_from_ms..=*sent_by_ms;
                    let owed = |sent_ms| uptime.could_land(sent_ms);
                    (self.outputs).check_all_answered(&able, window, owed, &mut unanswered);
                    found.extend(unanswered.into_iter().map(live));
                }
                Expectation::Signatures { min } => match self.outputs.fewest_signatures {
                    None if uptime.quorum(end_ms) => {
                        found.push(live("no multisig output was delivered".into()))
                    }
                    Some(n) if n < *min => found.push(Violation::at_end(
                        Kind::Outputs,
                        format!("a delivered multisig output had {n} signatures, expected at least {min}"),
                    )),
                    _ => {}
                },
                Expectation::NoneWithheld => {
                    for &n in honest {
                        if let Some(w) = self.withheld.get(&n) {
                            found.push(Violation::at_end(
                                Kind::Divergence,
                                format!("node {n} withheld the outputs of {w} runs: its copy was not certified"),
                            ).by(n));
                        }
                    }
                }
                Expectation::Diverged => {
                    if !honest.iter().any(|n| self.withheld.contains_key(n)) {
                        found.push(expected(
                            "expected an honest copy to diverge and withhold its outputs; none did"
                                .into(),
                        ));
                    }
                }
                Expectation::StateSynced { node, max_bytes } => {
                    match self.state_synced.get(node) {
                        None if uptime.can_progress(*node, end_ms) => found.push(
                            live(format!("node {node} never installed a fetched state")).by(*node),
                        ),
                        Some((n, bytes)) if bytes > max_bytes => found.push(expected(format!(
                            "node {node} fetched {bytes} bytes of state in {n} syncs, more than {max_bytes}"
                        )).by(*node)),
                        _ => {}
                    }
                }
                Expectation::ReachSeq { seq, by_ms, nodes } => {
                    let nodes = if nodes.is_empty() { honest } else { nodes };
                    for &n in nodes.iter().filter(|&&n| uptime.can_progress(n, *by_ms)) {
                        let got = self.seq_at(n, *by_ms);
                        if got < *seq {
                            found.push(live(format!(
                                "node {n} reached seq {got} by {by_ms}ms, expected {seq}"
                            )).by(n));
                        }
                    }
                }
                Expectation::Progress { from_ms, ledgers } => {
                    for &n in honest.iter().filter(|&&n| uptime.can_progress(n, end_ms)) {
                        let (from, to) = (self.seq_at(n, *from_ms), self.seq_at(n, u64::MAX));
                        if to < from + ledgers {
                            found.push(live(format!(
                                "node {n} went from seq {from} at {from_ms}ms to {to}, expected {ledgers} more"
                            )).by(n));
                        }
                    }
                }
                Expectation::NoProgress { from_ms, to_ms } => {
                    for &n in honest {
                        let closes = self.progress.get(&n).map_or(0, |p| {
                            p.windows(2)
                                .filter(|w| {
                                    w[1].0 > *from_ms && w[1].0 <= *to_ms && w[1].1 > w[0].1
                                })
                                .count()
                        });
                        if closes > 0 {
                            found.push(expected(format!(
                                "expected no progress in {from_ms}..{to_ms}ms, node {n} closed {closes} ledgers"
                            )).by(n));
                        }
                    }
                }
                Expectation::Beacon {
                    absent,
                    convicted,
                    min_random_pct,
                } => {
                    // Random outcomes need a quorum to close ledgers.
                    let min_random_pct = Some(*min_random_pct).filter(|_| uptime.quorum(end_ms));
                    found.extend(self.beacon.expect(absent, convicted, min_random_pct));
                }
                Expectation::MaxLag { ledgers } => {
                    let seqs: Vec<u64> = honest
                        .iter()
                        .filter(|&&n| uptime.can_progress(n, end_ms))
                        .map(|n| self.lcl.get(n).map_or(0, |l| l.seq))
                        .collect();
                    let (lo, hi) = (seqs.iter().min(), seqs.iter().max());
                    if let (Some(lo), Some(hi)) = (lo, hi) {
                        if hi - lo > *ledgers {
                            found.push(expected(format!(
                                "at the end honest nodes span seqs {lo}..{hi}, more than {ledgers} apart"
                            )));
                        }
                    }
                }
            }
        }
        self.violations.extend(found);
    }
}

/// What the end-of-run expectations are judged against.
pub struct Judged {
    pub honest: Vec<usize>,
    pub steady: Vec<usize>,
    pub uptime: Uptime,
    pub end_ms: u64,
}
