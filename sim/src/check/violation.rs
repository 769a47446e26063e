//! What a run found wrong, typed: a campaign counts failures by kind, the
//! shrinker keeps a step only while the same kind recurs, and the exit code
//! says the class.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One thing a run found wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Simulated time it happened at; none for what is judged at the end.
    pub at_ms: Option<u64>,
    /// The node at fault or the one that saw it, when there is one.
    pub node: Option<usize>,
    pub kind: Kind,
    pub detail: String,
}

/// Which rule a violation broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Two honest nodes finalised different ledgers at one seq.
    Fork,
    /// A close that does not extend the node's chain, or misnames its hash.
    Chain,
    /// A rollback of a final ledger, or of a ledger that was not the lcl.
    Rollback,
    /// An honest node signed one stage twice.
    Equivocation,
    /// Honest stage-3 votes on top of two ledgers at one seq, each within
    /// reach of a close threshold.
    Vote,
    /// Something was acted on before it was on disk, or lost from it.
    Durability,
    /// Inputs and outputs: taken in a wrong name, lost, misdelivered.
    Outputs,
    /// A close certified a run against what the runs were.
    Verdict,
    /// A run differed from the certified one, or was not repaired in time.
    Divergence,
    Beacon,
    Npl,
    /// A session held with a machine other than the key it names.
    Session,
    /// A node misjudged a user's message (refused an honest one, took a
    /// forged one).
    Users,
    /// The contract host's own invariants (state, run order).
    Contract,
    /// A scenario expectation about what must (not) happen, other than
    /// progress: no progress while partitioned, lag, state sync size.
    Expectation,
    /// Progress a correct protocol makes under the scenario's timeline did
    /// not happen.
    Liveness,
    /// A node stopped with an error or could not start.
    Stopped,
    /// Protocol code panicked.
    Panic,
}

/// TigerBeetle's three: a wrong answer, no answer, or a dead process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Safety,
    Crash,
    Liveness,
}

impl Kind {
    pub fn class(self) -> Class {
        match self {
            Kind::Liveness => Class::Liveness,
            Kind::Stopped | Kind::Panic => Class::Crash,
            _ => Class::Safety,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Fork => "fork",
            Kind::Chain => "chain",
            Kind::Rollback => "rollback",
            Kind::Equivocation => "equivocation",
            Kind::Vote => "vote",
            Kind::Durability => "durability",
            Kind::Outputs => "outputs",
            Kind::Verdict => "verdict",
            Kind::Divergence => "divergence",
            Kind::Beacon => "beacon",
            Kind::Npl => "npl",
            Kind::Session => "session",
            Kind::Users => "users",
            Kind::Contract => "contract",
            Kind::Expectation => "expectation",
            Kind::Liveness => "liveness",
            Kind::Stopped => "stopped",
            Kind::Panic => "panic",
        }
    }
}

impl Class {
    /// The process exit code of a run or campaign that failed this way (2
    /// is taken by usage and I/O errors).
    pub fn exit_code(self) -> i32 {
        match self {
            Class::Safety => 1,
            Class::Liveness => 3,
            Class::Crash => 4,
        }
    }

    /// The class a failed run or campaign reports: the gravest present.
    pub fn worst<'a>(violations: impl IntoIterator<Item = &'a Violation>) -> Option<Class> {
        violations.into_iter().map(|v| v.kind.class()).min()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Violation {
    /// Found at simulated time `at_ms`.
    pub fn at(at_ms: u64, kind: Kind, detail: impl Into<String>) -> Violation {
        Violation {
            at_ms: Some(at_ms),
            node: None,
            kind,
            detail: detail.into(),
        }
    }

    /// Judged at the end of the run.
    pub fn at_end(kind: Kind, detail: impl Into<String>) -> Violation {
        Violation {
            at_ms: None,
            node: None,
            kind,
            detail: detail.into(),
        }
    }

    pub fn by(mut self, node: usize) -> Violation {
        self.node = Some(node);
        self
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = self.at_ms {
            write!(f, "t={t}ms: ")?;
        }
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gravest_class_wins_and_has_its_own_exit_code() {
        let live = Violation::at_end(Kind::Liveness, "slow");
        let panic = Violation::at_end(Kind::Panic, "boom");
        let fork = Violation::at(5, Kind::Fork, "two ledgers").by(1);
        assert_eq!(Class::worst([&live]), Some(Class::Liveness));
        assert_eq!(Class::worst([&live, &panic]), Some(Class::Crash));
        assert_eq!(Class::worst([&live, &fork, &panic]), Some(Class::Safety));
        assert_eq!(Class::worst([]), None);
        let codes = [Class::Safety, Class::Liveness, Class::Crash].map(Class::exit_code);
        assert_eq!(codes, [1, 3, 4]);
        assert_eq!(fork.to_string(), "t=5ms: fork: two ledgers");
    }
}
