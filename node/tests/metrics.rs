//! A node's metrics endpoint and `hotpocket status`, on a real 3-node
//! network: what the operator scrapes moves with what the node does (a
//! user's input closes in a ledger, the contract runs, peers link up).
#![cfg(feature = "runtime")]
// Real processes on real time.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "support/cluster.rs"]
mod cluster;

use cluster::{node_dir, wait_for};
use hotpocket_node::cli::status;

const NODES: usize = 3;

/// `GET path` on the metrics endpoint: (status line, body).
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

#[test]
fn the_metrics_follow_a_users_input_through_consensus_and_status_shows_them() {
    // Peers, users, metrics: below Linux's ephemeral range, apart from the
    // other e2e tests' blocks.
    let base = cluster::free_block(5_000, 9);
    let metrics = base + 8;
    let contract = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/contracts/echo.py");
    let c = cluster::start_with("metrics", NODES, base, &contract, |cfg| {
        if cfg["peerport"] == base {
            cfg["metrics"] = format!("127.0.0.1:{metrics}").into();
        }
    });
    let scrape = || get(metrics, "/metrics").map(|(_, body)| status::parse(&body));
    let at = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    wait_for(
        "node 0's metrics show two peers and a closed ledger",
        Duration::from_secs(90),
        || {
            scrape().is_some_and(|m| {
                at(&m, "hotpocket_peers_connected") == 2.0 && at(&m, "hotpocket_lcl_seq") >= 1.0
            })
        },
    );

    // One input through node 0, as a user would send it; the client stays
    // until its output is read.
    let mut client = Command::new(env!("CARGO_BIN_EXE_hotpocket"))
        .args(["client", &format!("ws://127.0.0.1:{}", base + 5)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"ping\n").unwrap();
    let stdout = client.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let echoed = rx.recv_timeout(Duration::from_secs(60));
    let _ = client.kill();
    let _ = client.wait();
    assert!(
        echoed.as_ref().is_ok_and(|l| l.contains("bytes sha256")),
        "the user's output: {echoed:?}"
    );

    let mut last = BTreeMap::new();
    wait_for(
        "the input counted in node 0's metrics",
        Duration::from_secs(30),
        || {
            last = scrape().unwrap_or_default();
            at(&last, "hotpocket_inputs_closed_total") >= 1.0
                && at(&last, "hotpocket_user_messages_total{what=\"outputs\"}") >= 1.0
        },
    );
    // Exactly the one input, however often it is scraped.
    let again = scrape().unwrap();
    for k in [
        "hotpocket_user_messages_total{what=\"inputs\"}",
        "hotpocket_inputs_closed_total",
        "hotpocket_user_messages_total{what=\"outputs\"}",
    ] {
        assert_eq!((at(&last, k), at(&again, k)), (1.0, 1.0), "{k}: {again:#?}");
    }
    for k in [
        "hotpocket_ledgers_closed_total{via=\"consensus\"}",
        "hotpocket_contract_run_seconds_count{phase=\"run\"}",
        "hotpocket_proposals_accepted_total",
        "hotpocket_intake_open",
        "hotpocket_synced",
    ] {
        assert!(at(&again, k) >= 1.0, "{k} below 1: {again:#?}");
    }
    assert_eq!(at(&last, "hotpocket_forks_seen_total"), 0.0);

    let (status, _) = get(metrics, "/nothing").unwrap();
    assert!(status.contains("404"), "{status}");

    let shown = Command::new(env!("CARGO_BIN_EXE_hotpocket"))
        .arg("status")
        .arg(node_dir(&c.root, 0))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}");
    assert!(
        text.contains(&format!("running (metrics at 127.0.0.1:{metrics})")),
        "{text}"
    );
    assert!(text.contains("peers connected 2"), "{text}");
    assert!(text.contains("3 members (this node votes)"), "{text}");
    // Another node has no endpoint: status says what it can from disk.
    let other = Command::new(env!("CARGO_BIN_EXE_hotpocket"))
        .arg("status")
        .arg(node_dir(&c.root, 1))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&other.stdout);
    assert!(text.contains("sets no `metrics` address"), "{text}");
    assert!(text.contains("(on disk)"), "{text}");
}
