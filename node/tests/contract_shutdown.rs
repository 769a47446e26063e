//! A `hotpocket run` node stopped with SIGTERM while its contract runs
//! takes the contract with it: the contract, a child it forked, and one
//! that left its process group and session.
#![cfg(feature = "runtime")]
// Real processes on real time.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Generous bounds for a loaded machine; the test passes as soon as each
/// condition holds, so these only decide how long a failure takes.
const START: Duration = Duration::from_secs(90);
const STOP: Duration = Duration::from_secs(30);

/// The node and what its contract wrote down; dropping it kills whatever
/// is left, so a failed assertion leaves nothing running.
struct Node {
    root: PathBuf,
    child: Child,
}

impl Node {
    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.root.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("node.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.pids() {
            if alive(pid) {
                // SAFETY: signalling a process checked to be one the
                // contract left (pids are not reused while it lives).
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if std::env::var_os("HP_SHUTDOWN_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Whether `pid` is one of the contract's processes and not dead: a
/// zombie counts as dead, as nothing of it runs (once the node is gone,
/// reaping it is up to whoever it was reparented to).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let ours = ["(sleep)", "(detach.sh)", "(sh)"]
        .iter()
        .any(|c| stat.contains(c));
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    ours && !matches!(state, Some("Z" | "X"))
}

/// Two free loopback ports (free when asked; a clash fails the start).
fn ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

fn hotpocket() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hotpocket"));
    c.env("RUST_LOG", "info");
    c
}

fn wait_for(what: &str, timeout: Duration, node: &Node, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}; node log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A one-node network running `detach.sh stay`, its time limit far off,
/// so only the node's shutdown can end the run.
fn start() -> Node {
    let root = std::env::temp_dir().join(format!("hp-shutdown-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let dir = root.join("node");
    let contract =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/contracts/detach.sh");
    let (peer, user) = ports();
    let out = hotpocket()
        .arg("new")
        .arg(&dir)
        .args(["--peerport", &peer.to_string()])
        .args(["--pubport", &user.to_string()])
        .arg("--contract")
        .arg(&contract)
        .arg("--")
        .arg("stay")
        .arg(root.join("pids"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    set_time_limit(&dir, 600_000);
    let log = File::create(root.join("node.log")).unwrap();
    let child = hotpocket()
        .arg("run")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Node { root, child }
}

fn set_time_limit(dir: &Path, ms: u64) {
    let path = dir.join("cfg/hp.cfg");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg["contract_time_limit_ms"] = ms.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
}

#[test]
fn sigterm_during_a_run_leaves_no_contract_process_alive() {
    let mut node = start();
    wait_for("the contract's processes", START, &node, || {
        node.pids().len() >= 3
    });
    let pids = node.pids();
    // The run is in progress: all three are there.
    assert!(pids.iter().all(|&p| alive(p)), "{pids:?}");
    // SAFETY: signalling our own child, which has not been reaped yet.
    unsafe {
        libc::kill(node.child.id() as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < STOP,
            "the node did not stop:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = node.log();
    assert!(status.success(), "node exited with {status}:\n{log}");
    assert!(log.contains("node shut down cleanly"), "{log}");
    // The node is gone; nothing it ran may be left running. (With the old
    // host the sleepers lived on, reparented to init.)
    wait_for("the contract's processes to die", STOP, &node, || {
        !pids.iter().any(|&p| alive(p))
    });
}
