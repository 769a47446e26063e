//! The one event loop that runs a [`Node`] against an environment.
//!
//! Both the simulator and the real runtime call [`run`]; they differ only in
//! the trait implementations they pass. The loop waits for a peer frame, a
//! user input or the node's next deadline, feeds it in, and carries out the
//! returned actions in order. Contract runs go on beside all that, one at
//! a time and in ledger order, and their results are fed back as they end.

use crate::consensus::{Action, Input, Node, PeerMessage};
use crate::env::{Clock, ContractHost, Observer, PeerNetwork, Store, StoreError, Users};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
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

/// What the driver waits for next.
enum Wake<R> {
    Input(Option<Input>),
    /// The contract job in flight (a run or a state install) finished.
    Ran(R),
}

/// Runs until the peer network shuts down (`Ok`) or the store fails.
///
/// A contract run goes on beside consensus: the node keeps taking in and
/// casting votes while it runs (only its stage-3 vote waits for the
/// result). Runs and rollbacks reach the contract one at a time, in the
/// order the node asked for them.
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
    let mut pending: VecDeque<Action> = node.handle(clock.now_ms(), Input::Tick).into();
    let mut streak = 0usize;
    let mut jobs: VecDeque<Action> = VecDeque::new();
    // The contract while idle; a run in flight owns it and hands it back.
    let mut idle: Option<&mut X> = Some(contract);
    type Running<'a, X> = Pin<Box<dyn Future<Output = (&'a mut X, Input)> + 'a>>;
    let mut running: Option<Running<'_, X>> = None;
    // What quick contract jobs (reading the state tree) gave back.
    let mut fed: VecDeque<Input> = VecDeque::new();
    loop {
        while let Some(action) = pending.pop_front() {
            match action {
                Action::Send { to, bytes } => net.send(&to, bytes),
                Action::Broadcast { bytes } => net.broadcast(bytes),
                Action::Persist(record) => store.append(&record)?,
                Action::Sync => store.sync()?,
                Action::Rollback { to } => {
                    store.truncate(to.seq)?;
                    // Queued runs of the dropped ledgers would be wasted.
                    jobs.retain(|j| !matches!(j, Action::Execute(r) if r.ledger.seq > to.seq));
                    jobs.push_back(Action::Rollback { to });
                }
                job @ (Action::Execute(_)
                | Action::ReadState { .. }
                | Action::ServeState { .. }
                | Action::InstallState(_)) => jobs.push_back(job),
                Action::Deliver { seq, run } => users.deliver(seq, &run),
                Action::Notify(event) => observer.notify(&event),
            }
        }
        while let Some(host) = idle.take() {
            match jobs.pop_front() {
                Some(Action::Rollback { to }) => {
                    host.rollback(to.seq);
                    idle = Some(host);
                }
                Some(Action::Execute(record)) => {
                    running = Some(Box::pin(async move {
                        let report = host.execute(&record).await;
                        let (seq, hash) = (record.ledger.seq, record.hash);
                        (host, Input::Executed { seq, hash, report })
                    }));
                }
                Some(Action::InstallState(patch)) => {
                    running = Some(Box::pin(async move {
                        let seq = patch.seq;
                        let error = host.install_state(*patch).await.err();
                        let error = error.map(|e| e.to_string());
                        (host, Input::StateInstalled { seq, error })
                    }));
                }
                Some(Action::ReadState { id }) => {
                    let tree = host.state_tree();
                    fed.push_back(Input::LocalState { id, tree });
                    idle = Some(host);
                }
                Some(Action::ServeState { to, req }) => {
                    let resp = host.serve_state(&req);
                    net.send(&to, PeerMessage::StateResponse(resp).encode());
                    idle = Some(host);
                }
                _ => idle = Some(host),
            }
            if running.is_some() || jobs.is_empty() {
                break;
            }
        }
        let deadline = node.next_deadline(clock.now_ms());
        // Messages already waiting go in before the timer's tick (the node
        // enters a stage only on a tick), but a flood cannot hold the tick
        // back for ever.
        let overdue = streak >= MAX_STREAK && clock.now_ms() >= deadline;
        let wake = if let Some(input) = fed.pop_front() {
            Wake::Input(Some(input))
        } else if overdue {
            Wake::Input(Some(Input::Tick))
        } else {
            let mut peer = pin!(net.recv());
            let mut user = pin!(users.recv());
            let mut timer = pin!(clock.sleep_until(deadline));
            // Polled in a fixed order so a simulation replays identically.
            poll_fn(|cx| {
                if let Some(r) = running.as_mut() {
                    if let Poll::Ready(done) = r.as_mut().poll(cx) {
                        return Poll::Ready(Wake::Ran(done));
                    }
                }
                if let Poll::Ready(m) = peer.as_mut().poll(cx) {
                    let m = m.map(|(from, bytes)| Input::Peer { from, bytes });
                    return Poll::Ready(Wake::Input(m));
                }
                if let Poll::Ready(Some(body)) = user.as_mut().poll(cx) {
                    return Poll::Ready(Wake::Input(Some(Input::Submit(body))));
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Input(Some(Input::Tick)));
                }
                Poll::Pending
            })
            .await
        };
        let input = match wake {
            Wake::Ran((host, input)) => {
                running = None;
                idle = Some(host);
                input
            }
            Wake::Input(None) => return Ok(()),
            Wake::Input(Some(input)) => input,
        };
        let tick = matches!(input, Input::Tick);
        if matches!(input, Input::Tick | Input::Peer { .. } | Input::Submit(_)) {
            streak = if tick { 0 } else { streak + 1 };
        }
        pending.extend(node.handle(clock.now_ms(), input));
        if tick {
            observer.stats(node.stats());
        }
    }
}
