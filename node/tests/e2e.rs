//! End to end, with real processes on loopback: five `hotpocket run` nodes
//! with the Python example contract; a user written from the seed README
//! alone (sign the challenge string, send helo, send inputs) gets outputs;
//! every node's SQLite ledger agrees; after a SIGKILL the rest keep closing
//! ledgers; a peer whose key is not in the UNL is refused.
#![cfg(feature = "runtime")]
// Real processes on real time.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use futures_util::{SinkExt, StreamExt};

use hotpocket_node::crypto::Keypair;
use hotpocket_node::real::peers::{connect, PeerTls};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

#[path = "support/cluster.rs"]
mod cluster;

use cluster::{head, ledger, node_dir, wait_for, Cluster};

const NODES: usize = 5;

/// Ports from the process id, so parallel test runs rarely collide.
fn base_port() -> u16 {
    20_000 + (std::process::id() % 2_000) as u16 * 10
}

fn start() -> Cluster {
    let contract = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/contracts/echo.py");
    cluster::start("e2e", NODES, base_port(), &contract, "")
}

/// A user exactly as the seed README describes one.
async fn user_session(port: u16, inputs: &[&str]) -> Vec<String> {
    let url = format!("ws://127.0.0.1:{port}");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // The node offers hpcore's `user_challenge` first (a binary frame, which
    // this user, like the prototype's client, ignores); a user that says
    // nothing is sent the `public_challenge` it waits for.
    let hello = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("public_challenge") => return t,
                Some(Ok(_)) => continue,
                other => panic!("no challenge: {other:?}"),
            }
        }
    })
    .await
    .expect("a public_challenge within 5 s");
    let v: serde_json::Value = serde_json::from_str(&hello).unwrap();
    assert_eq!(v["type"], "public_challenge");
    let challenge = v["challenge"].as_str().unwrap().to_string();
    let seed = [77u8; 32];
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    use ed25519_dalek::Signer;
    let sig = signing.sign(challenge.as_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let helo = serde_json::json!({
        "type": "helo",
        "pubkey": hex::encode(signing.verifying_key().to_bytes()),
        "sig": hex::encode(sig.to_bytes()),
        "challenge": challenge,
        "timestamp": now,
    });
    ws.send(Message::Text(helo.to_string())).await.unwrap();
    let mut outputs = Vec::new();
    for input in inputs {
        ws.send(Message::Binary(input.as_bytes().to_vec()))
            .await
            .unwrap();
        // One input per ledger: wait for its certified output.
        let got = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => return String::from_utf8(b).unwrap(),
                    Some(Ok(Message::Text(t))) => panic!("node said: {t}"),
                    Some(Ok(_)) => continue,
                    other => panic!("connection ended: {other:?}"),
                }
            }
        })
        .await
        .expect("an output within 20 s");
        outputs.push(got);
    }
    outputs
}

/// Handshakes, then sends one message over `pubmaxsize`; returns the
/// node's answer and whether it closed the connection after.
async fn oversized(port: u16) -> (String, bool) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}"))
        .await
        .unwrap();
    let Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) = ws.next().await else {
        panic!("no challenge")
    };
    let hello = m.into_text().unwrap();
    let key = Keypair::from_seed([78; 32]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let helo = hotpocket_node::users::answer_challenge(&key, &hello, now).unwrap();
    ws.send(Message::Text(helo)).await.unwrap();
    ws.send(Message::Binary(vec![b'x'; (1 << 20) + 1]))
        .await
        .unwrap();
    let err = match ws.next().await {
        Some(Ok(Message::Text(t))) => t,
        other => panic!("expected an error, got {other:?}"),
    };
    let closed = matches!(
        ws.next().await,
        Some(Ok(Message::Close(_))) | None | Some(Err(_))
    );
    (err, closed)
}

