//! What the node takes in ([`Input`]) and gives out ([`Action`], with the
//! typed [`Event`]s and [`Stats`] its observers see).

use super::{ConfigError, Job, RarePath, VoteStatus};
use crate::contract::{RunOutcome, RunReport, RunResult, StateNode};
use crate::crypto::{Hash, PubKey, Sig};
use crate::ledger::{ChainError, Ledger, LedgerId, LedgerRecord};
use crate::npl::NplStats;
use crate::sync::state_transfer::{FetchStats, StateResponse};
use serde::Serialize;
use std::sync::Arc;

/// An event fed to the node by its driver.
#[derive(Clone, Debug)]
pub enum Input {
    /// Time has passed; the driver sends this when `next_deadline` is reached.
    Tick,
    /// A frame from an authenticated peer connection.
    Peer { from: PubKey, bytes: Vec<u8> },
    /// An input body submitted by a user connected to this node.
    Submit(Vec<u8>),
    /// The contract finished running ledger `seq`, whose hash was `hash`.
    Executed {
        seq: u64,
        hash: Hash,
        report: RunReport,
    },
    /// The contract state's tree, read for `Job::ReadState { id }`.
    LocalState { id: u64, tree: StateNode },
    /// The contract host finished `Job::InstallState` for ledger `seq`.
    StateInstalled { seq: u64, error: Option<String> },
    /// The contract host's answer to `Job::ServeState`, for peer `to`.
    StateServed { to: PubKey, resp: StateResponse },
    /// `Job::Rollback { to }` could not return the contract state to
    /// what running `seq` left: it is still what a later run left. The
    /// runs queued for the host were dropped.
    RollbackFailed { seq: u64, error: String },
    /// The contract started running ledger `seq` (its session is open).
    RunStarted { seq: u64 },
    /// The contract running ledger `seq` wrote this to its node party line.
    FromContract { seq: u64, bytes: Vec<u8> },
    /// The store's answer to `Action::ReadStored`, for peer `to`: the
    /// ledgers from the asked seq on (none if it could not read them).
    Stored {
        to: PubKey,
        records: Vec<LedgerRecord>,
        want: Wanted,
    },
}

/// What a peer asked for that only the store holds: older ledgers than
/// the node keeps in memory, or input bodies of one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// The ledgers read (a history request).
    History,
    /// These input bodies, from the ledger read (a body request).
    Bodies(Vec<Hash>),
}

/// Something the driver must do, in order.
#[derive(Clone, Debug)]
pub enum Action {
    Send {
        to: PubKey,
        bytes: Vec<u8>,
    },
    /// Send to every other UNL member.
    Broadcast {
        bytes: Vec<u8>,
    },
    /// Write a ledger, or write again one stored without some input
    /// bodies; it becomes durable at the next `Sync`.
    Persist(Arc<LedgerRecord>),
    /// Durability point: everything persisted before must be on disk.
    Sync,
    /// Read up to `count` stored ledgers from `from_seq` on (one frame's
    /// worth at most), older than those the node keeps in memory, and hand
    /// them back as `Input::Stored` for peer `to`, before any other input.
    ReadStored {
        to: PubKey,
        from_seq: u64,
        count: u64,
        want: Wanted,
    },
    /// Drop every stored ledger after `keep_through` (the node rolled its
    /// lcl back); durable by the next `Sync` at the latest.
    Truncate {
        keep_through: u64,
    },
    /// Work for the contract host, queued in order.
    Contract(Job),
    /// Hand a message to the contract running ledger `seq`, if it still
    /// runs.
    ToContract {
        seq: u64,
        bytes: Vec<u8>,
    },
    /// Hand ledger `seq`'s outputs to the users connected here: the ledger
    /// after it, durably stored, certified exactly these.
    Deliver {
        seq: u64,
        ledger: Hash,
        run: RunResult,
    },
    /// Enough of the UNL signed the output tree root of ledger `seq`'s run
    /// (`contract::OutputTree`) for hpcore's users to take its outputs,
    /// or the run left the window with fewer: hand them these. Follows
    /// its `Deliver`, only when `ConsensusConfig::sign_outputs`.
    OutputsSigned {
        seq: u64,
        root: crate::contract::B3,
        sigs: Vec<(PubKey, Sig)>,
    },
    /// Ledger `seq`'s run, as certified, did not end cleanly (`outcome`):
    /// tell each user with an input in it (`users`), since a run that
    /// timed out has no outputs to carry the news. Comes before `Deliver`.
    RunFailed {
        seq: u64,
        users: Vec<PubKey>,
        outcome: RunOutcome,
    },
    /// Tell the users with outputs in our run of ledger `seq` that those
    /// outputs were not certified on this node, and will never come.
    Withhold {
        seq: u64,
        run: RunResult,
        why: Withheld,
    },
    /// A typed event for logs, traces and the simulator's checkers.
    Notify(Event),
    /// Take new user inputs (`open`), or refuse them with a status: the
    /// contract is `behind` ledgers behind the lcl.
    Intake {
        open: bool,
        behind: u64,
    },
}

