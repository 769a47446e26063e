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

/// Rewrites one `"field": value` line of DIR's hp.cfg.
fn edit_cfg(dir: &std::path::Path, from: &str, to: &str) {
    let path = dir.join("cfg/hp.cfg");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from} not in {text}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

#[test]
fn new_writes_a_node_and_run_names_a_bad_field() {
    let dir = scratch("new");
    let contract = echo_contract();
    let d = dir.to_str().unwrap();
    let (code, out, err) = hotpocket(&["new", d, "--contract", &contract, "--", "--flag", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hotpocket run"), "{out}");
    let cfg = hotpocket_node::real::config::Config::load(&dir).unwrap();
    assert_eq!(cfg.cfg.binargs, "--flag 1");
    // With a certificate for users' wss that loads.
    let tls = hotpocket_node::real::tls::acceptor(&dir).unwrap();
    assert!(tls.is_some(), "no certificate made");
    // A second `new` refuses to overwrite.
    let (code, _, err) = hotpocket(&["new", d, "--contract", &contract]);
    assert_eq!(code, 1);
    assert!(err.contains("already holds a node"), "{err}");
    // A bad field stops `run` with the field's name, before anything starts.
    edit_cfg(&dir, "\"roundtime\": 1000", "\"roundtime\": 3");
    let (code, _, err) = hotpocket(&["run", d]);
    assert_eq!(code, 1);
    assert!(err.contains("field `roundtime`"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flags_after_the_contract_are_flags_and_its_arguments_follow_a_double_dash() {
    let dir = scratch("flags");
    let d = dir.to_str().unwrap();
    let contract = echo_contract();
    let (code, _, err) = hotpocket(&[
        "new",
        d,
        "--contract",
        &contract,
        "--peerport",
        "27110",
        "--pubport",
        "9712",
    ]);
    assert_eq!(code, 0, "{err}");
    let cfg = hotpocket_node::real::config::Config::load(&dir)
        .unwrap()
        .cfg;
    assert_eq!((cfg.peerport, cfg.pubport), (27110, 9712));
    assert_eq!(cfg.binargs, "");
    // The key is the owner's alone, from the moment the file exists.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("cfg/hp.cfg"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let _ = std::fs::remove_dir_all(&dir);

    // An unknown flag is an error that points at `--`, not a contract argument.
    let (code, _, err) = hotpocket(&["new", d, "--contract", &contract, "--verbose"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("'--verbose'") && err.contains("-- --verbose"),
        "{err}"
    );
    assert!(!dir.exists());
    // Arguments holding whitespace would be split apart at run time.
    let (code, _, err) = hotpocket(&["new", d, "--contract", &contract, "--", "a b"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("\"a b\" is empty or holds whitespace"),
        "{err}"
    );
    assert!(!dir.exists());
    let (code, _, err) = hotpocket(&["new", d, "--contract", &contract, "--", ""]);
    assert_eq!(code, 1);
    assert!(err.contains("\"\" is empty"), "{err}");
    assert!(!dir.exists());
}

#[test]
fn a_contract_that_cannot_run_is_refused_with_its_path() {
    let dir = scratch("binary");
    let d = dir.to_str().unwrap();
    let contract = dir.with_extension("py");
    std::fs::write(&contract, "#!/bin/sh\n").unwrap();
    let c = contract.to_str().unwrap();
    let (code, _, err) = hotpocket(&["new", d, "--contract", c]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{c} is not executable")), "{err}");
    assert!(!dir.exists());

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&contract, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, _, err) = hotpocket(&["new", d, "--contract", c]);
    assert_eq!(code, 0, "{err}");
    // Gone after `new`: `run` stops at load, naming it, before any ledger.
    std::fs::remove_file(&contract).unwrap();
    let (code, _, err) = hotpocket(&["run", d]);
    assert_eq!(code, 1);
    assert!(err.contains("field `binary`"), "{err}");
    assert!(err.contains(&format!("{c} does not exist")), "{err}");
    assert!(!dir.join("ledger.sqlite").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn thresholds_that_drop_are_refused_by_name() {
    let dir = scratch("thresholds");
    let d = dir.to_str().unwrap();
    let (code, _, err) = hotpocket(&["new", d, "--contract", &echo_contract()]);
    assert_eq!(code, 0, "{err}");
    let cfg = hotpocket_node::real::config::Config::read(&dir).unwrap();
    let mut bad = cfg.clone();
    bad.stage_thresholds = [90, 65, 10];
    bad.save(&dir).unwrap();
    let (code, _, err) = hotpocket(&["run", d]);
    assert_eq!(code, 1);
    assert!(err.contains("field `stage_thresholds`"), "{err}");
    assert!(err.contains("[90, 65, 10]"), "{err}");
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
        metrics: None,
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

#[test]
fn json_logs_are_one_object_a_line() {
    use std::io::{BufRead, BufReader};
    let dir = scratch("json");
    let d = dir.to_str().unwrap();
    let port = 6_000 + (std::process::id() % 500) as u16 * 4;
    let (peer, user) = (port.to_string(), (port + 1).to_string());
    let args = [
        "new",
        d,
        "--contract",
        &echo_contract(),
        "--peerport",
        &peer,
        "--pubport",
        &user,
    ];
    let (code, _, err) = hotpocket(&args);
    assert_eq!(code, 0, "{err}");
    let mut node = Command::new(env!("CARGO_BIN_EXE_hotpocket"))
        .args(["run", d, "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = node.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(30)) {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        let listening = v["fields"]["message"] == "node listening";
        seen.push(line);
        if listening {
            break;
        }
    }
    let _ = node.kill();
    let _ = node.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let last: serde_json::Value =
        serde_json::from_str(seen.last().map_or("{}", String::as_str)).unwrap();
    assert_eq!(last["fields"]["message"], "node listening", "{seen:#?}");
    // Fields stay fields: the node's key is one, not text in the message.
    assert_eq!(
        last["fields"]["key"].as_str().map(str::len),
        Some(64),
        "{last}"
    );
}
