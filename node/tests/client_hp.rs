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
