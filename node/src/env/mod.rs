//! The seam between the protocol and the world.
//!
//! Protocol code never touches a clock, socket, disk, process or random
//! source; drivers do, through these traits. The simulator implements them
//! with virtual time, a lossy link model and an in-memory store; the real
//! runtime with the system clock, TCP, SQLite and child processes.

mod session;

pub use session::{RunEvent, RunLink, RunSession};

use crate::consensus::{Event, Stats, Withheld};
use crate::contract::{ExecResult, RunOutcome, RunReport, RunResult, StateNode, B3};
use crate::crypto::{Hash, PubKey, Sig};
use crate::ledger::LedgerRecord;
use crate::sync::state_transfer::{StatePatch, StateRequest, StateResponse};
use std::future::Future;
use std::sync::Arc;

/// Node-local time. It may be offset from, and drift against, other nodes'.
pub trait Clock {
    /// Milliseconds since the unix epoch, as this node sees it.
    fn now_ms(&self) -> u64;
    /// Completes once `now_ms() >= local_ms`.
    fn sleep_until(&self, local_ms: u64) -> impl Future<Output = ()>;
}

/// Authenticated links to the other UNL members.
pub trait PeerNetwork {
    fn send(&mut self, to: &PubKey, bytes: Vec<u8>);
    fn broadcast(&mut self, bytes: Vec<u8>);
    /// The next frame from a peer, or `None` once the network is shut down.
    /// Must be cancel-safe: the driver drops it when a timer fires first.
    fn recv(&mut self) -> impl Future<Output = Option<(PubKey, Vec<u8>)>>;
}

/// The users connected to this node.
pub trait Users {
    /// The next input body (an encoded [`UserInput`]) a user submitted here.
    /// Cancel-safe like `PeerNetwork::recv`.
    ///
    /// [`UserInput`]: crate::contract::UserInput
    fn recv(&mut self) -> impl Future<Output = Option<Vec<u8>>>;
    /// The outputs of running ledger `seq` (hash `ledger`), now certified
    /// by a ledger after it: each goes to its user if that user is
    /// connected here.
    fn deliver(&mut self, seq: u64, ledger: &Hash, run: &RunResult);
    /// Enough of the UNL signed the output tree root of ledger `seq`'s run
    /// for hpcore's users (or the node gave up waiting): its outputs go to
    /// them with `sigs`. Comes after that run's `deliver`.
    fn outputs_signed(&mut self, _seq: u64, _root: &B3, _sigs: &[(PubKey, Sig)]) {}
    /// The outputs of our run of ledger `seq` were not certified: each of
    /// its users connected here is told (`users::withheld_message`) that
    /// they will not come.
    fn withhold(&mut self, seq: u64, run: &RunResult, why: Withheld);
    /// Whether to take new inputs: while not `open`, each new input is
    /// refused with a status (the contract is `behind` ledgers behind), so
    /// users slow down instead of waiting on runs that fall further behind.
    fn intake(&mut self, open: bool, behind: u64);
    /// Ledger `seq`'s certified run ended with `outcome`, not a clean exit:
    /// each of `users` connected here is told (`users::failed_message`).
    fn run_failed(&mut self, seq: u64, users: &[PubKey], outcome: &RunOutcome);
    /// What the node reports to its observer, in order: ledgers closed and
    /// rolled back tell users whose inputs they hold or dropped.
    fn notify(&mut self, _event: &Event) {}
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O failed: {0}")]
    Io(String),
    #[error("store holds a broken chain: {0}")]
    Corrupt(String),
}

/// Durable ledger storage. Appends are not durable until `sync` returns: a
/// crash before then may lose them (never half of one).
pub trait Store {
    /// The seq of the newest stored ledger; 0 for a new node.
    fn tip(&mut self) -> Result<u64, StoreError>;
    /// Up to `count` stored ledgers from seq `from` on, in order (genesis,
    /// seq 0, is never stored): fewer near the tip, and no more than fit
    /// in `max_bytes` as stored (the first is read whatever its size).
    /// Ledgers appended but not yet synced are read too.
    fn read(
        &mut self,
        from: u64,
        count: u64,
        max_bytes: usize,
    ) -> Result<Vec<LedgerRecord>, StoreError>;
    /// `record` is shared with the node's chain: a store that keeps
    /// records in memory (the simulator's disk) holds that copy, not
    /// another.
    fn append(&mut self, record: Arc<LedgerRecord>) -> Result<(), StoreError>;
    /// Forgets every ledger after seq `keep_through`; durable at `sync`.
    fn truncate(&mut self, keep_through: u64) -> Result<(), StoreError>;
    /// Durability point.
    fn sync(&mut self) -> Result<(), StoreError>;
}

/// Runs the contract for a closed ledger.
pub trait ContractHost {
    /// Which ledger's run left the contract state (0 for the initial
    /// state), and that run's result.
    fn ran(&self) -> (u64, ExecResult);
    /// Runs `record` (every input body present) on the current state, as
    /// a session: the run may take time, and while it runs it receives
    /// what the node delivers on `link` and sends on it what the contract
    /// emits.
    fn execute(&mut self, record: &LedgerRecord, link: RunLink) -> impl Future<Output = RunReport>;
    /// Returns the contract state to what running ledger `seq` left; a
    /// state not past `seq` is left as it is. With no copy of that state
    /// kept, it fails and leaves the state as it is: the node then takes
    /// the certified state from its peers.
    fn rollback(&mut self, seq: u64) -> Result<(), RollbackError>;
    /// The tree of the state the latest run, rollback or install left.
    fn state_tree(&mut self) -> StateNode;
    /// Answers a peer's state sync request from the states kept: what the
    /// latest run left and, if kept, what the one before left.
    fn serve_state(&mut self, req: &StateRequest) -> StateResponse;
    /// Makes the state `patch` applied to the current one, all or nothing,
    /// and records it as what running `patch.seq` left. On an error the
    /// state is as it was.
    fn install_state(
        &mut self,
        patch: StatePatch,
    ) -> impl Future<Output = Result<(), InstallError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("no copy of the state ledger {want} left is kept (the state is from ledger {ran})")]
    NoSnapshot { want: u64, ran: u64 },
    #[error("contract state rollback failed: {0}")]
    Io(#[from] std::io::Error),
    /// The rollback failed half way and could not put the state back: the
    /// state directory is gone until a restart repairs it.
    #[error("contract state lost in a failed rollback: {0}")]
    Lost(std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("state install failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("patched state hashes to {got}, not the certified {want}")]
    Hash { want: Hash, got: Hash },
}

/// Randomness for keys, challenges and beacon secrets.
pub trait Entropy {
    fn fill(&mut self, buf: &mut [u8]);
    fn seed32(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.fill(&mut s);
        s
    }
}

/// Receives the node's typed events: logs in the real node, checkers and the
/// trace hash in the simulator.
pub trait Observer {
    fn notify(&mut self, event: &Event);
    /// The node's counters, offered after every timer tick.
    fn stats(&mut self, _stats: &Stats) {}
}
