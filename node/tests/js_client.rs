//! hpcore's user protocol as `users::hp` and `users::hp_outputs` write it,
//! judged by the official client library (npm `hotpocket-js-client` 0.5.7,
//! unchanged, in `fixtures/js-client`): a websocket server made of those two
//! modules alone answers the client's handshake, `stat`, `lcl`, input and
//! ledger query, and sends an output proved by signatures of some of a UNL.
//! The client's own checks decide: the handshake signatures, the input's
//! signature and name, and whether 80% of the UNL it was given signed the
//! root its output folds to.
//!
//! Then the same client against real `hotpocket run` processes: an input
//! through consensus, its status once its ledger is final, and its output
//! with the node's proof. Needs Node.js and npm (CI installs them).
#![cfg(feature = "runtime")]
// Real processes on real time.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use futures_util::{SinkExt, StreamExt};
use hotpocket_node::contract::{leaf, output_text, OutputTree};
use hotpocket_node::contract::{runnable, RunOutcome, RunResult, UserIo};
use hotpocket_node::crypto::{Hash, Keypair, PubKey};
use hotpocket_node::ledger::LedgerId;
use hotpocket_node::users::hp::{self, HpNode, Request, View};
use hotpocket_node::users::hp_outputs::contract_output;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const CONTRACT: &str = "5ac9a1f0-js-client-check";

fn client_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/js-client");
    // Once for all the tests here: `npm ci` starts by removing
    // node_modules, under any client another test is running.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if !dir.join("node_modules/hotpocket-js-client").exists() {
        // Nothing in the library compiles; its blake3 install script only
        // tries a download it can do without (it falls back to WASM).
        let ok = Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "`npm ci` failed in {}: install Node.js and npm",
            dir.display()
        );
    }
    dir
}

/// What the server saw of the client.
#[derive(Debug, Default)]
struct Seen {
    user: Option<PubKey>,
    inputs: Vec<Vec<u8>>,
}

