//! What the peer-transport tests share: keys, a transport on a fresh
//! loopback port, and connections from chosen loopback addresses.
#![allow(dead_code)] // each test file uses its own part

use hotpocket_node::crypto::{Keypair, PubKey};
use hotpocket_node::gate::GateConfig;
use hotpocket_node::real::peers::TcpPeers;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

pub fn key(n: u8) -> Keypair {
    Keypair::from_seed([n; 32])
}

pub fn unl() -> Vec<PubKey> {
    vec![key(1).public(), key(2).public()]
}

/// A transport for `key(n)` on a fresh loopback port, dialling `dial`.
pub async fn node(
    n: u8,
    dial: Vec<String>,
    gate: GateConfig,
    stop: &watch::Receiver<bool>,
) -> (TcpPeers, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Bare TCP: these tests reach the signed layer TLS wraps in a node.
    let peers = TcpPeers::start_with(key(n), unl(), listener, dial, stop.clone(), gate, None);
    (peers, addr)
}

/// Polls `cond` until it holds; the bound only keeps a broken build from
/// hanging the suite.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

/// Opens `n` connections to `to` from the loopback address `source`.
pub async fn open_from(source: Ipv4Addr, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = vec![];
    for _ in 0..n {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
        out.push(s.connect(to).await.unwrap());
    }
    out
}

/// Whether the node has closed `s`; does not wait unless `wait`.
pub async fn closed<S: tokio::io::AsyncRead + Unpin>(s: &mut S, wait: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}
