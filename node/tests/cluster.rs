//! `hotpocket cluster` as a supervisor sees it: stopped with a signal sent to
//! the cluster process alone (not its process group, as Ctrl-C would), it
//! takes its nodes with it: SIGTERM stops them cleanly, and SIGKILL, which
//! the cluster cannot catch, still stops them through their parent-death
//! signal. A node that does not stop (here: stopped by SIGSTOP) is killed
//! after the grace period, so the cluster still ends.
#![cfg(feature = "runtime")]
// Real processes on real time.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use hotpocket_node::cli::cluster::node_dir;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const NODES: usize = 3;
/// Generous bounds for a loaded machine; the tests pass as soon as the
/// condition holds, so these only decide how long a failure takes.
const START: Duration = Duration::from_secs(90);
const STOP: Duration = Duration::from_secs(30);

/// A running `hotpocket cluster`; dropping it kills whatever of it is left,
/// so a failed assertion leaves no process holding ports.
struct Cluster {
    root: PathBuf,
    child: Child,
    nodes: Vec<u32>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (i, &pid) in self.nodes.iter().enumerate() {
            // Only if the pid still runs our node: it may have been reused.
            if running_node(pid, &node_dir(&self.root, i)) {
                // SAFETY: signalling a process we checked is one we started.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
        if std::env::var_os("HP_CLUSTER_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

impl Cluster {
    fn output(&self) -> String {
        std::fs::read_to_string(self.root.join("cluster.log")).unwrap_or_default()
    }

    fn node_log(&self, i: usize) -> String {
        std::fs::read_to_string(node_dir(&self.root, i).join("node.log")).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: signalling our own child, which has not been reaped yet,
        // so its pid cannot have been reused.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    }

    fn wait_exit(&mut self) -> ExitStatus {
        poll(STOP, || match self.child.try_wait().unwrap() {
            Some(status) => Ok(status),
            None => Err(format!(
                "the cluster is still running {STOP:?} after the signal; its output:\n{}",
                std::fs::read_to_string(self.root.join("cluster.log")).unwrap_or_default()
            )),
        })
    }

    fn wait_nodes_gone(&self) {
        poll(STOP, || {
            let left: Vec<u32> = (0..NODES)
                .filter(|&i| running_node(self.nodes[i], &node_dir(&self.root, i)))
                .map(|i| self.nodes[i])
                .collect();
            match left.is_empty() {
                true => Ok(()),
                false => Err(format!(
                    "nodes {left:?} still running {STOP:?} after the cluster exited"
                )),
            }
        })
    }
}

/// Calls `step` every 100 ms until it gives a value; past `limit`, fails
/// with what it said was still missing.
fn poll<T>(limit: Duration, mut step: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match step() {
            Ok(v) => return v,
            Err(why) => assert!(Instant::now() < deadline, "{why}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A base port with `2 * NODES` free ports from it, for the nodes' peer and
/// user ports. The guess is spread by pid and `salt` (one per test, so tests
/// running side by side never pick the same block), then checked by binding.
fn free_base(salt: usize) -> u16 {
    let pid = std::process::id() as usize;
    for attempt in 0..200 {
        let block = (pid * 3 + salt + attempt * 3) % 1000;
        let base = 40_000 + block as u16 * 20;
        let free =
            (base..base + 2 * NODES as u16).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no block of {} free loopback ports found", 2 * NODES);
}

/// Whether `pid` is a live (not zombie) `hotpocket run DIR` for `dir`.
fn running_node(pid: u32, dir: &Path) -> bool {
    match stat(pid) {
        Some((state, _)) if state != 'Z' => cmdline(pid).is_some_and(|c| runs(&c, dir)),
        _ => false,
    }
}

/// State and parent pid from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces and parentheses.
    let mut rest = s[s.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

fn runs(cmdline: &[String], dir: &Path) -> bool {
    cmdline.len() == 3 && cmdline[1] == "run" && Path::new(&cmdline[2]) == dir
}

/// The children of `parent` running node `i`'s directory, by /proc scan.
fn children_running(parent: u32, dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches!(stat(pid), Some((s, pp)) if pp == parent && s != 'Z'))
        .filter(|&pid| cmdline(pid).is_some_and(|c| runs(&c, dir)))
        .collect()
}

/// Starts `hotpocket cluster` and waits until every node has said it is
/// listening, which it does after it has installed its stop-signal handlers.
fn start(name: &str, salt: usize, extra: &[&str]) -> Cluster {
    let root = std::env::temp_dir().join(format!("hp-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let contract = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/contracts/echo.py");
    let base = free_base(salt);
    let out = File::create(root.join("cluster.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hotpocket"))
        .arg("cluster")
        .args(["--nodes", &NODES.to_string()])
        .arg("--dir")
        .arg(&root)
        .arg("--contract")
        .arg(&contract)
        .args(["--peerport", &base.to_string()])
        .args(["--pubport", &(base + NODES as u16).to_string()])
        .args(extra)
        // The readiness line below is logged at info.
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut cluster = Cluster {
        root,
        child,
        nodes: Vec::new(),
    };
    let pid = cluster.child.id();
    let mut found: Vec<Option<u32>> = vec![None; NODES];
    poll(START, || {
        if let Some(status) = cluster.child.try_wait().unwrap() {
            panic!(
                "the cluster exited ({status}) while starting; its output:\n{}",
                cluster.output()
            );
        }
        for (i, slot) in found.iter_mut().enumerate() {
            if slot.is_none() {
                *slot = children_running(pid, &node_dir(&cluster.root, i))
                    .first()
                    .copied();
            }
        }
        // Recorded as soon as seen, so Drop cleans up even a partial start.
        cluster.nodes = found.iter().flatten().copied().collect();
        let all = found.iter().all(Option::is_some);
        if all && (0..NODES).all(|i| cluster.node_log(i).contains("node listening")) {
            return Ok(());
        }
        Err(format!(
            "nodes not up after {START:?}; found {found:?}; cluster output:\n{}",
            cluster.output()
        ))
    });
    cluster
}

#[test]
fn sigterm_to_the_cluster_alone_stops_its_nodes_cleanly() {
    let mut cluster = start("term", 0, &[]);
    cluster.signal(libc::SIGTERM);
    let status = cluster.wait_exit();
    let out = cluster.output();
    assert!(status.success(), "cluster exited with {status}:\n{out}");
    assert!(out.contains("SIGTERM: stopping the nodes"), "{out}");
    assert!(out.contains("cluster stopped"), "{out}");
    cluster.wait_nodes_gone();
    for i in 0..NODES {
        let log = cluster.node_log(i);
        assert!(
            log.contains("node shut down cleanly"),
            "node {i} did not shut down cleanly:\n{log}"
        );
    }
}

#[test]
fn sigkill_to_the_cluster_alone_still_stops_its_nodes() {
    let mut cluster = start("kill", 1, &[]);
    cluster.signal(libc::SIGKILL);
    cluster.wait_exit();
    cluster.wait_nodes_gone();
    for i in 0..NODES {
        let log = cluster.node_log(i);
        // The parent-death signal is SIGTERM, so this too is a clean stop.
        assert!(
            log.contains("node shut down cleanly"),
            "node {i} did not shut down cleanly:\n{log}"
        );
    }
}

#[test]
fn a_node_that_will_not_stop_is_killed_after_the_grace_period() {
    let mut cluster = start("stuck", 2, &["--stop-timeout", "5"]);
    let stuck = cluster.nodes[1];
    // SAFETY: signalling a node of this cluster, checked to be running.
    assert!(running_node(stuck, &node_dir(&cluster.root, 1)));
    assert_eq!(unsafe { libc::kill(stuck as i32, libc::SIGSTOP) }, 0);
    cluster.signal(libc::SIGTERM);
    let status = cluster.wait_exit();
    let out = cluster.output();
    assert!(status.success(), "cluster exited with {status}:\n{out}");
    assert!(
        out.contains("node 1 did not stop within 5s: killed"),
        "{out}"
    );
    assert!(out.contains("cluster stopped"), "{out}");
    cluster.wait_nodes_gone();
    for i in [0, 2] {
        let log = cluster.node_log(i);
        assert!(
            log.contains("node shut down cleanly"),
            "node {i} did not shut down cleanly:\n{log}"
        );
    }
    assert!(!cluster.node_log(1).contains("node shut down cleanly"));
}
