//! The websocket server under hostile users, on real sockets: sockets that
//! never finish the handshake do not keep users out, a user that never
//! reads cannot make the node hold its outputs without bound, a message
//! too big for the buffer gets an error and a close code, and a node whose
//! contract runs are behind refuses inputs with a status naming them.
#![cfg(feature = "runtime")]
// Real sockets on real time.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use futures_util::{SinkExt, StreamExt};
use hotpocket_node::contract::{RunOutcome, RunResult, UserIo};
use hotpocket_node::crypto::{Hash, Keypair};
use hotpocket_node::env::Users;
use hotpocket_node::real::users_ws::{now_ms, ConnLimits, WsUsers};
use hotpocket_node::users::{answer_challenge, SessionLimits};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn server(session: SessionLimits, limits: ConnLimits) -> (WsUsers, u16, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, shutdown) = watch::channel(false);
    (
        WsUsers::start_with(listener, session, limits, shutdown),
        port,
        stop,
    )
}

/// A user that passes the handshake.
async fn user(port: u16, key: &Keypair) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}"))
        .await
        .unwrap();
    let Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) = ws.next().await else {
        panic!("no challenge");
    };
    let challenge = m.into_text().unwrap();
    let helo = answer_challenge(key, &challenge, now_ms() / 1000).unwrap();
    ws.send(Message::Text(helo)).await.unwrap();
    ws
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..500 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn stalled_handshakes_from_one_address_do_not_keep_users_out() {
    let limits = ConnLimits {
        max_connections: 64,
        max_pending_per_ip: 8,
        ..ConnLimits::default()
    };
    let (mut users, port, _stop) = server(SessionLimits::default(), limits).await;
    // 100 sockets from another loopback address that never say a word:
    // more than the server's connection limit.
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let s = TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        stalled.push(
            s.connect(format!("127.0.0.1:{port}").parse().unwrap())
                .await
                .unwrap(),
        );
    }
    let key = Keypair::from_seed([7; 32]);
    let mut ws = user(port, &key).await;
    wait_until("the user is in", || users.connections() == 1).await;
    // It is served: its input reaches the node.
    ws.send(Message::Binary(b"hello".to_vec())).await.unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), users.recv()).await;
    assert!(matches!(body, Ok(Some(_))), "the input reached the node");
    // Beyond the 8 in the handshake, the stalled sockets were closed.
    let mut closed = 0;
    for s in &mut stalled {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(
            Duration::from_millis(50),
            tokio::io::AsyncReadExt::read(s, &mut b),
        )
        .await
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 92,
        "only {closed} of the stalled sockets were closed"
    );
}

#[tokio::test]
async fn a_user_that_never_reads_cannot_grow_the_nodes_memory() {
    let limits = ConnLimits {
        out_queue_bytes: 2 << 20,
        out_total_bytes: 4 << 20,
        write_timeout: Duration::from_secs(1),
        ..ConnLimits::default()
    };
    let (mut users, port, _stop) = server(SessionLimits::default(), limits.clone()).await;
    let key = Keypair::from_seed([9; 32]);
    // Four connections of one user, none of which reads.
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(user(port, &key).await);
    }
    wait_until("all four are in", || users.connections() == 4).await;
    let run = RunResult {
        outcome: RunOutcome::Exited(Some(0)),
        outputs: BTreeMap::from([(key.public(), vec![b'x'; 512 << 10])]),
        io: UserIo::Raw,
    };
    // 32 MiB for each connection if nothing bounded it.
    for seq in 1..=64 {
        users.deliver(seq, &Hash([0; 32]), &run);
        assert!(
            users.queued_output_bytes() <= limits.out_total_bytes,
            "{} bytes queued after output {seq}",
            users.queued_output_bytes()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every connection was closed as too slow, and what it held went.
    wait_until("the slow connections are gone", || users.connections() == 0).await;
    wait_until("their queues are freed", || {
        users.queued_output_bytes() == 0
    })
    .await;
    drop(conns);
}

/// An output a connection is writing to a user that does not read stays
/// in the total until written: counted only while queued, each such
/// connection held one more output outside the bound for all
/// (`hotpocket bench-memory`: 40 connections took a node to 927 MiB).
#[tokio::test]
async fn outputs_being_written_count_against_the_total() {
    const OUT: usize = 8 << 20; // over what loopback buffers take unread
    let limits = ConnLimits {
        out_queue_bytes: 2 * OUT,
        out_total_bytes: 4 * OUT,
        write_timeout: Duration::from_secs(20),
        ..ConnLimits::default()
    };
    let (mut users, port, _stop) = server(SessionLimits::default(), limits).await;
    let key = Keypair::from_seed([11; 32]);
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(user(port, &key).await);
    }
    wait_until("all eight are in", || users.connections() == 8).await;
    let run = RunResult {
        outcome: RunOutcome::Exited(Some(0)),
        outputs: BTreeMap::from([(key.public(), vec![b'x'; OUT])]),
        io: UserIo::Raw,
    };
    // Four fit in the total; the others are closed.
    users.deliver(1, &Hash([0; 32]), &run);
    assert_eq!(users.connections(), 4);
    // Their outputs leave the queues for the sockets, where they stall,
    // and still count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(users.queued_output_bytes(), 4 * OUT);
    // So the next output fits nowhere: every connection is too slow.
    users.deliver(2, &Hash([0; 32]), &run);
    assert_eq!(users.connections(), 0);
    assert_eq!(users.queued_output_bytes(), 4 * OUT);
    // Gone with the connections.
    drop(conns);
    wait_until("the writes are given up", || {
        users.queued_output_bytes() == 0
    })
    .await;
}

#[tokio::test]
async fn a_message_too_big_to_buffer_gets_an_error_and_a_close_code() {
    let session = SessionLimits {
        max_message_bytes: 1000,
        ..SessionLimits::default()
    };
    let (_users, port, _stop) = server(session, ConnLimits::default()).await;
    let mut ws = user(port, &Keypair::from_seed([3; 32])).await;
    // Far over twice the limit: the websocket layer refuses to buffer it.
    ws.send(Message::Binary(vec![b'a'; 100_000])).await.unwrap();
    let mut error = None;
    let mut code = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        match m {
            Message::Text(t) => error = Some(t),
            Message::Close(f) => {
                code = f.map(|f| f.code);
                break;
            }
            _ => {}
        }
    }
    let error = error.expect("an error message before the close");
    assert!(error.contains("exceeds the 1000-byte limit"), "{error}");
    assert_eq!(code, Some(CloseCode::Size));
}

#[tokio::test]
async fn a_node_behind_on_its_runs_refuses_inputs_naming_each() {
    let (mut users, port, _stop) = server(SessionLimits::default(), ConnLimits::default()).await;
    let mut ws = user(port, &Keypair::from_seed([5; 32])).await;
    wait_until("the user is in", || users.connections() == 1).await;
    users.intake(false, 6);
    let input = b"set a 1\n".to_vec();
    ws.send(Message::Binary(input.clone())).await.unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("no answer");
    };
    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(v["type"], "error");
    assert!(
        v["error"].as_str().unwrap().contains("6 ledgers behind"),
        "{t}"
    );
    assert_eq!(v["input_sha256"], hex::encode(Sha256::digest(&input)));
    // Taken again once open: nothing comes back, the input went in.
    users.intake(true, 2);
    ws.send(Message::Binary(b"set a 2\n".to_vec()))
        .await
        .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), users.recv()).await;
    assert!(matches!(body, Ok(Some(_))), "the input reached the node");
}
