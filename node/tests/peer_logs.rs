//! How much a flood of peer connections writes to the log, over real
//! sockets: its own test binary, as it installs the global subscriber.
#![cfg(feature = "runtime")]

use hotpocket_node::gate::GateConfig;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[path = "support/peers.rs"]
mod peers_support;
use peers_support::*;

/// Log lines captured from every thread.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Hundreds of connections refused at once and a few left to time out
/// make a line each per interval, not a line each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_once_per_interval_with_a_count() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Global, and the only test in this file: a subscriber scoped to one
    // thread misses events whose call site another test's thread saw first.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let (_stop_tx, stop) = watch::channel(false);
    let gate = GateConfig {
        max_pending: 64,
        max_pending_per_source: 4,
    };
    let (j, j_addr) = node(2, vec![], gate, &stop).await;
    let mut conns = open_from(Ipv4Addr::new(127, 0, 0, 5), j_addr, 200).await;
    until("196 refused", || j.stats().over_capacity == 196).await;
    for s in &mut conns {
        // The four let in are closed by the handshake deadline.
        assert!(closed(s, Duration::from_secs(20)).await);
    }
    until("4 timed out", || j.stats().refused == 4).await;
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let lines = |what: &str| text.lines().filter(|l| l.contains(what)).count();
    assert_eq!(lines("too many unauthenticated"), 1, "{text}");
    assert_eq!(lines("refused peer connections"), 1, "{text}");
    // The first of each is logged as it happens, with a count of one.
    assert!(text.contains("refused=1"), "{text}");
}
