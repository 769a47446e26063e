//! TLS on peer links, over real sockets: what crosses the wire between two
//! nodes is not their frames in the clear (a bare-TCP control shows the
//! same check finds them there), a certificate whose key is not in the UNL
//! is refused, and so is an insider's TLS session carrying another member's
//! handshake.
#![cfg(feature = "runtime")]

use hotpocket_node::crypto::PubKey;
use hotpocket_node::env::PeerNetwork;
use hotpocket_node::gate::GateConfig;
use hotpocket_node::real::peers::{connect, handshake, seal, PeerTls, TcpPeers};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[path = "support/peers.rs"]
mod peers_support;
use peers_support::*;

const MARKER: &[u8] = b"PLAINTEXT-MARKER-0123456789";

fn tls(n: u8, unl: &[PubKey]) -> Option<PeerTls> {
    Some(PeerTls::new(&key(n), unl).unwrap())
}

async fn start(
    n: u8,
    dial: Vec<String>,
    tls: Option<PeerTls>,
    stop: &watch::Receiver<bool>,
) -> (TcpPeers, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gate = GateConfig::default();
    let peers = TcpPeers::start_with(key(n), unl(), listener, dial, stop.clone(), gate, tls);
    (peers, addr)
}

/// Copies `from` to `to`, keeping a copy of every byte on `tape`.
async fn copy_recorded(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    tape: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        tape.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// A TCP relay to `to` that keeps a copy of every byte it forwards.
async fn recording_relay(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tape = seen.clone();
    tokio::spawn(async move {
        while let Ok((a, _)) = listener.accept().await {
            let b = TcpStream::connect(to).await.unwrap();
            let (ar, aw) = a.into_split();
            let (br, bw) = b.into_split();
            tokio::spawn(copy_recorded(ar, bw, tape.clone()));
            tokio::spawn(copy_recorded(br, aw, tape.clone()));
        }
    });
    (addr, seen)
}

/// I sends J a frame holding `MARKER` through a recording relay; returns
/// whether the tape holds the marker, once J has the frame.
async fn marker_on_the_wire(with_tls: bool) -> bool {
    let (_stop_tx, stop) = watch::channel(false);
    let u = unl();
    let (mut j, j_addr) = start(2, vec![], with_tls.then(|| tls(2, &u)).flatten(), &stop).await;
    let (relay, tape) = recording_relay(j_addr).await;
    let dial = vec![format!("{}@{relay}", key(2).public().to_hex())];
    let (mut i, _) = start(1, dial, with_tls.then(|| tls(1, &u)).flatten(), &stop).await;
    until("I links to J", || i.connected().contains(&key(2).public())).await;
    i.send(&key(2).public(), MARKER.to_vec());
    let got = tokio::time::timeout(Duration::from_secs(10), j.recv()).await;
    let (from, bytes) = got.expect("J got the frame").expect("J still running");
    assert_eq!((from, bytes.as_slice()), (key(1).public(), MARKER));
    let tape = tape.lock().unwrap();
    tape.windows(MARKER.len()).any(|w| w == MARKER)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_cross_the_wire_encrypted_and_bare_tcp_shows_them() {
    assert!(
        !marker_on_the_wire(true).await,
        "the payload crossed TLS in the clear"
    );
    assert!(
        marker_on_the_wire(false).await,
        "control: bare TCP carries it as is"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_outside_the_unl_is_refused() {
    let (_stop_tx, stop) = watch::channel(false);
    let u = unl();
    let (j, j_addr) = start(2, vec![], tls(2, &u), &stop).await;
    // Key 9 is no member; its certificate is as well made as any.
    let rogue = PeerTls::new(&key(9), &u).unwrap();
    let refused = connect(&j_addr.to_string(), Some(&rogue)).await;
    // TLS 1.3 lets the client finish first; J's refusal then ends the
    // connection before anything is read from it.
    if let Ok((mut s, _)) = refused {
        // At once, by TLS: not by the handshake's 5 s timeout.
        let gone = closed(&mut s, Duration::from_secs(2)).await;
        assert!(gone, "the rogue link stayed open");
    }
    until("J counts the refusal", || j.stats().refused >= 1).await;
    // A member's certificate gets through TLS and the handshake.
    let member = PeerTls::new(&key(1), &u).unwrap();
    let (mut s, proved) = connect(&j_addr.to_string(), Some(&member)).await.unwrap();
    assert_eq!(
        proved,
        Some(Some(key(2).public())),
        "the certificate proves J's key"
    );
    handshake(&mut s, &key(1), &u, [1; 32]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insiders_tls_carrying_another_members_handshake_is_refused() {
    let (_stop_tx, stop) = watch::channel(false);
    let u3 = vec![key(1).public(), key(2).public(), key(3).public()];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let j_addr = listener.local_addr().unwrap();
    let gate = GateConfig::default();
    let j = TcpPeers::start_with(
        key(2),
        u3.clone(),
        listener,
        vec![],
        stop.clone(),
        gate,
        tls(2, &u3),
    );
    // M holds key 3 and proves it to TLS, then runs member 1's handshake
    // (as one relaying member 1 would): J must not take it as member 1.
    let m = PeerTls::new(&key(3), &u3).unwrap();
    let (mut s, _) = connect(&j_addr.to_string(), Some(&m)).await.unwrap();
    let session = handshake(&mut s, &key(1), &u3, [2; 32]).await;
    if let Ok(session) = session {
        // Its first frame would prove the link; J has closed it.
        let mut frame = (seal(&key(1), &session.id, 1, &[]).len() as u32)
            .to_be_bytes()
            .to_vec();
        frame.extend(seal(&key(1), &session.id, 1, &[]));
        let _ = s.write_all(&frame).await;
        let gone = closed(&mut s, Duration::from_secs(5)).await;
        assert!(gone, "J kept the spliced link");
    }
    until("J refuses the mismatch", || j.stats().refused >= 1).await;
    assert_eq!(j.stats().inbound_sessions, 0, "J took a session from it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_to_dial_into_a_certificate_outside_the_unl() {
    let u = unl();
    // A server holding key 9, no member, that would take J's certificate.
    let rogue = PeerTls::new(&key(9), &u).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = rogue.acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(s).await;
            });
        }
    });
    let dialled = connect(&addr.to_string(), tls(2, &u).as_ref()).await;
    let err = dialled.err().expect("J took a certificate outside its UNL");
    assert!(err.to_string().contains("not in the UNL"), "{err}");
}