/// Why a run's outputs were not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Withheld {
    /// No result of that run had enough votes: the next ledger certifies
    /// none (the copies diverged, or too few ran it in time).
    NoAgreement,
    /// The UNL certified another result than this node's run.
    Differs,
}

impl Withheld {
    pub fn as_str(self) -> &'static str {
        match self {
            Withheld::NoAgreement => "no-agreement",
            Withheld::Differs => "differs",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CloseVia {
    Consensus,
    History,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Event {
    /// The node (re)started from its durable chain.
    Started {
        lcl: LedgerId,
    },
    /// A ledger is durably part of this node's chain.
    LedgerClosed {
        ledger: Ledger,
        hash: Hash,
        via: CloseVia,
    },
    Status(VoteStatus),
    /// A threshold of the UNL closed a different ledger at our lcl's seq.
    ForkSeen {
        seq: u64,
        ours: Hash,
        theirs: Hash,
    },
    /// The node dropped its unfinal lcl `from`, which the UNL did not build
    /// on, and is back on `to`; `proven` is the other ledger at `from`'s
    /// seq, when a verified proof of its child (so: it is final) was the
    /// reason.
    RolledBack {
        from: LedgerId,
        to: LedgerId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proven: Option<LedgerId>,
    },
    /// Our run of ledger `seq` disagrees with what the next ledger
    /// certified: the node fetches the certified state.
    StateMismatch {
        seq: u64,
    },
    /// Our run of ledger `seq` left the certified state but other outputs:
    /// those are withheld; nothing needs fetching.
    OutputMismatch {
        seq: u64,
    },
    /// Our outputs of ledger `seq` were not certified, so users get none.
    OutputsWithheld {
        seq: u64,
        why: Withheld,
    },
    /// The contract is `behind` ledgers behind: fetching the state running
    /// ledger `seq` left, which the lcl certifies.
    StateSyncStarted {
        seq: u64,
        behind: u64,
    },
    /// No peer could serve the state of ledger `seq`: the node runs the
    /// ledgers itself.
    StateSyncAbandoned {
        seq: u64,
    },
    /// The fetched state of ledger `seq`, hashing to `state`, is installed.
    StateSynced {
        seq: u64,
        state: Hash,
        fetched: FetchStats,
    },
    /// The contract is `behind` ledgers behind the lcl: user intake paused
    /// (`open` false) or taken up again.
    Intake {
        open: bool,
        behind: u64,
    },
    /// A peer sent history that failed verification.
    HistoryRejected {
        peer: PubKey,
        reason: String,
    },
    /// The node took one of the protocol's rare paths.
    Reached(RarePath),
}

/// Counters of what the node did and dropped and why, and a few levels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub proposals_accepted: u64,
    pub dropped_not_unl: u64,
    pub dropped_bad_signature: u64,
    pub dropped_stale: u64,
    pub dropped_malformed: u64,
    pub dropped_duplicate: u64,
    pub equivocations: u64,
    pub foreign_lcl: u64,
    pub inputs_rejected: u64,
    pub history_served: u64,
    pub history_adopted: u64,
    pub history_rejected: u64,
    pub signature_checks: u64,
    pub rollbacks: u64,
    pub bodies_fetched: u64,
    /// History, body and state requests refused: the peer asked too often.
    pub requests_refused: u64,
    /// Contract states fetched and installed instead of running ledgers.
    pub state_syncs: u64,
    pub state_bytes_fetched: u64,
    pub state_files_fetched: u64,
    /// State sync answers that failed verification.
    pub state_rejected: u64,
    /// State requests passed to the contract host to answer.
    pub state_served: u64,
    /// The round the node is in: a level, not a count.
    pub round: u64,
    /// Input bodies in the pool, waiting for a ledger: a level.
    pub pooled: u64,
    /// The node party line's counters.
    pub npl: NplStats,
    pub beacon: BeaconStats,
}

/// Who the random beacon left out of its value over the last
/// `ABSENCE_WINDOW` ledgers, most often first: repeated absences are what
/// a withholder looks like.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BeaconStats {
    /// Nodes recorded absent, and in how many ledgers.
    pub absent: Vec<(PubKey, u64)>,
    /// Nodes convicted of fraud, and in how many ledgers.
    pub convicted: Vec<(PubKey, u64)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("invalid consensus settings: {0}")]
    Config(#[from] ConfigError),
    #[error("stored chain is broken: {0}")]
    Chain(#[from] ChainError),
    #[error("node party line settings: {0}")]
    Npl(#[from] crate::npl::LimitsError),
    #[error("the contract state is from ledger {ran}, past the stored chain's last ledger {lcl}; roll it back first")]
    ContractAhead { ran: u64, lcl: u64 },
}
