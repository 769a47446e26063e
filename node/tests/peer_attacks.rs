//! Attacks on the peer transport over real sockets: two nodes' transports
//! (`TcpPeers`) on loopback, an honest link between them carrying numbered
//! frames, and an attacker with no UNL key doing what it can.
#![cfg(feature = "runtime")]

use hotpocket_node::env::PeerNetwork;
use hotpocket_node::gate::GateConfig;
use hotpocket_node::handshake::{Hello, HELLO_BYTES, VERSION};
use hotpocket_node::real::peers::{handshake, seal, TcpPeers, READ_CHUNK};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

#[path = "support/peers.rs"]
mod peers_support;
use peers_support::*;

/// Pipes bytes between two connections until both ends closed or
/// `guard` passed, counting what each side sent (`a_pre` were already read
/// from `a`), and whether both ends closed.
async fn pipe(a: TcpStream, b: TcpStream, a_pre: usize, guard: Duration) -> (usize, usize, bool) {
    async fn copy(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        n: &AtomicUsize,
    ) {
        let mut buf = [0u8; 4096];
        while let Ok(k @ 1..) = from.read(&mut buf).await {
            n.fetch_add(k, Ordering::Relaxed);
            if to.write_all(&buf[..k]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }
    let (from_a, from_b) = (AtomicUsize::new(a_pre), AtomicUsize::new(0));
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let both = async { tokio::join!(copy(ar, bw, &from_a), copy(br, aw, &from_b)) };
    let closed = tokio::time::timeout(guard, both).await.is_ok();
    (from_a.into_inner(), from_b.into_inner(), closed)
}

/// The relay of version 1 with no knowledge of the protocol at all: accept
/// nothing, connect to both nodes and join the two connections, so each
/// node talks to the other through the attacker as if the other had
/// dialled it. Under version 1 both handshakes completed (each node signed
/// the other's challenge) and J took the attacker's connection for I's.
async fn blind_relay(i: SocketAddr, j: SocketAddr) -> (usize, usize, bool) {
    let to_j = TcpStream::connect(j).await.unwrap();
    let to_i = TcpStream::connect(i).await.unwrap();
    pipe(to_j, to_i, 0, Duration::from_secs(20)).await
}

/// The same relay speaking version 2: claim I to J, take J's challenge,
/// claim J to I with J's challenge as its own, then relay whatever either
/// says.
async fn relay_v2(i: SocketAddr, j: SocketAddr) -> (usize, usize, bool) {
    let mut to_j = TcpStream::connect(j).await.unwrap();
    let as_i = Hello {
        version: VERSION,
        key: key(1).public(),
        challenge: [0xAA; 32],
    };
    write_msg(&mut to_j, &as_i.encode()).await;
    let len = to_j.read_u32().await.unwrap() as usize;
    assert_eq!(len, HELLO_BYTES, "J answers a hello with a hello");
    let mut j_hello = vec![0u8; len];
    to_j.read_exact(&mut j_hello).await.unwrap();
    let cj = Hello::decode(&j_hello).unwrap().challenge;
    let mut to_i = TcpStream::connect(i).await.unwrap();
    let as_j = Hello {
        version: VERSION,
        key: key(2).public(),
        challenge: cj,
    };
    write_msg(&mut to_i, &as_j.encode()).await;
    pipe(to_j, to_i, 4 + len, Duration::from_secs(20)).await
}

async fn write_msg(s: &mut TcpStream, m: &[u8]) {
    s.write_u32(m.len() as u32).await.unwrap();
    s.write_all(m).await.unwrap();
}

/// Runs `attack` (given I's and J's addresses) while I sends J numbered
/// frames, and for a while after; checks that every frame arrived, in
/// order. Returns both transports and what the attack returned.
async fn honest_link_under<F, T>(
    attack: impl FnOnce(SocketAddr, SocketAddr) -> F,
) -> (TcpPeers, TcpPeers, T)
where
    F: std::future::Future<Output = T>,
{
    let (_stop_tx, stop) = watch::channel(false);
    let (mut j, j_addr) = node(2, vec![], GateConfig::default(), &stop).await;
    let (mut i, i_addr) = node(1, vec![j_addr.to_string()], GateConfig::default(), &stop).await;
    let jk = key(2).public();
    until("I connects to J", || i.connected().contains(&jk)).await;

    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while !done.load(Ordering::Relaxed) {
                i.send(&jk, n.to_be_bytes().to_vec());
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (i, n)
        })
    };
    let receiver = tokio::spawn(async move {
        let mut got = vec![];
        // Ends once I has been quiet a while after the sender stopped.
        while let Ok(Some((from, bytes))) =
            tokio::time::timeout(Duration::from_secs(3), j.recv()).await
        {
            assert_eq!(from, key(1).public());
            got.push(u32::from_be_bytes(bytes.try_into().unwrap()));
        }
        (j, got)
    });
    let out = attack(i_addr, j_addr).await;
    // Past the point where a usurped link would have been dropped (the
    // reader checks once a second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    done.store(true, Ordering::Relaxed);
    let (i, sent) = sender.await.unwrap();
    let (j, got) = receiver.await.unwrap();
    let all: Vec<u32> = (0..sent).collect();
    assert_eq!(got, all, "every honest frame arrived, in order");
    (i, j, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_attack_gets_no_session_and_the_honest_link_keeps_delivering() {
    let (i, j, ()) = honest_link_under(|i_addr, j_addr| async move {
        let mut attacks = vec![];
        for _ in 0..3 {
            attacks.push(tokio::spawn(blind_relay(i_addr, j_addr)));
            attacks.push(tokio::spawn(relay_v2(i_addr, j_addr)));
        }
        for a in attacks {
            let (from_j, from_i, closed) = a.await.unwrap();
            assert!(closed, "the nodes closed the attacker's connections");
            // At most a hello each (length + 65 bytes): never a signature.
            assert!(
                from_j <= 4 + HELLO_BYTES,
                "J sent the attacker {from_j} bytes"
            );
            assert!(
                from_i <= 4 + HELLO_BYTES,
                "I sent the attacker {from_i} bytes"
            );
        }
    })
    .await;
    assert_eq!(j.stats().inbound_sessions, 1, "only I's real link");
    assert_eq!(i.stats().inbound_sessions, 0);
    assert_eq!(j.stats().refused, 6);
    assert_eq!(i.stats().refused, 6);
}

/// Someone holding I's key (a second copy of I, or I's key stolen) opens
/// sessions to J that never prove themselves with a signed frame: one says
/// nothing, one declares the largest frame. Neither displaces I's working
/// link, and J closes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unproven_sessions_do_not_replace_a_working_link() {
    let (_, j, ()) = honest_link_under(|_, j_addr| async move {
        let mut quiet = TcpStream::connect(j_addr).await.unwrap();
        handshake(&mut quiet, &key(1), &unl(), [7; 32])
            .await
            .unwrap();
        let mut big = TcpStream::connect(j_addr).await.unwrap();
        handshake(&mut big, &key(1), &unl(), [8; 32]).await.unwrap();
        big.write_u32(16 << 20).await.unwrap();
        for s in [&mut quiet, &mut big] {
            assert!(closed(s, Duration::from_secs(20)).await);
        }
    })
    .await;
    assert_eq!(j.stats().inbound_sessions, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_and_honest_peers_still_connect() {
    let (_stop_tx, stop) = watch::channel(false);
    let gate = GateConfig {
        max_pending: 10,
        max_pending_per_source: 4,
    };
    let (mut j, j_addr) = node(2, vec![], gate, &stop).await;
    let at = |last: u8| Ipv4Addr::new(127, 0, 0, last);

    // Two sources open ten idle connections each: four each are let in,
    // the rest closed at once.
    let mut idle = open_from(at(2), j_addr, 10).await;
    idle.extend(open_from(at(3), j_addr, 10).await);
    until("12 refused", || j.stats().over_capacity == 12).await;
    let mut shut = 0;
    for s in &mut idle {
        // A refused connection is closed already; a pending one is not.
        if closed(s, Duration::from_millis(200)).await {
            shut += 1;
        }
    }
    assert_eq!(shut, 12);
    idle.retain_mut(|s| {
        let mut b = [0u8; 1];
        // Still open: nothing to read yet, no end of stream.
        matches!(s.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    });
    assert_eq!(idle.len(), 8);

    // An honest peer still connects and delivers while those wait.
    let (mut i, _) = node(1, vec![j_addr.to_string()], GateConfig::default(), &stop).await;
    let jk = key(2).public();
    until("I connects to J", || i.connected().contains(&jk)).await;
    i.send(&jk, b"hello".to_vec());
    let got = tokio::time::timeout(Duration::from_secs(10), j.recv()).await;
    assert_eq!(got, Ok(Some((key(1).public(), b"hello".to_vec()))));

    // Its slot was given back: two more fit in total, a third does not.
    let mut more = open_from(at(4), j_addr, 3).await;
    until("13 refused", || j.stats().over_capacity >= 13).await;
    let mut shut = 0;
    for s in &mut more {
        if closed(s, Duration::from_millis(200)).await {
            shut += 1;
        }
    }
    assert_eq!(shut, 1);
    assert_eq!(j.stats().over_capacity, 13, "{:?}", j.stats());

    // The handshake deadline closes every idle one.
    for s in idle.iter_mut().chain(more.iter_mut()) {
        assert!(closed(s, Duration::from_secs(20)).await);
    }
    until("10 timed out", || j.stats().refused == 10).await;
}

#[tokio::test]
async fn a_declared_frame_that_stalls_times_out_holding_one_chunk() {
    use hotpocket_node::real::peers::{read_frame_into, PeerError};
    const MAX: usize = 16 << 20;
    let (mut tx, mut rx) = tokio::io::duplex(1 << 20);
    let mut buf = Vec::new();
    let wait = Duration::from_millis(300);

    // The maximum declared, nothing sent.
    tx.write_u32(MAX as u32).await.unwrap();
    let r = read_frame_into(&mut rx, MAX, wait, &mut buf).await;
    assert!(matches!(r, Err(PeerError::Timeout)), "{r:?}");
    assert!(buf.capacity() <= READ_CHUNK, "held {}", buf.capacity());

    // Part of it sent: what is held follows what arrived.
    let sent = 300 << 10;
    tx.write_u32(MAX as u32).await.unwrap();
    tx.write_all(&vec![7u8; sent]).await.unwrap();
    let r = read_frame_into(&mut rx, MAX, wait, &mut buf).await;
    assert!(matches!(r, Err(PeerError::Timeout)), "{r:?}");
    assert!(
        buf.capacity() <= 2 * sent + READ_CHUNK,
        "held {}",
        buf.capacity()
    );

    // Over the maximum: refused before anything is read or held.
    let (mut tx, mut rx) = tokio::io::duplex(1 << 20);
    let mut buf = Vec::new();
    tx.write_u32(MAX as u32 + 1).await.unwrap();
    let r = read_frame_into(&mut rx, MAX, wait, &mut buf).await;
    assert!(
        matches!(r, Err(PeerError::TooLarge(n)) if n == MAX + 1),
        "{r:?}"
    );
    assert_eq!(buf.capacity(), 0);

    // A whole frame in several chunks arrives intact.
    let body: Vec<u8> = (0..200_000u32).map(|n| n as u8).collect();
    tx.write_u32(body.len() as u32).await.unwrap();
    tx.write_all(&body).await.unwrap();
    read_frame_into(&mut rx, MAX, wait, &mut buf).await.unwrap();
    assert_eq!(buf, body);
}

/// A node that dials its own address learns it is talking to itself (and
/// backs off), rather than seeing a connection drop and redialling.
#[tokio::test]
async fn dialling_ourselves_is_recognised_by_the_dialer() {
    use hotpocket_node::handshake::HandshakeError;
    use hotpocket_node::real::peers::PeerError;
    let (_stop_tx, stop) = watch::channel(false);
    let (j, j_addr) = node(2, vec![], GateConfig::default(), &stop).await;
    let mut s = TcpStream::connect(j_addr).await.unwrap();
    let r = handshake(&mut s, &key(2), &unl(), [5; 32]).await;
    assert!(
        matches!(r, Err(PeerError::Handshake(HandshakeError::Loopback))),
        "{r:?}"
    );
    assert_eq!(j.stats().inbound_sessions, 0);
}

/// An insider (M, holding UNL key 3) at an address I dials splices each of
/// I's connections onto one to J. Version 2 alone lets that handshake
/// complete, the session really I's and J's, but running through M, which
/// could drop or delay I's frames to J at will. Given the key it expects at
/// M's address (`KEY@host:port`, what `hotpocket cluster` writes), I refuses
/// J's answer there. The control shows what a bare `host:port` gives: the
/// first key found there, whoever it is (then pinned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_spliced_to_another_node_is_refused_when_the_key_is_pinned() {
    let unl3 = vec![key(1).public(), key(2).public(), key(3).public()];
    let (_stop_tx, stop) = watch::channel(false);
    let start = |n: u8, dial: Vec<String>, listener| {
        TcpPeers::start_with(
            key(n),
            unl3.clone(),
            listener,
            dial,
            stop.clone(),
            GateConfig::default(),
            None,
        )
    };
    let j_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let j_addr = j_listener.local_addr().unwrap();
    let j = start(2, vec![], j_listener);
    // M: every connection it accepts, piped to J.
    let m = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let m_addr = m.local_addr().unwrap();
    let spliced = Arc::new(AtomicUsize::new(0));
    let counter = spliced.clone();
    tokio::spawn(async move {
        while let Ok((from_i, _)) = m.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            let to_j = TcpStream::connect(j_addr).await.unwrap();
            tokio::spawn(pipe(from_i, to_j, 0, Duration::from_secs(30)));
        }
    });
    let pinned = format!("{}@{m_addr}", key(3).public().to_hex());
    let i = start(
        1,
        vec![pinned],
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    until("I dialled M three times", || {
        spliced.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert!(i.connected().is_empty(), "I took J's answer at M's address");
    assert_eq!(j.stats().inbound_sessions, 0);

    let control = start(
        1,
        vec![m_addr.to_string()],
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let jk = key(2).public();
    until("an unpinned I takes J at M's address", || {
        control.connected().contains(&jk)
    })
    .await;
}

/// An insider holding I's key proves session after session, each with part
/// of the largest frame sent and the rest held back. Each newly proven
/// session ends the one before it at once, mid-frame, buffer and all: one
/// key holds one partly read frame, not one per connection (30 of them
/// took a node to 510 MiB before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_proven_session_ends_a_stalled_one_at_once() {
    let (_stop_tx, stop) = watch::channel(false);
    let (j, j_addr) = node(2, vec![], GateConfig::default(), &stop).await;
    let mut open = vec![];
    for c in 0..4u8 {
        let mut s = TcpStream::connect(j_addr).await.unwrap();
        let session = handshake(&mut s, &key(1), &unl(), [c; 32]).await.unwrap();
        let proof = seal(&key(1), &session.id, 1, &[]);
        s.write_u32(proof.len() as u32).await.unwrap();
        s.write_all(&proof).await.unwrap();
        s.write_u32(16 << 20).await.unwrap();
        s.write_all(&vec![0u8; 1 << 20]).await.unwrap();
        open.push(s);
    }
    let mut newest = open.pop().unwrap();
    for (n, s) in open.iter_mut().enumerate() {
        assert!(
            closed(s, Duration::from_secs(3)).await,
            "session {n} still open after a newer one was proven"
        );
    }
    // The newest still has its frame's 10 s.
    assert!(!closed(&mut newest, Duration::from_millis(500)).await);
    assert_eq!(j.stats().inbound_sessions, 4);
}

/// Two peer entries that reach the same node (an IP and a name, say): the
/// second never displaces the first's working link, at either end, and
/// backs off instead of redialling every 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_address_of_a_linked_peer_leaves_the_link_alone() {
    let (_stop_tx, stop) = watch::channel(false);
    let (j, j_addr) = node(2, vec![], GateConfig::default(), &stop).await;
    let twice = vec![j_addr.to_string(), format!("localhost:{}", j_addr.port())];
    let (i, _) = node(1, twice, GateConfig::default(), &stop).await;
    let jk = key(2).public();
    until("I connects to J", || i.connected().contains(&jk)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(i.connected().contains(&jk));
    // The first link, and at most one refused second dial; a flapping
    // pair would have proven dozens.
    let n = j.stats().inbound_sessions;
    assert!(n <= 2, "{n} sessions proven at J in 3 s");
}
