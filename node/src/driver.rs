//! The one event loop that runs a [`Node`] against an environment.
//!
//! Both the simulator and the real runtime call [`boot`] and [`run`]; they
//! differ only in the trait implementations they pass. The loop waits for a
//! peer frame, a user input, the running contract or the node's next
//! deadline, feeds it in, and carries out the returned actions in order.
//! Contract jobs go on beside all that, one at a time and in the order the
//! node asked for them; a run is a session that may emit messages while
//! it runs and receive the node's.

use crate::consensus::{Action, ConsensusConfig, ContractJobs, Input, Job, Node, NodeError};
use crate::contract::RunReport;
use crate::crypto::{Hash, Keypair};
use crate::env::{
    Clock, ContractHost, Observer, PeerNetwork, RollbackError, RunEvent, RunLink, RunSession,
    Store, StoreError, Users,
};
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
    let stored = store.load()?;
    let lcl = stored.last().map_or(0, |r| r.ledger.seq);
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
    Ok(Node::new(cfg, key, stored, contract.ran())?)
}

/// What the driver waits for next.
enum Wake<R> {
    Input(Option<Input>),
    /// The contract job in flight (a run or a state install) finished.
    Done(R),
}

/// A contract job in flight, holding the host until it ends.
enum Running<'a, X> {
    Run {
        seq: u64,
        hash: Hash,
        session: RunSession<'a, (&'a mut X, RunReport)>,
    },
    Install(Pin<Box<dyn Future<Output = (&'a mut X, Input)> + 'a>>),
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
    let mut jobs = ContractJobs::default();
    // The contract while idle; a job in flight owns it and hands it back.
    let mut idle: Option<&mut X> = Some(contract);
    let mut running: Option<Running<'_, X>> = None;
    // What quick contract jobs (reading the state tree, answering a
    // peer's state request, a failed rollback) gave back.
    let mut fed: Vec<Input> = Vec::new();
    loop {
        for action in pending.drain(..) {
            match action {
                Action::Send { to, bytes } => net.send(&to, bytes),
                Action::Broadcast { bytes } => net.broadcast(bytes),
                Action::Persist(record) => store.append(record)?,
                Action::Sync => store.sync()?,
                Action::ToContract { seq, bytes } => match running.as_mut() {
                    Some(Running::Run {
                        seq: s, session, ..
                    }) if *s == seq => session.deliver(bytes),
                    _ => tracing::trace!(seq, "no run of that ledger in progress: dropped"),
                },
                Action::RunFailed {
                    seq,
                    users: who,
                    outcome,
                } => users.run_failed(seq, &who, &outcome),
                Action::Deliver { seq, run } => users.deliver(seq, &run),
                Action::Withhold { seq, run, why } => users.withhold(seq, &run, why),
                Action::Notify(event) => observer.notify(&event),
                Action::Intake { open, behind } => users.intake(open, behind),
                Action::Contract(job) => {
                    if let Job::Rollback { to } = &job {
                        // The ledgers go at once (durable at the `Sync` that
                        // follows); the contract state when its turn comes.
                        store.truncate(to.seq)?;
                    }
                    jobs.push(job);
                }
            }
        }
        while let Some(host) = idle.take() {
            match jobs.pop() {
                Some(Job::Rollback { to }) => {
                    if let Err(e) = host.rollback(to.seq) {
                        tracing::error!(seq = to.seq, error = %e, "contract state rollback failed");
                        if let RollbackError::Lost(_) = e {
                            return Err(DriverError::ContractLost(e));
                        }
                        // Runs queued behind it would run on the wrong
                        // state; the node hands them out again once it has
                        // the certified state.
                        jobs.drop_runs();
                        let error = e.to_string();
                        fed.push(Input::RollbackFailed { seq: to.seq, error });
                    }
                    idle = Some(host);
                }
                Some(Job::Execute(record)) => {
                    let (seq, hash) = (record.ledger.seq, record.hash);
                    let link = RunLink::default();
                    let run_link = link.clone();
                    let run = async move {
                        let report = host.execute(&record, run_link).await;
                        (host, report)
                    };
                    let session = RunSession::new(run, link);
                    running = Some(Running::Run { seq, hash, session });
                    fed.push(Input::RunStarted { seq });
                }
                Some(Job::InstallState(patch)) => {
                    running = Some(Running::Install(Box::pin(async move {
                        let seq = patch.seq;
                        let error = host.install_state(*patch).await.err();
                        let error = error.map(|e| e.to_string());
                        (host, Input::StateInstalled { seq, error })
                    })));
                }
                Some(Job::ReadState { id }) => {
                    let tree = host.state_tree();
                    fed.push(Input::LocalState { id, tree });
                    idle = Some(host);
                }
                Some(Job::ServeState { to, req }) => {
                    let resp = host.serve_state(&req);
                    fed.push(Input::StateServed { to, resp });
                    idle = Some(host);
                }
                None => idle = Some(host),
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
        let wake = if !fed.is_empty() {
            Wake::Input(Some(fed.remove(0)))
        } else if overdue {
            Wake::Input(Some(Input::Tick))
        } else {
            let mut peer = pin!(net.recv());
            let mut user = pin!(users.recv());
            let mut timer = pin!(clock.sleep_until(deadline));
            // Polled in a fixed order so a simulation replays identically.
            poll_fn(|cx| {
                match running.as_mut() {
                    Some(Running::Run { seq, hash, session }) => match session.poll_event(cx) {
                        Poll::Ready(RunEvent::Message(bytes)) => {
                            let seq = *seq;
                            return Poll::Ready(Wake::Input(Some(Input::FromContract {
                                seq,
                                bytes,
                            })));
                        }
                        Poll::Ready(RunEvent::Finished((host, report))) => {
                            let (seq, hash) = (*seq, *hash);
                            let done = Input::Executed { seq, hash, report };
                            return Poll::Ready(Wake::Done((host, done)));
                        }
                        Poll::Pending => {}
                    },
                    Some(Running::Install(f)) => {
                        if let Poll::Ready(done) = f.as_mut().poll(cx) {
                            return Poll::Ready(Wake::Done(done));
                        }
                    }
                    None => {}
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
            Wake::Done((host, input)) => {
                running = None;
                idle = Some(host);
                input
            }
            Wake::Input(None) => return Ok(()),
            Wake::Input(Some(input)) => input,
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
