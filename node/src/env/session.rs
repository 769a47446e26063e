//! A contract run as a session: it takes (real or simulated) time, and
//! messages pass between the node and the running contract while it runs.
//!
//! The host's run gets a [`RunLink`], the contract's end: it sends what the
//! contract emits and receives what the node delivers. The driver holds a
//! [`RunSession`], the node's end: it delivers messages and polls for the
//! next thing the run emits or for its end. Both ends are plain std (a
//! mutex and wakers), so the protocol crate needs no runtime for them, and
//! a run may hand its end to a thread or task of its own.
//!
//! The node party line is the first user of the channel; today nothing
//! sends on it, and a message without a listener is dropped.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Link {
    to_contract: VecDeque<Vec<u8>>,
    from_contract: VecDeque<Vec<u8>>,
    /// The run waiting in `recv`.
    contract: Option<Waker>,
    /// The driver waiting in `poll_event`.
    node: Option<Waker>,
}

/// The contract's end of a run's channel.
#[derive(Clone, Default)]
pub struct RunLink(Arc<Mutex<Link>>);

impl RunLink {
    fn lock(&self) -> MutexGuard<'_, Link> {
        // A panic while holding this lock cannot leave the queues half
        // changed, so a poisoned lock is still good.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends what the contract emitted to the node.
    pub fn send(&self, bytes: Vec<u8>) {
        let mut l = self.lock();
        l.from_contract.push_back(bytes);
        if let Some(w) = l.node.take() {
            w.wake();
        }
    }

    /// The next message the node delivered, if one is waiting.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        self.lock().to_contract.pop_front()
    }

    /// Waits for the next message the node delivers.
    pub fn recv(&self) -> impl Future<Output = Vec<u8>> + '_ {
        poll_fn(move |cx| {
            let mut l = self.lock();
            match l.to_contract.pop_front() {
                Some(m) => Poll::Ready(m),
                None => {
                    l.contract = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }
}

/// What a run in progress did.
#[derive(Debug)]
pub enum RunEvent<T> {
    /// The contract emitted a message.
    Message(Vec<u8>),
    /// The run ended with this result.
    Finished(T),
}

/// The node's end of a run in progress: the run itself and its channel.
pub struct RunSession<'a, T> {
    run: Pin<Box<dyn Future<Output = T> + 'a>>,
    link: RunLink,
}

impl<'a, T: 'a> RunSession<'a, T> {
    /// `run` is the host's run, which was handed `link`'s clone.
    pub fn new(run: impl Future<Output = T> + 'a, link: RunLink) -> RunSession<'a, T> {
        RunSession {
            run: Box::pin(run),
            link,
        }
    }

    /// Hands the running contract a message.
    pub fn deliver(&mut self, bytes: Vec<u8>) {
        let mut l = self.link.lock();
        l.to_contract.push_back(bytes);
        if let Some(w) = l.contract.take() {
            w.wake();
        }
    }

    /// The next message the contract emitted, or the run's end. Messages
    /// emitted before the end come first. Cancel-safe: nothing is lost if
    /// the caller stops polling.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<RunEvent<T>> {
        {
            let mut l = self.link.lock();
            if let Some(m) = l.from_contract.pop_front() {
                return Poll::Ready(RunEvent::Message(m));
            }
            l.node = Some(cx.waker().clone());
        }
        match self.run.as_mut().poll(cx) {
            Poll::Ready(out) => match self.link.lock().from_contract.pop_front() {
                // Emitted in the same poll that ended the run: the message
                // first; the end is not lost, as the run keeps its result
                // only once, so hold it back in a finished future.
                Some(m) => {
                    self.run = Box::pin(std::future::ready(out));
                    Poll::Ready(RunEvent::Message(m))
                }
                None => Poll::Ready(RunEvent::Finished(out)),
            },
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(Mutex<bool>);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() = true;
        }
    }

    fn poll<'a, T: 'a>(s: &mut RunSession<'a, T>, flag: &Arc<Flag>) -> Poll<RunEvent<T>> {
        let waker = Waker::from(flag.clone());
        s.poll_event(&mut Context::from_waker(&waker))
    }

    #[test]
    fn messages_pass_both_ways_while_the_run_goes_on() {
        let link = RunLink::default();
        let end = link.clone();
        // A contract that echoes one message, upper-cased, then ends.
        let run = async move {
            let m = end.recv().await;
            end.send(m.to_ascii_uppercase());
            m.len()
        };
        let mut session = RunSession::new(run, link);
        let flag = Arc::new(Flag(Mutex::new(false)));
        assert!(
            poll(&mut session, &flag).is_pending(),
            "waits for a message"
        );
        session.deliver(b"hello".to_vec());
        assert!(*flag.0.lock().unwrap(), "delivering wakes the run");
        match poll(&mut session, &flag) {
            Poll::Ready(RunEvent::Message(m)) => assert_eq!(m, b"HELLO"),
            other => panic!("expected the echo first, got {other:?}"),
        }
        match poll(&mut session, &flag) {
            Poll::Ready(RunEvent::Finished(n)) => assert_eq!(n, 5),
            other => panic!("expected the end, got {other:?}"),
        }
    }

    #[test]
    fn a_run_that_emits_nothing_just_finishes() {
        let mut session = RunSession::new(async { 7 }, RunLink::default());
        let flag = Arc::new(Flag(Mutex::new(false)));
        assert!(matches!(
            poll(&mut session, &flag),
            Poll::Ready(RunEvent::Finished(7))
        ));
    }
}
