//! Real `hotpocket run` processes on loopback, for the end-to-end tests:
//! started from `hotpocket cluster`'s own layout, killed (and their
//! directory removed unless `HP_E2E_KEEP` is set) when dropped.

// Each test file uses its own part of this.
#![allow(dead_code)]

pub use hotpocket_node::cli::cluster::node_dir;
use hotpocket_node::cli::cluster::{prepare, Plan};
use hotpocket_node::crypto::Keypair;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub root: PathBuf,
    pub children: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var_os("HP_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Node `i`'s key: the same in every test, so logs read alike.
pub fn node_key(i: usize) -> Keypair {
    Keypair::from_seed([i as u8 + 1; 32])
}

/// Starts `nodes` nodes under a fresh `hp-<tag>-<pid>` directory, peers
/// on `base..`, users on `base + 5..`, running `contract` with `binargs`
/// (every node the same, as they must be). `HP_E2E_LOG` sets their log
/// level (info by default); each logs to `node.log` in its directory.
pub fn start(tag: &str, nodes: usize, base: u16, contract: &Path, binargs: &str) -> Cluster {
    start_with(tag, nodes, base, contract, |cfg| {
        if !binargs.is_empty() {
            cfg["binargs"] = binargs.into();
        }
    })
}

/// As [`start`], each node's hp.cfg changed by `edit` first.
pub fn start_with(
    tag: &str,
    nodes: usize,
    base: u16,
    contract: &Path,
    edit: impl Fn(&mut serde_json::Value),
) -> Cluster {
    let root = std::env::temp_dir().join(format!("hp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let plan = Plan {
        nodes,
        dir: root.clone(),
        contract: std::fs::canonicalize(contract).unwrap(),
        roundtime: 1000,
        peerport: base,
        pubport: base + 5,
        metrics: None,
    };
    let mut n = 0;
    prepare(&plan, || {
        n += 1;
        node_key(n - 1)
    })
    .unwrap();
    let children = (0..nodes)
        .map(|i| {
            let dir = node_dir(&root, i);
            let cfg_path = dir.join("cfg/hp.cfg");
            let mut cfg: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
            edit(&mut cfg);
            std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
            spawn(&dir)
        })
        .collect();
    Cluster { root, children }
}

/// Starts `hotpocket run` on the node directory `dir` (again, after a
/// kill), appending to its `node.log`.
pub fn spawn(dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_hotpocket"))
        .arg("run")
        .arg(dir)
        .env(
            "RUST_LOG",
            std::env::var("HP_E2E_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// (seq, hash) of every ledger in a node's SQLite file.
pub fn ledger(dir: &Path) -> Vec<(i64, String)> {
    column(dir, "hash")
}

/// (seq, beacon) of every ledger in a node's SQLite file: the `beacon`
/// column's JSON (`rand`, `revealed`, `absent`, `fraud`).
pub fn beacons(dir: &Path) -> Vec<(i64, serde_json::Value)> {
    column(dir, "beacon")
        .into_iter()
        .map(|(seq, text)| (seq, serde_json::from_str(&text).unwrap()))
        .collect()
}

/// (seq, a text column) of every ledger in a node's SQLite file; empty
/// while the file or its table is not there yet.
fn column(dir: &Path, name: &str) -> Vec<(i64, String)> {
    let db = rusqlite::Connection::open_with_flags(
        dir.join("ledger.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    );
    let Ok(db) = db else { return vec![] };
    let Ok(mut q) = db.prepare(&format!("SELECT seq, {name} FROM ledgers ORDER BY seq")) else {
        return vec![];
    };
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// The highest ledger seq in a node's SQLite file (0 before any).
pub fn head(dir: &Path) -> i64 {
    ledger(dir).last().map_or(0, |l| l.0)
}

/// A base port with `n` free loopback ports from it, at or above `lo`:
/// the guess is spread by pid (tests in other processes pick other
/// blocks), then checked by binding.
pub fn free_block(lo: u16, n: u16) -> u16 {
    let pid = std::process::id() as usize;
    for attempt in 0..200 {
        let base = lo + ((pid + attempt * 7) % 400) as u16 * 10;
        if (base..base + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no block of {n} free loopback ports from {lo}");
}

pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
