//! End to end over the node party line, with real processes on loopback:
//! five `hotpocket run` nodes run the multisig example contract
//! (`fixtures/multisig-contract`). A user's input comes back signed by
//! every node's contract, each signature checked here against the contract
//! key its node derives (`Keypair::contract_seed`). After a SIGKILL the
//! four left (80% of the UNL, what closing a ledger takes) go on, and the
//! next input comes back with their four signatures.
//!
//! Five nodes, not four: with four, one killed leaves 75%, under the close
//! threshold, and no ledger could close after the kill.
#![cfg(feature = "runtime")]
// Real processes on real time.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use futures_util::{SinkExt, StreamExt};

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[path = "support/cluster.rs"]
mod cluster;

use cluster::{head, node_dir, node_key, wait_for, Cluster};

const NODES: usize = 5;

/// How long each contract waits for the other nodes' signatures. Well
/// under a round, well over a loopback hop, even on a loaded machine.
const SIGN_TIMEOUT_MS: u64 = 400;

/// The multisig contract's binary, built now with the cargo running this
/// test. A test can only name its own package's binaries
/// (`CARGO_BIN_EXE_*`) and cargo has no stable way to depend on another
/// package's, so this asks cargo for it: in the same workspace and target
/// directory (cargo reads `CARGO_TARGET_DIR` and the config as the outer
/// build did), a no-op when it is up to date. Cargo names the file it made
/// in its JSON messages, so no path is guessed. (Run with `--target-dir`
/// on the command line, the outer build's directory is not known here;
/// the contract is then built into the default one.)
fn multisig_binary() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "hotpocket-multisig-contract",
            "--bin",
            "multisig-contract",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "building multisig-contract failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact" && m["target"]["name"] == "multisig-contract"
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the multisig-contract executable")
}

/// Ports from the process id, so parallel test runs rarely collide (and
/// not where e2e.rs puts its own).
fn base_port() -> u16 {
    40_000 + (std::process::id() % 2_000) as u16 * 10
}

