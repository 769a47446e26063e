//! How much a flood of peer connections writes to the log, over real
//! sockets: its own test binary, as it installs the global subscriber.
#![cfg(feature = "runtime")]

use hotpocket_node::crypto::{Keypair, PubKey};
use hotpocket_node::gate::GateConfig;
use hotpocket_node::real::peers::TcpPeers;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

fn key(n: u8) -> Keypair {
    Keypair::from_seed([n; 32])
}

fn unl() -> Vec<PubKey> {
    vec![key(1).public(), key(2).public()]
}

/// A transport for `key(n)` on a fresh loopback port, dialling `dial`.
async fn node(
    n: u8,
    dial: Vec<String>,
    gate: GateConfig,
    stop: &watch::Receiver<bool>,
) -> (TcpPeers, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peers = TcpPeers::start_with(key(n), unl(), listener, dial, stop.clone(), gate);
    (peers, addr)
}

/// Polls `cond` until it holds; the bound only keeps a broken build from
/// hanging the suite.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

/// Opens `n` connections to `to` from the loopback address `source`.
async fn open_from(source: Ipv4Addr, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = vec![];
    for _ in 0..n {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
        out.push(s.connect(to).await.unwrap());
    }
    out
}

/// Whether the node has closed `s`; does not wait unless `wait`.
async fn closed(s: &mut TcpStream, wait: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

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