/// Serves one client: `unl` is what the node reports (the first key is
/// the node's own), `signers` how many of them sign the output root.
async fn serve(listener: TcpListener, unl: Vec<Keypair>, signers: usize) -> Seen {
    let mut seen = Seen::default();
    let (stream, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
    let node = HpNode {
        key: unl[0].clone(),
        contract_id: CONTRACT.into(),
        contract_version: "1.0".into(),
        unl: unl.iter().map(Keypair::public).collect(),
    };
    let mut view = View {
        lcl: LedgerId {
            seq: 7,
            hash: Hash([7; 32]),
        },
        vote_status: "synced",
        roundtime_ms: 1000,
        read_requests: true,
    };
    let challenge = "c0ffee00c0ffee00c0ffee00c0ffee00";
    let bin = |s: String| Message::Binary(s.into_bytes());
    ws.send(bin(hp::user_challenge(&node, challenge)))
        .await
        .unwrap();
    let mut user = None;
    while let Some(Ok(m)) = ws.next().await {
        let bytes = match m {
            Message::Text(t) => t.into_bytes(),
            Message::Binary(b) => b,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some(who) = user else {
            let (who, answer) = hp::accept_user(&node, challenge, &bytes).expect("a good response");
            ws.send(bin(answer)).await.unwrap();
            (user, seen.user) = (Some(who), Some(who));
            continue;
        };
        let answer = match hp::request(who, &bytes) {
            Ok(Request::Stat) => hp::stat_response(&node, &view),
            Ok(Request::Lcl) => hp::lcl_response(&view),
            Ok(Request::LedgerQuery(q)) => {
                let none = Err(hotpocket_node::users::hp_ledger::QueryError::NotSupported);
                hotpocket_node::users::hp_ledger::result(&q, &who, none)
            }
            Ok(Request::Subscribe { .. }) => continue,
            Ok(Request::Read { id, content }) => {
                hp::read_response(&id, Ok(format!("read: {content}").as_bytes()))
            }
            Err(refused) => hp::rejected(&refused),
            Ok(Request::Input {
                signed,
                container,
                hash,
            }) => {
                if let Err(reason) = hp::check_max_ledger(container.max_ledger_seq_no, view.lcl.seq)
                {
                    ws.send(bin(hp::rejected(&hp::Refused { reason, hash })))
                        .await
                        .unwrap();
                    continue;
                }
                // The ledger holding it closes, and the one after it.
                let body = signed.encode();
                let seq = view.lcl.seq + 1;
                seen.inputs
                    .push(runnable(&body, seq, true).expect("runs").payload);
                let ledger = LedgerId {
                    seq,
                    hash: Hash([seq as u8; 32]),
                };
                view.lcl = ledger;
                ws.send(bin(hp::accepted(&hash, ledger))).await.unwrap();
                let out = format!("echo: {}", container.input).into_bytes();
                ws.send(bin(output(&unl, signers, who, out, ledger)))
                    .await
                    .unwrap();
                continue;
            }
        };
        ws.send(bin(answer)).await.unwrap();
    }
    seen
}

/// The run of `ledger` gave `out` to `user` and something to 20 others.
fn output(unl: &[Keypair], signers: usize, user: PubKey, out: Vec<u8>, ledger: LedgerId) -> String {
    let mut outputs: BTreeMap<PubKey, Vec<u8>> = (0..20u8)
        .map(|i| (PubKey([i; 32]), format!("to {i}").into_bytes()))
        .collect();
    outputs.insert(user, out.clone());
    let run = RunResult {
        outcome: RunOutcome::Exited(Some(0)),
        outputs,
        io: UserIo::Raw,
    };
    let tree = OutputTree::of(&run, ledger.seq, &ledger.hash);
    let text = vec![output_text(&out)];
    let mine = leaf(&user, &text);
    let sigs: Vec<_> = (unl[..signers].iter())
        .map(|k| (k.public(), tree.sign(k)))
        .collect();
    let view = tree.for_user(&mine).expect("the user has a leaf");
    contract_output(ledger.seq, &ledger.hash, &text, &mine, view, &sigs)
}

/// Runs `check.js` with `args`: its exit code and its JSON lines.
async fn run_client(args: [String; 3]) -> (i32, Vec<Value>) {
    let dir = client_dir();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("check.js")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    // The library logs its errors ("Output validation failed.") to stdout
    // among the script's JSON lines.
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(code, 3, "the client library threw: {lines:?}");
    (code, lines)
}

/// Runs the client against a server of `unl` with `signers` signing;
/// returns its exit code, its lines and what the server saw.
async fn check(
    unl: Vec<Keypair>,
    signers: usize,
    trusted: &PubKey,
    id: &str,
) -> (i32, Vec<Value>, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(serve(listener, unl, signers));
    let (code, lines) = run_client([url, hp::ed_hex(trusted), id.to_string()]).await;
    let seen = if code == 1 {
        server.abort();
        Seen::default()
    } else {
        tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("the client closed")
            .unwrap()
    };
    (code, lines, seen)
}

fn line<'a>(lines: &'a [Value], key: &str) -> &'a Value {
    let found = lines.iter().find(|l| l.get(key).is_some());
    &found.unwrap_or_else(|| panic!("no {key} in {lines:?}"))[key]
}

fn keys(n: u8) -> Vec<Keypair> {
    (1..=n).map(|i| Keypair::from_seed([i; 32])).collect()
}