fn start(contract: &Path) -> Cluster {
    // Every node shares the contract's arguments, as they must.
    let args = format!("--timeout-ms {SIGN_TIMEOUT_MS}");
    cluster::start("e2e-multisig", NODES, base_port(), contract, &args)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A user as the seed README describes one; returns the socket and the
/// user's key as the contract sees it (lower-case hex).
async fn connect(port: u16) -> (Ws, String) {
    let url = format!("ws://127.0.0.1:{port}");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) = ws.next().await else {
        panic!("no challenge")
    };
    let hello = m.into_text().unwrap();
    let v: serde_json::Value = serde_json::from_str(&hello).unwrap();
    let challenge = v["challenge"].as_str().unwrap().to_string();
    let signing = SigningKey::from_bytes(&[77u8; 32]);
    use ed25519_dalek::Signer;
    let sig = signing.sign(challenge.as_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let pubkey = hex::encode(signing.verifying_key().to_bytes());
    let helo = serde_json::json!({
        "type": "helo",
        "pubkey": pubkey,
        "sig": hex::encode(sig.to_bytes()),
        "challenge": challenge,
        "timestamp": now,
    });
    ws.send(Message::Text(helo.to_string())).await.unwrap();
    (ws, pubkey)
}

/// Sends one input and waits for its certified output, or for the notice
/// that it was not certified (Err).
async fn ask(ws: &mut Ws, input: &str) -> Result<serde_json::Value, String> {
    ws.send(Message::Binary(input.as_bytes().to_vec()))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => return Ok(b),
                Some(Ok(Message::Text(t))) if t.contains(r#""uncertified""#) => return Err(t),
                Some(Ok(Message::Text(t))) => panic!("node said: {t}"),
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("an output within 30 s")?;
    Ok(serde_json::from_slice(&got).unwrap_or_else(|e| {
        panic!(
            "output is not JSON ({e}): {}",
            String::from_utf8_lossy(&got)
        )
    }))
}

/// The contract's digest, from its documented formula: a domain, the
/// ledger seq, then each user's key and input, length-prefixed.
fn digest(seq: u64, user: &str, input: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"hotpocket-multisig/1\0");
    h.update(seq.to_be_bytes());
    h.update((user.len() as u64).to_be_bytes());
    h.update(user.as_bytes());
    h.update((input.len() as u64).to_be_bytes());
    h.update(input);
    h.finalize().into()
}

/// The output is over the right digest, and signed only by nodes among
/// `nodes`, at most once each, in node key order, each with the contract
/// key its node derives, every signature verifying. Returns how many
/// signed.
fn check(out: &serde_json::Value, user: &str, input: &str, nodes: &[usize]) -> usize {
    let seq = out["seq"].as_u64().expect("a seq");
    let want = digest(seq, user, input.as_bytes());
    assert_eq!(out["digest"], hex::encode(want), "{out}");
    let sigs = out["signatures"].as_array().expect("signatures");
    let contract_key = |node: &str| -> Option<VerifyingKey> {
        let i = nodes
            .iter()
            .find(|&&i| node_key(i).public().to_hex() == node)?;
        Some(SigningKey::from_bytes(&node_key(*i).contract_seed()).verifying_key())
    };
    let mut signers: Vec<&str> = Vec::new();
    for s in sigs {
        let node = s["node"].as_str().expect("a node key");
        let contract = contract_key(node)
            .unwrap_or_else(|| panic!("{node} is not one of the nodes expected: {out}"));
        assert_eq!(s["key"], hex::encode(contract.to_bytes()), "{out}");
        let sig: [u8; 64] = hex::decode(s["sig"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        contract
            .verify_strict(&want, &Signature::from_bytes(&sig))
            .unwrap_or_else(|e| panic!("{node}'s signature does not verify: {e}"));
        signers.push(node);
    }
    assert!(
        signers.windows(2).all(|w| w[0] < w[1]),
        "sorted by node key, one each: {out}"
    );
    signers.len()
}

/// Sends `label-0`, `label-1`, ... until an output comes back signed by
/// every one of `nodes`; every output on the way must pass `check`.
///
/// Why more than one try: each copy of the contract waits at most
/// `SIGN_TIMEOUT_MS` for the others (the NPL design), so a node whose run starts
/// that much late (a loaded machine) misses some signatures or has its own
/// missed; copies then differ, and the ledger certifies what a threshold
/// agreed (fewer signatures) or, with no slack left, nothing (an
/// "uncertified" notice). The design makes that possible, never likely:
/// three misses in a row fail the test.
fn signed_by_all(
    rt: &tokio::runtime::Runtime,
    ws: &mut Ws,
    user: &str,
    label: &str,
    nodes: &[usize],
) -> serde_json::Value {
    let mut misses = Vec::new();
    for i in 0..3 {
        let input = format!("{label}-{i}");
        match rt.block_on(ask(ws, &input)) {
            Ok(out) if check(&out, user, &input, nodes) == nodes.len() => return out,
            Ok(out) => misses.push(format!("{input}: {out}")),
            Err(notice) => misses.push(format!("{input}: {notice}")),
        }
        eprintln!("not signed by all of {nodes:?}: {}", misses.last().unwrap());
    }
    panic!("three inputs in a row not signed by all of {nodes:?}: {misses:#?}")
}

#[test]
fn five_nodes_multisign_an_input_and_go_on_after_a_kill() {
    let binary = multisig_binary();
    let mut cluster = start(&binary);
    let dirs: Vec<PathBuf> = (0..NODES).map(|i| node_dir(&cluster.root, i)).collect();
    wait_for(
        "every node to close ledgers",
        Duration::from_secs(60),
        || dirs.iter().all(|d| head(d) >= 2),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut ws, user) = rt.block_on(connect(base_port() + 5));
    let first = signed_by_all(&rt, &mut ws, &user, "first", &[0, 1, 2, 3, 4]);

    // SIGKILL node 4 at whatever point of a round it is.
    std::thread::sleep(Duration::from_millis(350));
    cluster.children[4].kill().unwrap();
    cluster.children[4].wait().unwrap();
    let at_kill = head(&dirs[0]);
    wait_for("ledgers after the kill", Duration::from_secs(30), || {
        dirs[..4].iter().all(|d| head(d) >= at_kill + 2)
    });
    // Every copy waits the full timeout for node 4, then signs off with
    // the four it heard: the same four everywhere, so the output is
    // certified.
    let second = signed_by_all(&rt, &mut ws, &user, "second", &[0, 1, 2, 3]);
    assert!(second["seq"].as_u64() > first["seq"].as_u64());
}
