//! The one event loop that runs a [`Node`] against an environment.
//!
//! Both the simulator and the real runtime call [`boot`] and [`run`]; they
//! differ only in the trait implementations they pass. The loop waits for a
//! peer frame, a user input, the running contract or the node's next
//! deadline, feeds it in, and carries out the returned actions in order.
//! Contract jobs go on beside all that, one at a time and in the order the
//! node asked for them; a run is a session that may emit messages while
//! it runs and receive the node's.

mod contract_slot;

use crate::consensus::{Action, ConsensusConfig, Input, Node, NodeError};
use crate::crypto::Keypair;
use crate::env::{
    Clock, ContractHost, Observer, PeerNetwork, RollbackError, Store, StoreError, Users,
};
use crate::wire::MAX_FRAME_BYTES;
use contract_slot::ContractSlot;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;

/// Peer and user inputs handled in a row, past a due tick, before the
/// tick goes first.
const MAX_STREAK: usize = 1024;

/// Everything a node needs from the outside world.
pub struct Env<C, N, U, S, X, O> {
    pub clock: C,
    pub net: N,
    pub users: U,
    pub store: S,
    pub contract: X,
    pub observer: O,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The node cannot promise durability any more, so it stops.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The contract state directory is gone: nothing can run any more.
    #[error(transparent)]
    ContractLost(RollbackError),
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("loading the ledger: {0}")]
    Store(#[from] StoreError),
    #[error("the contract state is from ledger {ran}, past the durable ledger {lcl}, and cannot be rolled back: {source}")]
    Rollback {
        ran: u64,
        lcl: u64,
        source: RollbackError,
    },
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Starts a node from what its store and contract host kept. A contract
/// that ran a ledger the store never made durable (a crash between the
/// run and the sync) is rolled back to the durable lcl first; the ledgers
/// it has not run yet are run again.
pub fn boot(
    cfg: ConsensusConfig,
    key: Keypair,
    store: &mut impl Store,
    contract: &mut impl ContractHost,
) -> Result<Node, BootError> {
    let lcl = store.tip()?;
    let (ran, _) = contract.ran();
    if ran > lcl {
        tracing::info!(
            ran,
            lcl,
            "the contract ran past the durable ledger: rolling it back"
        );
        contract
            .rollback(lcl)
            .map_err(|source| BootError::Rollback { ran, lcl, source })?;
    }
    // Only the newest part of the chain: memory does not grow with history.
    let from = Node::needed_from(&cfg, lcl, ran.min(lcl));
    let count = (lcl + 1).saturating_sub(from);
    let stored = store.read(from, count, usize::MAX)?;
    let first = stored.first().map(|r| r.ledger.seq);
    if stored.len() as u64 != count || first.is_some_and(|f| f != from) {
        return Err(BootError::Store(StoreError::Corrupt(format!(
            "ledgers {from}..={lcl} asked, {} read from {first:?}",
            stored.len()
        ))));
    }
    Ok(Node::new(cfg, key, stored, contract.ran())?)
}

/// Runs until the peer network shuts down (`Ok`) or the store fails.
///
/// A contract run goes on beside consensus: the node keeps taking in and
/// casting votes while it runs (only its stage-3 vote waits for the
/// result).
pub async fn run<C, N, U, S, X, O>(
    node: &mut Node,
    env: &mut Env<C, N, U, S, X, O>,
) -> Result<(), DriverError>
where
    C: Clock,
    N: PeerNetwork,
    U: Users,
    S: Store,
    X: ContractHost,
    O: Observer,
{
    let Env {
        clock,
        net,
        users,
        store,
        contract,
        observer,
    } = env;
    let mut pending: Vec<Action> = node.handle(clock.now_ms(), Input::Tick);
    let mut streak = 0usize;
    let mut slot = ContractSlot::new(contract);
    // A peer's request for ledgers older than the node keeps in memory,
    // read from the store: handed back before anything else comes in.
    let mut stored: VecDeque<Input> = VecDeque::new();
    loop {
        for action in pending.drain(..) {
            match action {
                Action::Send { to, bytes } => net.send(&to, bytes),
                Action::Broadcast { bytes } => net.broadcast(bytes),
                Action::Persist(record) => store.append(record)?,
                Action::Sync => store.sync()?,
                Action::ReadStored {
                    to,
                    from_seq,
                    count,
                    want,
                } => {
                    // A disk that cannot be read leaves the peer to ask
                    // another; it does not stop the node (writes would).
                    // One frame's worth: the answer holds no more.
                    let read = store.read(from_seq, count, MAX_FRAME_BYTES);
                    let records = read.unwrap_or_else(|e| {
                        tracing::warn!(from_seq, error = %e, "reading ledgers to serve");
                        Vec::new()
                    });
                    stored.push_back(Input::Stored { to, records, want });
                }
                Action::Truncate { keep_through } => store.truncate(keep_through)?,
                Action::ToContract { seq, bytes } => slot.deliver(seq, bytes),
                Action::RunFailed {
                    seq,
                    users: who,
                    outcome,
                } => users.run_failed(seq, &who, &outcome),
                Action::Deliver { seq, ledger, run } => users.deliver(seq, &ledger, &run),
                Action::OutputsSigned { seq, root, sigs } => {
                    users.outputs_signed(seq, &root, &sigs)
                }
                Action::Withhold { seq, run, why } => users.withhold(seq, &run, why),
                Action::Notify(event) => {
                    users.notify(&event);
                    observer.notify(&event);
                }
                Action::Intake { open, behind } => users.intake(open, behind),
                Action::Contract(job) => slot.push(job),
            }
        }
        slot.start().map_err(DriverError::ContractLost)?;
        let deadline = node.next_deadline(clock.now_ms());
        // Messages already waiting go in before the timer's tick (the node
        // enters a stage only on a tick), but a flood cannot hold the tick
        // back for ever.
        let overdue = streak >= MAX_STREAK && clock.now_ms() >= deadline;
        let input = if let Some(read) = stored.pop_front() {
            Some(read)
        } else if let Some(fed) = slot.next_fed() {
            Some(fed)
        } else if overdue {
            Some(Input::Tick)
        } else {
            let mut peer = pin!(net.recv());
            let mut user = pin!(users.recv());
            let mut timer = pin!(clock.sleep_until(deadline));
            // Polled in a fixed order so a simulation replays identically.
            poll_fn(|cx| {
                if let Poll::Ready(input) = slot.poll(cx) {
                    return Poll::Ready(Some(input));
                }
                if let Poll::Ready(m) = peer.as_mut().poll(cx) {
                    return Poll::Ready(m.map(|(from, bytes)| Input::Peer { from, bytes }));
                }
                if let Poll::Ready(Some(body)) = user.as_mut().poll(cx) {
                    return Poll::Ready(Some(Input::Submit(body)));
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Input::Tick));
                }
                Poll::Pending
            })
            .await
        };
        let Some(input) = input else {
            return Ok(());
        };
        let tick = matches!(input, Input::Tick);
        if matches!(
            input,
            Input::Tick | Input::Peer { .. } | Input::Submit(_) | Input::FromContract { .. }
        ) {
            streak = if tick { 0 } else { streak + 1 };
        }
        pending = node.handle(clock.now_ms(), input);
        if tick {
            observer.stats(&node.stats());
        }
    }
}