#[tokio::test]
async fn the_official_client_accepts_the_handshake_statuses_and_a_proved_output() {
    let unl = keys(5);
    let me = unl[0].public();
    let (code, lines, seen) = check(unl.clone(), 4, &me, CONTRACT).await;
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(line(&lines, "connect"), true);
    let stat = line(&lines, "stat");
    assert_eq!(stat["ledgerSeqNo"], 7, "{stat}");
    assert_eq!(
        stat["currentUnl"].as_array().map(Vec::len),
        Some(5),
        "{stat}"
    );
    assert_eq!(line(&lines, "lcl")["ledgerSeqNo"], 7);
    let status = line(&lines, "status");
    assert_eq!(status["status"], "accepted", "{status}");
    assert_eq!(status["ledgerSeqNo"], 8, "{status}");
    let outputs = line(&lines, "outputs");
    assert_eq!(
        outputs[0]["outputs"][0], "echo: hello from js\n",
        "{outputs}"
    );
    assert_eq!(line(&lines, "ledger"), &Value::Null);
    assert_eq!(line(&lines, "read"), "read: read from js");
    // The user the client made, and the input it signed, as the UNL runs it.
    let user = line(&lines, "user").as_str().unwrap();
    assert_eq!(
        Some(user.trim_start_matches("ed")),
        seen.user.map(|u| u.to_hex()).as_deref()
    );
    assert_eq!(seen.inputs, vec![b"hello from js\n".to_vec()]);
}

#[tokio::test]
async fn an_output_signed_by_less_than_80_percent_of_the_unl_is_dropped_by_the_client() {
    let unl = keys(5);
    let me = unl[0].public();
    let (code, lines, _) = check(unl, 3, &me, CONTRACT).await;
    assert_eq!(code, 2, "{lines:?}");
    assert_eq!(line(&lines, "status")["status"], "accepted");
    assert_eq!(line(&lines, "outputs"), &Value::Array(vec![]));
}

#[tokio::test]
async fn a_one_node_unl_proves_its_outputs_with_its_own_signature() {
    let unl = keys(1);
    let me = unl[0].public();
    let (code, lines, _) = check(unl, 1, &me, CONTRACT).await;
    assert_eq!(code, 0, "{lines:?}");
}

#[tokio::test]
async fn the_client_refuses_a_node_it_does_not_trust_or_another_contract() {
    let unl = keys(3);
    let stranger = Keypair::from_seed([99; 32]).public();
    let (code, lines, _) = check(unl.clone(), 3, &stranger, CONTRACT).await;
    assert_eq!((code, line(&lines, "connect")), (1, &Value::Bool(false)));
    let me = unl[0].public();
    let (code, _, _) = check(unl, 3, &me, "another-contract").await;
    assert_eq!(code, 1);
}

#[path = "support/cluster.rs"]
mod cluster;

/// Ports from the process id, below the ephemeral range (32 768 on):
/// the tests beside these bind port 0 and connect while they run.
fn base_port(offset: u16) -> u16 {
    21_000 + (std::process::id() % 500) as u16 * 20 + offset
}

fn echo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/contracts/echo.py")
}

#[tokio::test]
async fn the_official_client_gets_a_status_and_a_proved_output_from_a_real_node() {
    let base = base_port(0);
    let _net = cluster::start("js-one", 1, base, &echo(), "");
    let url = format!("ws://127.0.0.1:{}", base + 5);
    let me = hp::ed_hex(&cluster::node_key(0).public());
    let (code, lines) = run_client([url, me, "-".into()]).await;
    assert_eq!(code, 0, "{lines:?}");
    let status = line(&lines, "status");
    assert_eq!(status["status"], "accepted", "{status}");
    assert!(status["ledgerSeqNo"].as_u64() > Some(0), "{status}");
    let stat = line(&lines, "stat");
    assert_eq!(
        stat["currentUnl"].as_array().map(Vec::len),
        Some(1),
        "{stat}"
    );
    // echo.py answers "<n> bytes sha256 <hex> ...": the client checked
    // the node's signature over the tree its output folds to.
    let out = line(&lines, "outputs")[0]["outputs"][0]
        .as_str()
        .unwrap_or_default();
    assert!(out.contains("bytes sha256"), "{lines:?}");
    // The ledger the status names, from the node's stored chain, with the
    // user's own input in it under the name its client gave it.
    let ledger = line(&lines, "ledger");
    assert_eq!(ledger["seqNo"], status["ledgerSeqNo"], "{ledger}");
    assert_eq!(ledger["hash"], status["ledgerHash"], "{ledger}");
    let inputs = ledger["inputs"].as_array().expect("inputs asked for");
    assert_eq!(inputs.len(), 1, "{ledger}");
    assert_eq!(inputs[0]["hash"], line(&lines, "input").clone(), "{ledger}");
    assert_eq!(
        inputs[0]["blob"],
        hex::encode("hello from js\n"),
        "{ledger}"
    );
    // Ledgers as they closed, from the subscription made on connecting.
    let created = line(&lines, "ledgerEvents");
    assert!(created["created"].as_u64() > Some(0), "{created}");
    assert_eq!(created["first"]["event"], "ledger_created", "{created}");
    assert!(
        created["first"]["ledger"]["seqNo"].as_u64() > Some(0),
        "{created}"
    );
    // The read ran the contract on the node's state after that ledger.
    use sha2::Digest;
    let read = line(&lines, "read").as_str().unwrap_or_default();
    let digest = hex::encode(sha2::Sha256::digest(b"read from js"));
    assert!(
        read.starts_with(&format!("12 bytes sha256 {digest}")),
        "{read}"
    );
    let stat = line(&lines, "stat");
    assert_eq!(stat["readRequestsEnabled"], true, "{stat}");
}

