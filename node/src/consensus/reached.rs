//! The protocol's rare paths, reported as they are taken
//! (`Event::Reached`). The rules that decide whether a fork can happen
//! (rolling back, switching to a proven ledger, refusing history) run
//! least: a campaign counts the runs that reached each path, and can
//! require some, so that a fuzzer which never takes them says so instead
//! of passing.

use serde::Serialize;

/// Why a rollback was refused (`Chain::roll_back`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kept {
    /// Genesis, or a final ledger.
    Final,
    /// The ledger the node restarted with: its vote on it was not kept.
    Restored,
    /// The node voted on it at stage 3, and no proof shows another.
    Voted,
}

/// A rare path, as `Event::Reached` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum RarePath {
    /// A ledger this node closed by the UNL's votes turned out not to be
    /// the one the UNL built on.
    LoneClose,
    /// The lcl was dropped for a verified threshold on another ledger at
    /// its seq.
    RollbackProven,
    /// The lcl was dropped without such a proof: the UNL did not build on
    /// it, and this node had not voted on it.
    RollbackUnproven,
    /// The lcl was kept although the UNL did not build on it.
    RollbackRefused(Kept),
    /// After a proven rollback, another ledger was adopted from history
    /// at the seq that was dropped.
    SwitchedToProven,
    /// Ledgers were adopted from a peer's history.
    HistoryAdopted,
    /// A history answer's last ledger was left out: more peers are on
    /// another ledger at its seq.
    HistoryTipOutvoted,
    /// A peer's history failed verification (`SyncError::kind`).
    HistoryRefused(&'static str),
    /// Ledgers adopted from history hold a beacon fraud conviction.
    HistoryAcrossFraud,
    /// A state sync started while one was forced by our run's state
    /// differing from the certified one.
    MismatchSync,
    /// The contract state could not be rolled back with the chain.
    ContractRollbackFailed,
}

impl RarePath {
    /// The path's name in reports and in `fuzz --require`.
    pub fn name(&self) -> String {
        match self {
            RarePath::LoneClose => "lone-close".into(),
            RarePath::RollbackProven => "rollback-proven".into(),
            RarePath::RollbackUnproven => "rollback-unproven".into(),
            RarePath::RollbackRefused(Kept::Final) => "rollback-refused-final".into(),
            RarePath::RollbackRefused(Kept::Restored) => "rollback-refused-restored".into(),
            RarePath::RollbackRefused(Kept::Voted) => "rollback-refused-voted".into(),
            RarePath::SwitchedToProven => "switched-to-proven".into(),
            RarePath::HistoryAdopted => "history-adopted".into(),
            RarePath::HistoryTipOutvoted => "history-tip-outvoted".into(),
            RarePath::HistoryRefused(kind) => format!("history-refused-{kind}"),
            RarePath::HistoryAcrossFraud => "history-across-fraud".into(),
            RarePath::MismatchSync => "mismatch-sync".into(),
            RarePath::ContractRollbackFailed => "contract-rollback-failed".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_kebab_case() {
        let all = [
            RarePath::LoneClose,
            RarePath::RollbackProven,
            RarePath::RollbackUnproven,
            RarePath::RollbackRefused(Kept::Final),
            RarePath::RollbackRefused(Kept::Restored),
            RarePath::RollbackRefused(Kept::Voted),
            RarePath::HistoryTipOutvoted,
            RarePath::SwitchedToProven,
            RarePath::HistoryAdopted,
            RarePath::HistoryRefused("proof-signature"),
            RarePath::HistoryAcrossFraud,
            RarePath::MismatchSync,
            RarePath::ContractRollbackFailed,
        ];
        let names: std::collections::BTreeSet<String> = all.iter().map(RarePath::name).collect();
        assert_eq!(names.len(), all.len());
        for n in names {
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{n}"
            );
        }
    }
}