#[test]
fn a_five_node_cluster_serves_users_agrees_and_survives_a_kill() {
    let mut cluster = start();
    let dirs: Vec<PathBuf> = (0..NODES).map(|i| node_dir(&cluster.root, i)).collect();
    wait_for(
        "every node to close ledgers",
        Duration::from_secs(60),
        || dirs.iter().all(|d| head(d) >= 3),
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outputs = rt.block_on(user_session(base_port() + 5, &["hello", "world!"]));
    // echo.py answers "<n> bytes sha256 <hex> ... count <users answered so far>".
    assert!(outputs[0].starts_with("5 bytes sha256 "), "{outputs:?}");
    assert!(outputs[1].starts_with("6 bytes sha256 "), "{outputs:?}");
    assert!(outputs[1].trim_end().ends_with("count 2"), "{outputs:?}");

    // A user over the size limit gets a clear error and a close; the node
    // keeps serving everyone else.
    let (err, closed) = rt.block_on(oversized(base_port() + 6));
    assert!(err.contains("exceeds the 1048576-byte limit"), "{err}");
    assert!(closed);
    let again = rt.block_on(user_session(base_port() + 6, &["again"]));
    assert!(again[0].starts_with("5 bytes sha256 "), "{again:?}");

    // Every node's SQLite ledger holds the same hashes.
    let target = dirs.iter().map(|d| head(d)).max().unwrap();
    wait_for(
        "every node to reach the head",
        Duration::from_secs(30),
        || dirs.iter().all(|d| head(d) >= target),
    );
    let first: Vec<_> = ledger(&dirs[0])
        .into_iter()
        .filter(|l| l.0 <= target)
        .collect();
    assert_eq!(first.len() as i64, target);
    for d in &dirs[1..] {
        let other: Vec<_> = ledger(d).into_iter().filter(|l| l.0 <= target).collect();
        assert_eq!(other, first, "{}", d.display());
    }

    // A peer whose key is not in the UNL is refused, and the node says so.
    rt.block_on(async {
        let rogue = Keypair::from_seed([200; 32]);
        let unl: Vec<_> = (1..=NODES as u8)
            .map(|n| Keypair::from_seed([n; 32]).public())
            .collect();
        // Over TLS as the node speaks it, the rogue's certificate is refused
        // before any handshake (TLS 1.3 lets the client finish first: the
        // node then closes the link unread). First, so it is the refusal
        // the node's throttled warning names.
        let tls = PeerTls::new(&rogue, &unl).unwrap();
        let at = format!("127.0.0.1:{}", base_port());
        if let Ok((mut s, _)) = connect(&at, Some(&tls)).await {
            let mut b = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
            assert!(
                matches!(read, Ok(Ok(0) | Err(_))),
                "a non-UNL certificate was taken"
            );
        }
    });
    wait_for(
        "the refusal in node 0's log",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(dirs[0].join("node.log"))
                .unwrap_or_default()
                .contains("not in the UNL")
        },
    );

    // SIGKILL one node while inputs flow: the other four (80%) keep
    // closing ledgers, and the inputs keep being answered.
    let flow = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(user_session(base_port() + 7, &["a", "bb", "ccc", "dddd"]))
    });
    std::thread::sleep(Duration::from_millis(1500));
    cluster.children[4].kill().unwrap();
    cluster.children[4].wait().unwrap();
    let at_kill = head(&dirs[0]);
    wait_for("ledgers after the kill", Duration::from_secs(30), || {
        dirs[..4].iter().all(|d| head(d) >= at_kill + 5)
    });
    let answered = flow.join().unwrap();
    assert_eq!(answered.len(), 4, "{answered:?}");

    // Restarted, it catches up the ledgers it missed and, as it is more
    // than `state_sync_gap` behind, fetches the contract state they left
    // from its peers instead of running them; it ends with the same ledger
    // and the same contract state.
    let cfg_path = dirs[4].join("cfg/hp.cfg");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["state_sync_gap"] = 2.into();
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(dirs[4].join("node.log"))
        .unwrap();
    cluster.children[4] = Command::new(env!("CARGO_BIN_EXE_hotpocket"))
        .arg("run")
        .arg(&dirs[4])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let target = head(&dirs[0]) + 2;
    wait_for(
        "the restarted node to catch up",
        Duration::from_secs(60),
        || head(&dirs[4]) >= target,
    );
    // Adopting ledgers is quick; running them takes a contract run each.
    let ran = |d: &Path| -> i64 {
        let text = std::fs::read_to_string(d.join("state.ran")).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["latest"]["seq"].as_i64())
            .unwrap_or(0)
    };
    wait_for(
        "the restarted node to run what it missed",
        Duration::from_secs(60),
        || ran(&dirs[4]) >= target && ran(&dirs[0]) >= target,
    );
    let common = |d: &Path| -> Vec<(i64, String)> {
        ledger(d).into_iter().filter(|l| l.0 <= target).collect()
    };
    assert_eq!(common(&dirs[4]), common(&dirs[0]));
    let state = |d: &Path| {
        hotpocket_node::real::state_dir::scan(&d.join("state"))
            .unwrap()
            .hash()
    };
    // No inputs flow now, so every node that ran the same ledgers holds the
    // same state.
    assert_eq!(state(&dirs[4]), state(&dirs[0]));
    let log = std::fs::read_to_string(dirs[4].join("node.log")).unwrap();
    assert!(
        log.contains("contract state fetched and installed"),
        "node 4 ran the ledgers it missed instead of fetching the state"
    );
}
