//! Transports without fds: [`MemTransport`] for tests and simulators, and
//! [`NullTransport`] for runs without a party line.
//!
//! Both keep a virtual clock that moves only when a `recv` times out (by
//! the timeout), so a contract that budgets by [`super::Npl::now_ms`] sees
//! its time pass, and runs are the same every time.

use super::{NplTransport, RecvFuture};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

#[derive(Default)]
struct Inner {
    input: VecDeque<Vec<u8>>,
    output: Vec<u8>,
    now_ms: u64,
}

/// An in-memory party line: a queue of input chunks, each returned by one
/// `recv` as it was pushed, and a record of all output bytes. `recv` on an
/// empty queue returns None at once (a timeout) and advances the clock by
/// the timeout. Clones share the same line, so a test keeps a handle to
/// feed and inspect it while an [`super::Npl`] owns another.
#[derive(Clone, Default)]
pub struct MemTransport(Rc<RefCell<Inner>>);

impl MemTransport {
    pub fn new() -> MemTransport {
        MemTransport::default()
    }

    /// Queues raw input bytes (records as the node writes them), returned
    /// by one `recv`.
    pub fn push_input(&self, bytes: &[u8]) {
        self.0.borrow_mut().input.push_back(bytes.to_vec());
    }

    /// Everything sent so far.
    pub fn output(&self) -> Vec<u8> {
        self.0.borrow().output.clone()
    }

    /// Takes everything sent so far, leaving the record empty.
    pub fn take_output(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.borrow_mut().output)
    }
}

impl NplTransport for MemTransport {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().output.extend_from_slice(bytes);
        Ok(())
    }

    fn recv(&mut self, timeout_ms: u64) -> RecvFuture<'_> {
        let mut inner = self.0.borrow_mut();
        let got = inner.input.pop_front();
        if got.is_none() {
            inner.now_ms = inner.now_ms.saturating_add(timeout_ms);
        }
        Box::pin(std::future::ready(Ok(got)))
    }

    fn now_ms(&self) -> u64 {
        self.0.borrow().now_ms
    }
}

/// No party line: sends vanish, every `recv` times out at once.
#[derive(Default)]
pub struct NullTransport {
    now_ms: u64,
}

impl NplTransport for NullTransport {
    fn send(&mut self, _bytes: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn recv(&mut self, timeout_ms: u64) -> RecvFuture<'_> {
        self.now_ms = self.now_ms.saturating_add(timeout_ms);
        Box::pin(std::future::ready(Ok(None)))
    }

    fn now_ms(&self) -> u64 {
        self.now_ms
    }
}
