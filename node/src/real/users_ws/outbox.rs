//! A user connection's output queue, and the guards that keep the
//! registry and the byte counts right however a connection ends.

use super::Conns;
use crate::crypto::PubKey;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A connection's queue of outputs, and the bytes in it.
pub(super) struct Outbox {
    pub tx: mpsc::Sender<Message>,
    pub bytes: Arc<AtomicUsize>,
    /// Whether the connection speaks hpcore's protocol.
    pub hp: bool,
    /// Whether its user asked for `ledger_event` notifications; the
    /// connection's task sets it.
    pub ledger_events: Arc<AtomicBool>,
}

impl Outbox {
    /// Queues `m` if `fits(queued here, queued for all)` says so, counting
    /// its bytes first (the connection's task takes them off as it writes)
    /// and giving them back if it is not queued. Whether it was.
    pub fn offer(
        &self,
        m: Message,
        total: &AtomicUsize,
        fits: impl Fn(usize, usize) -> bool,
    ) -> bool {
        let len = m.len();
        let mine = self.bytes.fetch_add(len, Ordering::Relaxed);
        let all = total.fetch_add(len, Ordering::Relaxed);
        if fits(mine, all) && self.tx.try_send(m).is_ok() {
            return true;
        }
        self.bytes.fetch_sub(len, Ordering::Relaxed);
        total.fetch_sub(len, Ordering::Relaxed);
        false
    }
}

/// Removes a connection from the registry however `serve` ends.
pub(super) struct Registration {
    pub conns: Conns,
    pub user: PubKey,
    pub id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut conns = self.conns.lock().expect("not poisoned");
        if let Some(m) = conns.get_mut(&self.user) {
            m.remove(&self.id);
            if m.is_empty() {
                conns.remove(&self.user);
            }
        }
    }
}

/// Counts an open connection until dropped.
pub(super) struct Open(pub Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Gives the bytes a connection never sent back to the total when it ends.
pub(super) struct Unsent {
    pub mine: Arc<AtomicUsize>,
    pub total: Arc<AtomicUsize>,
}

impl Drop for Unsent {
    fn drop(&mut self) {
        let n = self.mine.swap(0, Ordering::Relaxed);
        self.total.fetch_sub(n, Ordering::Relaxed);
    }
}

/// An output a connection is writing: its bytes leave the total when the
/// write ends, however it ends.
pub(super) struct Writing<'a> {
    pub total: &'a AtomicUsize,
    pub len: usize,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.total.fetch_sub(self.len, Ordering::Relaxed);
    }
}
