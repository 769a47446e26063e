//! The `hotpocket` binary's commands and their errors.
#![cfg(feature = "runtime")]

use std::process::Command;

fn hotpocket(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hotpocket"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn keygen_prints_a_usable_key_pair() {
    let (code, out, _) = hotpocket(&["keygen"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let key = hotpocket_node::real::config::parse_secret(v["seckey"].as_str().unwrap()).unwrap();
    assert_eq!(key.public().to_hex(), v["pubkey"].as_str().unwrap());
}

fn echo_contract() -> String {
    format!(
        "{}/../fixtures/contracts/echo.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A fresh, absent directory under the temp dir for test `tag`.
fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hp-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn new_writes_a_node_and_run_names_a_bad_field() {
    let dir = std::env::temp_dir().join(format!("hp-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let contract = format!(
        "{}/../fixtures/contracts/echo.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let d = dir.to_str().unwrap();
    let (code, out, err) = hotpocket(&["new", d, "--contract", &contract, "--flag"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hotpocket run"), "{out}");
    let cfg = hotpocket_node::real::config::Config::load(&dir).unwrap();
    assert_eq!(cfg.cfg.binargs, "--flag");
    // A second `new` refuses to overwrite.
    let (code, _, err) = hotpocket(&["new", d, "--contract", &contract]);
    assert_eq!(code, 1);
    assert!(err.contains("already holds a node"), "{err}");
    // A bad field stops `run` with the field's name, before anything starts.
    let path = dir.join("cfg/hp.cfg");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"roundtime\": 1000", "\"roundtime\": 3"),
    )
    .unwrap();
    let (code, _, err) = hotpocket(&["run", d]);
    assert_eq!(code, 1);
    assert!(err.contains("field `roundtime`"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cluster_refuses_flags_that_an_existing_cluster_would_ignore() {
    use hotpocket_node::cli::cluster::{prepare, Plan};
    let dir = scratch("cluster");
    let d = dir.to_str().unwrap();
    let echo = std::fs::canonicalize(echo_contract()).unwrap();
    let plan = Plan {
        nodes: 3,
        dir: dir.clone(),
        contract: echo.clone(),
        roundtime: 1000,
        peerport: 22860,
        pubport: 8080,
    };
    let mut seed = 0u8;
    prepare(&plan, || {
        seed += 1;
        hotpocket_node::crypto::Keypair::from_seed([seed; 32])
    })
    .unwrap();
    let other = std::fs::canonicalize(format!(
        "{}/../fixtures/contracts/upper.sh",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let o = other.to_str().unwrap();
    let (code, out, err) = hotpocket(&[
        "cluster",
        "--dir",
        d,
        "--nodes",
        "5",
        "--contract",
        o,
        "--roundtime",
        "500",
        "--peerport",
        "22860",
        "--pubport",
        "9000",
    ]);
    assert_eq!(code, 1, "{out}");
    for part in [
        "--nodes 5 (it has 3)",
        &format!("--contract {o} (it runs {})", echo.display()),
        "--roundtime 500 (it uses 1000)",
        "--pubport 9000 (node 0 uses 8080)",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    // A flag that agrees with the cluster is no clash.
    assert!(!err.contains("--peerport"), "{err}");
    assert!(!dir.join("node-0/node.log").exists(), "no node started");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cause_is_printed_once() {
    // Port 1 on loopback: nothing listens there.
    let (code, _, err) = hotpocket(&["client", "ws://127.0.0.1:1"]);
    assert_eq!(code, 1);
    let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED).to_string();
    assert_eq!(err.matches(&refused).count(), 1, "{err}");
}

#[test]
fn run_without_a_node_says_which_file_is_missing() {
    let (code, _, err) = hotpocket(&["run", "/no/such/node"]);
    assert_eq!(code, 1);
    assert!(err.contains("/no/such/node/cfg/hp.cfg"), "{err}");
}