#[tokio::test]
async fn on_three_nodes_the_client_takes_outputs_the_whole_unl_signed() {
    let base = base_port(10);
    let net = cluster::start("js-three", 3, base, &echo(), "");
    // Over TLS: the certificate `hotpocket cluster` made, self-signed,
    // which the client takes (the test above uses plain ws, same port).
    let url = format!("wss://127.0.0.1:{}", base + 5);
    // Trusting node 0 alone, the client trusts the UNL it reports and takes
    // only outputs that 80% of it signed: all three nodes' signatures.
    let me = hp::ed_hex(&cluster::node_key(0).public());
    let (code, lines) = run_client([url, me, "-".into()]).await;
    assert_eq!(code, 0, "no output passed the client's check: {lines:?}");
    let status = line(&lines, "status");
    assert_eq!(status["status"], "accepted", "{status}");
    let seq = status["ledgerSeqNo"].as_i64().unwrap();
    let hash = status["ledgerHash"].as_str().unwrap().to_string();
    // The ledger the status names is the one every node holds at that seq.
    for i in 0..3 {
        let dir = cluster::node_dir(&net.root, i);
        let found = cluster::ledger(&dir).into_iter().find(|(s, _)| *s == seq);
        assert_eq!(found.map(|(_, h)| h), Some(hash.clone()), "node {i}");
    }
    let outputs = &line(&lines, "outputs")[0];
    assert_eq!(outputs["ledgerSeqNo"].as_i64(), Some(seq), "{outputs}");
    let out = outputs["outputs"][0].as_str().unwrap_or_default();
    assert!(out.contains("bytes sha256"), "{lines:?}");
}

#[tokio::test]
async fn with_prototype_users_off_the_official_client_works_and_a_helo_is_refused() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let base = base_port(2);
    let _net = cluster::start_with("js-signed", 1, base, &echo(), |cfg| {
        cfg["prototype_users"] = false.into();
    });
    let url = format!("ws://127.0.0.1:{}", base + 5);
    let me = hp::ed_hex(&cluster::node_key(0).public());
    let (code, lines) = run_client([url.clone(), me, "-".into()]).await;
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(line(&lines, "status")["status"], "accepted");

    // The prototype's client waits for its challenge, which never comes;
    // a helo answering hpcore's is refused, saying why.
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let first = ws.next().await.unwrap().unwrap().into_data();
    let quiet = tokio::time::timeout(std::time::Duration::from_secs(3), ws.next()).await;
    assert!(quiet.is_err(), "offered something more: {quiet:?}");
    let user = Keypair::from_seed([42; 32]);
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let helo =
        hotpocket_node::users::answer_challenge(&user, std::str::from_utf8(&first).unwrap(), now_s)
            .unwrap();
    ws.send(Message::Text(helo)).await.unwrap();
    let answer = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(answer.contains("prototype's sessions are off"), "{answer}");
}
