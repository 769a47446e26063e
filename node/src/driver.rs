//! The one event loop that runs a [`Node`] against an environment.
//!
//! Both the simulator and the real runtime call [`run`]; they differ only in
//! the trait implementations they pass. The loop waits for a peer frame, a
//! user input or the node's next deadline, feeds it in, and carries out the
//! returned actions in order. A contract run is awaited and its result fed
//! straight back, so the node sees runs finish in ledger order.

use crate::consensus::{Action, Input, Node};
use crate::env::{Clock, ContractHost, Observer, PeerNetwork, Store, StoreError, Users};
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
}

/// Runs until the peer network shuts down (`Ok`) or the store fails.
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
    let mut pending: VecDeque<Action> = node.handle(env.clock.now_ms(), Input::Tick).into();
    let mut streak = 0usize;
    loop {
        while let Some(action) = pending.pop_front() {
            match action {
                Action::Send { to, bytes } => env.net.send(&to, bytes),
                Action::Broadcast { bytes } => env.net.broadcast(bytes),
                Action::Persist(record) => env.store.append(&record)?,
                Action::Sync => env.store.sync()?,
                Action::Rollback { to } => {
                    env.store.truncate(to.seq)?;
                    env.contract.rollback(to.seq);
                }
                Action::Execute(record) => {
                    let report = env.contract.execute(&record).await;
                    let (seq, hash) = (record.ledger.seq, record.hash);
                    let done = Input::Executed { seq, hash, report };
                    pending.extend(node.handle(env.clock.now_ms(), done));
                }
                Action::Deliver { seq, run } => env.users.deliver(seq, &run),
                Action::Notify(event) => env.observer.notify(&event),
            }
        }
        let deadline = node.next_deadline(env.clock.now_ms());
        // Messages already waiting go in before the timer's tick (the node
        // enters a stage only on a tick), but a flood cannot hold the tick
        // back for ever.
        let overdue = streak >= MAX_STREAK && env.clock.now_ms() >= deadline;
        let input = if overdue {
            Some(Input::Tick)
        } else {
            let mut peer = pin!(env.net.recv());
            let mut user = pin!(env.users.recv());
            let mut timer = pin!(env.clock.sleep_until(deadline));
            // Polled in a fixed order so a simulation replays identically.
            poll_fn(|cx| {
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
        streak = if tick { 0 } else { streak + 1 };
        pending.extend(node.handle(env.clock.now_ms(), input));
        if tick {
            env.observer.stats(node.stats());
        }
    }
}
