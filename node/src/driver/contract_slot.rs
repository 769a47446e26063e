//! The contract host's slot in the driver. [`ContractSlot`] owns the queue
//! of jobs the node asked for, the host while it is idle, the job in
//! flight (a run session or a state install, which holds the host until it
//! ends), and what finished jobs gave back for the node. Jobs reach the
//! host one at a time, in the order the node asked for them.
//!
//! Two rules of the queue are the slot's, as they must hold the moment
//! a job is queued or fails, before the node hears of it: queuing a
//! rollback drops the queued runs of the ledgers it undoes, and a failed
//! rollback drops every queued run. Either way those runs would go on a
//! state they do not follow; the node hands them out again when they are
//! due.

use crate::consensus::{Input, Job};
use crate::contract::RunReport;
use crate::crypto::Hash;
use crate::env::{ContractHost, RollbackError, RunEvent, RunLink, RunSession};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A contract job in flight, holding the host until it ends.
enum Running<'a, X> {
    Run {
        seq: u64,
        hash: Hash,
        session: RunSession<'a, (&'a mut X, RunReport)>,
    },
    Install(Pin<Box<dyn Future<Output = (&'a mut X, Input)> + 'a>>),
}

pub struct ContractSlot<'a, X> {
    queue: Queue,
    /// The host while no job holds it.
    idle: Option<&'a mut X>,
    running: Option<Running<'a, X>>,
    /// What quick jobs (reading the state tree, answering a peer's state
    /// request, a failed rollback) and starting a run gave back, in order.
    fed: VecDeque<Input>,
}

impl<'a, X: ContractHost> ContractSlot<'a, X> {
    pub fn new(host: &'a mut X) -> Self {
        ContractSlot {
            queue: Queue::default(),
            idle: Some(host),
            running: None,
            fed: VecDeque::new(),
        }
    }

    pub fn push(&mut self, job: Job) {
        self.queue.push(job);
    }

    /// Hands a message to the run of ledger `seq`, if it is the one going.
    pub fn deliver(&mut self, seq: u64, bytes: Vec<u8>) {
        match self.running.as_mut() {
            Some(Running::Run {
                seq: s, session, ..
            }) if *s == seq => session.deliver(bytes),
            _ => tracing::trace!(seq, "no run of that ledger in progress: dropped"),
        }
    }

    /// Hands queued jobs to the host while it is idle: quick ones are done
    /// at once, a run or an install keeps it. Fails only if a rollback lost
    /// the state directory (`RollbackError::Lost`): nothing can run any
    /// more.
    pub fn start(&mut self) -> Result<(), RollbackError> {
        while let Some(host) = self.idle.take() {
            match self.queue.pop() {
                Some(Job::Rollback { to }) => {
                    if let Err(e) = host.rollback(to.seq) {
                        tracing::error!(seq = to.seq, error = %e, "contract state rollback failed");
                        if let RollbackError::Lost(_) = e {
                            return Err(e);
                        }
                        self.queue.drop_runs();
                        let error = e.to_string();
                        self.fed
                            .push_back(Input::RollbackFailed { seq: to.seq, error });
                    }
                    self.idle = Some(host);
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
                    self.running = Some(Running::Run { seq, hash, session });
                    self.fed.push_back(Input::RunStarted { seq });
                }
                Some(Job::InstallState(patch)) => {
                    self.running = Some(Running::Install(Box::pin(async move {
                        let seq = patch.seq;
                        let error = host.install_state(*patch).await.err();
                        let error = error.map(|e| e.to_string());
                        (host, Input::StateInstalled { seq, error })
                    })));
                }
                Some(Job::ReadState { id }) => {
                    let tree = host.state_tree();
                    self.fed.push_back(Input::LocalState { id, tree });
                    self.idle = Some(host);
                }
                Some(Job::ServeState { to, req }) => {
                    let resp = host.serve_state(&req);
                    self.fed.push_back(Input::StateServed { to, resp });
                    self.idle = Some(host);
                }
                None => self.idle = Some(host),
            }
            if self.running.is_some() || self.queue.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// The oldest of what finished jobs gave back, if any: it goes to the
    /// node before anything else.
    pub fn next_fed(&mut self) -> Option<Input> {
        self.fed.pop_front()
    }

    /// What the job in flight says: a message from the run, or the job's
    /// end, which gives the host back.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Input> {
        let (host, input) = match self.running.as_mut() {
            Some(Running::Run { seq, hash, session }) => match session.poll_event(cx) {
                Poll::Ready(RunEvent::Message(bytes)) => {
                    return Poll::Ready(Input::FromContract { seq: *seq, bytes });
                }
                Poll::Ready(RunEvent::Finished((host, report))) => {
                    let (seq, hash) = (*seq, *hash);
                    (host, Input::Executed { seq, hash, report })
                }
                Poll::Pending => return Poll::Pending,
            },
            Some(Running::Install(f)) => match f.as_mut().poll(cx) {
                Poll::Ready(done) => done,
                Poll::Pending => return Poll::Pending,
            },
            None => return Poll::Pending,
        };
        self.running = None;
        self.idle = Some(host);
        Poll::Ready(input)
    }
}

/// The jobs not handed to the host yet.
#[derive(Debug, Default)]
struct Queue(VecDeque<Job>);

impl Queue {
    /// A rollback first drops the queued runs of the ledgers it undoes:
    /// they would be wasted, and would go on a state about to step back.
    fn push(&mut self, job: Job) {
        if let Job::Rollback { to } = &job {
            self.0
                .retain(|j| !matches!(j, Job::Execute(r) if r.ledger.seq > to.seq));
        }
        self.0.push_back(job);
    }

    /// A rollback failed: the state is a later run's, which no queued run
    /// follows.
    fn drop_runs(&mut self) {
        self.0.retain(|j| !matches!(j, Job::Execute(_)));
    }

    fn pop(&mut self) -> Option<Job> {
        self.0.pop_front()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{LedgerId, LedgerRecord};

    fn run(seq: u64) -> Job {
        let mut r = LedgerRecord::genesis();
        r.ledger.seq = seq;
        Job::Execute(Box::new(r))
    }

    #[test]
    fn a_rollback_drops_the_queued_runs_it_undoes() {
        let mut jobs = Queue::default();
        for seq in [4, 5, 6] {
            jobs.push(run(seq));
        }
        jobs.push(Job::ReadState { id: 1 });
        let to = LedgerId {
            seq: 4,
            hash: Hash::ZERO,
        };
        jobs.push(Job::Rollback { to });
        assert!(matches!(jobs.pop(), Some(Job::Execute(r)) if r.ledger.seq == 4));
        assert!(matches!(jobs.pop(), Some(Job::ReadState { id: 1 })));
        assert!(matches!(jobs.pop(), Some(Job::Rollback { .. })));
        assert!(jobs.is_empty());
        jobs.push(run(5));
        jobs.push(Job::ReadState { id: 2 });
        jobs.drop_runs();
        assert!(matches!(jobs.pop(), Some(Job::ReadState { id: 2 })));
        assert!(jobs.is_empty());
    }
}
