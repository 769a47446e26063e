//! `hotpocket client --protocol hpcore` against a real node over wss: it
//! proves the node's key, signs an input and shows its status, prints the
//! output only once its proof holds, and runs a read.
#![cfg(feature = "runtime")]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "support/cluster.rs"]
mod cluster;

use hotpocket_node::users::hp::ed_hex;
use sha2::Digest;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn base_port() -> u16 {
    // Below Linux's ephemeral range, apart from the other e2e tests'.
    12_000 + (std::process::id() % 1_000) as u16 * 10
}

/// Runs the client with `args` and `stdin`: exit code, stdout, stderr.
fn client(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hotpocket"))
        .arg("client")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn the_hpcore_client_signs_inputs_checks_outputs_and_reads_over_wss() {
    let base = base_port();
    let echo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/contracts/echo.py");
    let _net = cluster::start("client-hp", 1, base, &echo, "");
    let url = format!("wss://127.0.0.1:{}", base + 5);
    cluster::wait_for("the user port", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", base + 5)).is_ok()
    });
    let node = ed_hex(&cluster::node_key(0).public());
    let trusted = ["--protocol", "hpcore", "--trust", &node, "--linger", "6"];
    let args: Vec<&str> = trusted.iter().copied().chain([url.as_str()]).collect();
    let (code, out, err) = client(&args, "hello\n/read q\n/stat\n");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("connected to node {node}")), "{err}");
    assert!(err.contains("accepted in ledger"), "{err}");
    // echo.py answers "<n> bytes sha256 <hex> ...": the input's, once 80%
    // of the UNL signed it, and the read's.
    let digest = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    assert!(
        out.contains(&format!("6 bytes sha256 {}", digest(b"hello\n"))),
        "{out}\n{err}"
    );
    assert!(
        out.contains(&format!("1 bytes sha256 {}", digest(b"q"))),
        "{out}\n{err}"
    );
    assert!(err.contains("\"type\":\"stat_response\""), "{err}");

    // A node it was not told to trust is refused at the handshake.
    let stranger = ed_hex(&cluster::node_key(7).public());
    let args = ["--protocol", "hpcore", "--trust", &stranger, &url];
    let (code, _, err) = client(&args, "");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not one of the keys trusted here"), "{err}");
}

/// `user_io: framed`: each input reaches the contract as one message and
/// each message it writes reaches the user as one output, through the
/// UNL's signatures; a read is one message each way too.
/// Waits for a one-node cluster's user port: its wss URL.
fn user_port(base: u16) -> String {
    cluster::wait_for("the user port", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", base + 5)).is_ok()
    });
    format!("wss://127.0.0.1:{}", base + 5)
}

/// The hpcore client on `url`, trusting node 0, lingering for outputs.
fn trusting_node_0(url: &str, stdin: &str) -> (i32, String, String) {
    let node = ed_hex(&cluster::node_key(0).public());
    let args = [
        "--protocol",
        "hpcore",
        "--trust",
        &node,
        "--linger",
        "6",
        url,
    ];
    client(&args, stdin)
}

#[test]
fn framed_user_io_keeps_message_boundaries() {
    let base = base_port() + 2_000;
    let echo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/contracts/echo.py");
    let _net = cluster::start_with("client-hp-framed", 1, base, &echo, |cfg| {
        cfg["user_io"] = "framed".into();
    });
    let url = user_port(base);
    let (code, out, err) = trusting_node_0(&url, "hello\nworld!\n/read q\n");
    assert_eq!(code, 0, "{err}");
    // echo.py answers each message "message <n> of <len> bytes ...": one
    // answer an input (both may share a ledger), and one for the read.
    let answers: Vec<&str> = out.lines().collect();
    assert_eq!(answers.len(), 3, "{out}\n{err}");
    assert!(out.contains(" of 6 bytes seq "), "{out}");
    assert!(out.contains(" of 7 bytes seq "), "{out}");
    assert!(out.contains("message 0 of 1 bytes seq "), "{out}");
    // The prototype's session gets one websocket frame a message (the
    // client prints frames as they come, so the two run together).
    let (code, out, err) = client(&["--linger", "6", &url], "hello\nworld!\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("message ").count(), 2, "{out}\n{err}");
}

/// `workdir: contract`: the contract starts in the node directory (the
/// prototype's layout), `binargs` relative to it; reads are refused with
/// the reason, as their copy of the state has no such directory around it.
#[test]
fn the_contract_can_start_in_its_contract_directory() {
    let base = base_port() + 4_000;
    let echo = std::fs::canonicalize(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/contracts/echo.py"),
    )
    .unwrap();
    let root = std::env::temp_dir().join(format!("hp-client-hp-workdir-{}", std::process::id()));
    // echo.py by a path relative to the node directory `root/node-0`.
    let up = "../".repeat(root.join("node-0").components().count() - 1);
    let relative = format!("{up}{}", echo.display().to_string().trim_start_matches('/'));
    let python = PathBuf::from("/usr/bin/env");
    let _net = cluster::start_with("client-hp-workdir", 1, base, &python, |cfg| {
        cfg["workdir"] = "contract".into();
        cfg["binargs"] = format!("python3 {relative}").into();
    });
    let url = user_port(base);
    let (code, out, err) = trusting_node_0(&url, "hello\n/read q\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("6 bytes sha256"), "{out}\n{err}");
    assert!(
        err.contains("failed: this node does not run read requests"),
        "{err}"
    );
    // echo.py keeps its count in `count` of its working directory.
    let dir = root.join("node-0");
    assert_eq!(std::fs::read_to_string(dir.join("count")).unwrap(), "1");
    assert!(!dir.join("state/count").exists());
}
