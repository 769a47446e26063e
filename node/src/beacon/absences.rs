//! Who keeps failing to reveal: per-node counts over the last ledgers, for
//! operators. A withholder is never convicted (it may just have been
//! offline), but one that is absent far more often than the others is
//! worth a look.

use super::Outcome;
use crate::crypto::PubKey;
use std::collections::{BTreeMap, VecDeque};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AbsenceError {
    #[error("ledger {seq} recorded after ledger {last}: outcomes go in ledger order")]
    OutOfOrder { seq: u64, last: u64 },
}

/// Absences and convictions per node over the last `window` ledgers, by
/// ledger seq: a ledger `seq` counts while `seq + window > latest`.
/// Ledgers with no outcome count for no one. Everything is a function of
/// the outcomes recorded, so every node that recorded the same ledgers
/// shows the same counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Absences {
    window: u64,
    /// Per recorded ledger, in seq order: the nodes absent and convicted.
    recent: VecDeque<(u64, Vec<PubKey>, Vec<PubKey>)>,
    absent: BTreeMap<PubKey, u64>,
    fraud: BTreeMap<PubKey, u64>,
}

impl Absences {
    /// A window of `window` ledgers (at least one).
    pub fn new(window: u64) -> Absences {
        Absences {
            window: window.max(1),
            recent: VecDeque::new(),
            absent: BTreeMap::new(),
            fraud: BTreeMap::new(),
        }
    }

    /// Records the outcome carried by ledger `seq`, and forgets ledgers
    /// that fell out of the window. Seqs must rise: a ledger recorded
    /// twice (say, replayed after a restart) would count twice.
    pub fn record(&mut self, seq: u64, outcome: &Outcome) -> Result<(), AbsenceError> {
        if let Some(&(last, _, _)) = self.recent.back() {
            if seq <= last {
                return Err(AbsenceError::OutOfOrder { seq, last });
            }
        }
        let fraud: Vec<PubKey> = outcome.fraud.iter().map(|p| p.accused()).collect();
        add(&mut self.absent, &outcome.absent);
        add(&mut self.fraud, &fraud);
        self.recent.push_back((seq, outcome.absent.clone(), fraud));
        while let Some((old, _, _)) = self.recent.front() {
            if old.saturating_add(self.window) > seq {
                break;
            }
            if let Some((_, absent, fraud)) = self.recent.pop_front() {
                remove(&mut self.absent, &absent);
                remove(&mut self.fraud, &fraud);
            }
        }
        Ok(())
    }

    /// Ledgers in the window where `node` was absent.
    pub fn absent(&self, node: &PubKey) -> u64 {
        self.absent.get(node).copied().unwrap_or(0)
    }

    /// Ledgers in the window where `node` was convicted of fraud.
    pub fn fraud(&self, node: &PubKey) -> u64 {
        self.fraud.get(node).copied().unwrap_or(0)
    }

    /// Nodes absent at least `at_least` times in the window (and at least
    /// once), most absent first, ties by key.
    pub fn withholders(&self, at_least: u64) -> Vec<(PubKey, u64)> {
        let mut v: Vec<(PubKey, u64)> = self
            .absent
            .iter()
            .filter(|(_, &n)| n >= at_least.max(1))
            .map(|(k, &n)| (*k, n))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// Ledgers with an outcome in the window.
    /// Every node convicted in the window, most often first.
    pub fn convicted(&self) -> Vec<(PubKey, u64)> {
        let mut v: Vec<(PubKey, u64)> = self.fraud.iter().map(|(k, &n)| (*k, n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    pub fn recorded(&self) -> usize {
        self.recent.len()
    }
}

fn add(counts: &mut BTreeMap<PubKey, u64>, nodes: &[PubKey]) {
    for k in nodes {
        *counts.entry(*k).or_default() += 1;
    }
}

fn remove(counts: &mut BTreeMap<PubKey, u64>, nodes: &[PubKey]) {
    for k in nodes {
        if let Some(n) = counts.get_mut(k) {
            *n -= 1;
            if *n == 0 {
                counts.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Hash;

    fn outcome(absent: &[u8]) -> Outcome {
        Outcome {
            value: Hash::ZERO,
            revealed: vec![],
            absent: absent.iter().map(|&b| PubKey([b; 32])).collect(),
            fraud: vec![],
        }
    }

    #[test]
    fn counts_over_a_sliding_window() {
        let (a, b) = (PubKey([1; 32]), PubKey([2; 32]));
        let mut w = Absences::new(3);
        w.record(10, &outcome(&[1])).unwrap();
        w.record(11, &outcome(&[1, 2])).unwrap();
        w.record(12, &outcome(&[1])).unwrap();
        assert_eq!((w.absent(&a), w.absent(&b)), (3, 1));
        assert_eq!(w.withholders(2), vec![(a, 3)]);
        assert_eq!(w.withholders(0), vec![(a, 3), (b, 1)]);
        // Ledger 10 leaves the window.
        w.record(13, &outcome(&[])).unwrap();
        assert_eq!((w.absent(&a), w.absent(&b)), (2, 1));
        assert_eq!(w.recorded(), 3);
        // A gap of seqs moves the window past everything before it.
        w.record(20, &outcome(&[2])).unwrap();
        assert_eq!((w.absent(&a), w.absent(&b)), (0, 1));
        assert_eq!(w.recorded(), 1);
        assert_eq!(w.withholders(0), vec![(b, 1)]);
        assert_eq!(w.fraud(&a), 0);
    }

    #[test]
    fn convictions_count_like_absences() {
        use crate::beacon::{FraudProof, SignedCommit};
        use crate::crypto::Keypair;
        use crate::ledger::LedgerId;
        let k = Keypair::from_seed([7; 32]);
        let lcl = LedgerId {
            seq: 4,
            hash: Hash([4; 32]),
        };
        let proof = FraudProof::double_commit(
            SignedCommit::sign(&k, lcl, Hash([1; 32])),
            SignedCommit::sign(&k, lcl, Hash([2; 32])),
        );
        let mut w = Absences::new(2);
        let mut convicting = outcome(&[]);
        convicting.fraud = vec![proof];
        w.record(1, &convicting).unwrap();
        w.record(2, &convicting).unwrap();
        assert_eq!(w.convicted(), vec![(k.public(), 2)]);
        assert_eq!(w.fraud(&k.public()), 2);
        // Both leave the window, one at a time.
        w.record(3, &outcome(&[])).unwrap();
        assert_eq!(w.convicted(), vec![(k.public(), 1)]);
        w.record(4, &outcome(&[])).unwrap();
        assert_eq!(w.convicted(), vec![]);
    }

    #[test]
    fn seqs_must_rise() {
        let mut w = Absences::new(3);
        w.record(5, &outcome(&[1])).unwrap();
        assert_eq!(
            w.record(5, &outcome(&[1])),
            Err(AbsenceError::OutOfOrder { seq: 5, last: 5 })
        );
        assert_eq!(w.absent(&PubKey([1; 32])), 1);
    }
}
